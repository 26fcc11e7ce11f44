"""The table of examples/text/: test bits per character of arcli's language models beside
general-purpose compressors on the same test text.

    python examples/text/table.py data/bible/test.en data/lm/tcn.safetensors data/lm/lstm.safetensors ...

A model's figure is exact: -log2 p(text) summed over the lines (each line's end-of-line token
stands for its newline) over the file's characters, newlines included, the same numbers that
`arcli score-likelihood NAME -c CHECKPOINT FILE` prints. A compressor's figure is its output's
size in bits over the same characters, at its strongest setting (xz -9e, bzip2 -9, zstd --ultra
-22, brotli -q 11 where installed). A compressor sees the whole file, lines included; a model
scores each line on its own.
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import math
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from arcli.checkpoint import read_checkpoint
from arcli.registry import get_family
from arcli.tasks.text import _score_lines, pad, token_logprobs
from arcli.text.tokenizers import tokenizer_from_json


def model_bits(path: Path, text: Path) -> tuple[str, float, int]:
    """(what the model is, total bits of `text` under it, parameters)."""
    stored = read_checkpoint(path)
    family = get_family(stored.model_name)
    model, _ = family.load(path, torch.device("cpu"))
    lines = _score_lines(text, tokenizer_from_json(stored.tokenizer))
    nats = 0.0
    with torch.inference_mode():
        for start in range(0, len(lines), 32):
            tokens, lengths = pad([line.tokens for line in lines[start : start + 32]])
            nats -= float(token_logprobs(model, tokens, lengths).sum())
    config = stored.config
    name = family.name + (f" ({config['cell']})" if "cell" in config else "")
    return name, nats / math.log(2), sum(p.numel() for p in model.parameters())


def compressor_bits(raw: bytes) -> dict[str, int]:
    sizes = {"xz -9e": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)), "bzip2 -9": len(bz2.compress(raw, 9))}
    for name, command in (("zstd --ultra -22", ["zstd", "--ultra", "-22", "-c", "-q"]), ("brotli -q 11", ["brotli", "-q", "11", "-c"])):
        if shutil.which(command[0]):
            sizes[name] = len(subprocess.run(command, input=raw, capture_output=True, check=True).stdout)
    return {name: 8 * size for name, size in sizes.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("text", type=Path, help="the test text (UTF-8, one line per verse)")
    parser.add_argument("checkpoints", type=Path, nargs="*", help="trained language models")
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = args.text.read_bytes()
    characters = len(raw.decode("utf-8")) + (0 if raw.endswith(b"\n") else 1)
    print(f"{args.text}: {characters} characters, {len(raw)} bytes\n")
    print("| model | parameters | training | held-out nats/token | test bits/char | test bits/byte |")
    print("|---|---|---|---|---|---|")
    for path in args.checkpoints:
        name, bits, parameters = model_bits(path, args.text)
        stored = read_checkpoint(path)
        options, valid = stored.training.get("options", {}), stored.metrics.get("valid_nll")
        budget = f"{options.get('steps')} x {options.get('batch_size')} lines, {stored.training.get('step_seconds', 0):.0f} s"
        held = "" if valid is None else f"{valid:.3f}"
        print(f"| {name} `{path.name}` | {parameters:,} | {budget} | {held} | {bits / characters:.3f} | {bits / len(raw):.3f} |")
    for name, bits in compressor_bits(raw).items():
        print(f"| {name} | | | | {bits / characters:.3f} | {bits / len(raw):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
