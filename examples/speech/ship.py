"""Write the float16 copy of a trained model (WaveNet, the vocoder, any family) that ships in checkpoints/ (half the file size).

    python examples/speech/ship.py TRAINED.safetensors checkpoints/wavenet-speech.safetensors [--force] [--temperature T]

Everything but the weights' precision is kept: config, data description, training provenance and
metrics. Score the copy afterwards (`arcli score-likelihood wavenet --checkpoint COPY VALID_DIR`):
float16 storage moved the held-out figure of the earlier shipped model by less than 1e-4 bits/sample.
"""

import argparse
import sys
from pathlib import Path

import torch

from arcli.checkpoint import read_checkpoint, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the trained checkpoint")
    parser.add_argument("out", type=Path, help="the float16 copy to write")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--temperature", type=float, help="store a default sampling temperature (audio models: used when "
                        "`arcli sample` gets no --temperature; say why in the model card)")
    args = parser.parse_args()
    if args.out.exists() and not args.force:
        sys.exit(f"error: {args.out} exists; add --force to replace it")
    stored = read_checkpoint(args.checkpoint)  # any family: wavenet, wavenet-vocoder ...
    data = dict(stored.data)
    if args.temperature is not None:
        if not 0 < args.temperature <= 10:
            sys.exit(f"error: --temperature must be in (0, 10], got {args.temperature:g}")
        data["temperature"] = args.temperature
    save_checkpoint(args.out, stored.model_name, stored.config, stored.tensors, data=data, tokenizer=stored.tokenizer,
                    training=stored.training, metrics=stored.metrics, dtype=torch.float16)
    print(f"wrote {args.out} (float16{'' if args.temperature is None else f', default temperature {args.temperature:g}'})")


if __name__ == "__main__":
    main()
