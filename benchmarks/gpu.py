"""The GPU check in one run (under 9 minutes on one GPU): the CUDA tests, then generation speed on
the GPU beside the CPU, with the shipped checkpoints.

    python benchmarks/gpu.py                       # --device cuda where there is one
    python benchmarks/gpu.py --device cpu --quick  # tiny sizes: checks the script itself on a CPU
    python benchmarks/gpu.py --json gpu.json       # also write the figures as JSON

Measured, each on --device and on the CPU (step-by-step generation on one CPU thread, as the CLI
does by default; --cpu-threads to change):
- tests/test_cuda.py (ARCLI_TEST_DEVICE=--device): passed / failed / skipped;
- WaveNet (`wavenet`): samples generated per second at batch 1, 16 and 256 (sampling, as `arcli sample`);
- PixelCNN (`pixelcnn`): completions of the bottom half of 16 images per second (as `arcli complete-image`
  without class inference), on Fashion-MNIST test images where present, else on a synthetic image;
- `transformer` and `rnn-attention`: beam-search (beam 5) translations per second (as `arcli beam-translate`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arcli.decoding import DecodingOptions, Known, generate  # noqa: E402
from arcli.outputs import atomic_path  # noqa: E402
from arcli.registry import get_family  # noqa: E402
from arcli.tasks.translation import translate_lines  # noqa: E402
from arcli.text.tokenizers import tokenizer_from_json  # noqa: E402

FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
SENTENCES = [
    "In the beginning, God created the heavens and the earth.",
    "The earth was formless and empty.",
    "God said, let there be light, and there was light.",
    "And the evening and the morning were the first day.",
    "The man gave names to all the livestock and to the birds of the sky.",
    "They heard the voice of the Lord walking in the garden in the cool of the day.",
    "Now the serpent was more subtle than any animal of the field.",
    "Then the Lord said to Noah, come with all of your household into the ship.",
]


def timed(device: torch.device, work) -> float:
    """Seconds that `work()` takes on `device` (waiting for the GPU to finish)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def wavenet_rate(device: torch.device, batch: int, length: int) -> float:
    """Samples generated per second (all rows counted), sampling from the shipped WaveNet."""
    model, _ = get_family("wavenet").load(None, device)
    condition = torch.zeros(batch, dtype=torch.long, device=device) if model.config.num_speakers else None
    run = lambda steps: generate(model, "sample", max_length=steps, batch_size=batch, condition=condition, seed=0)  # noqa: E731
    with torch.inference_mode():
        run(8)  # warm-up: kernels, caches
        seconds = timed(device, lambda: run(length))
    return batch * length / seconds


def pixelcnn_rate(device: torch.device, images: int) -> tuple[float, str]:
    """Completions of the bottom half per second, `images` at once."""
    model, stored = get_family("pixelcnn").load(None, device)
    c = model.config
    length = c.height * c.width * c.channels
    first_hidden = (c.height // 2) * c.width * c.channels
    if FASHION_TEST.exists() and (c.height, c.width, c.channels) == (28, 28, 1):
        from arcli.image import pixels_to_tokens
        from arcli.image.io import load_images

        pixels = load_images([FASHION_TEST], (c.height, c.width, c.channels)).pixels[:images]
        tokens, source = pixels_to_tokens(pixels, c.levels), "Fashion-MNIST test images"
    else:  # a bright square on black, in every row
        grid = torch.zeros(c.height, c.width, c.channels, dtype=torch.long)
        grid[c.height // 4 : 3 * c.height // 4, c.width // 4 : 3 * c.width // 4] = c.levels - 1
        tokens, source = grid.reshape(1, length).expand(images, -1).clone(), "a synthetic image"
    mask = torch.zeros(images, length, dtype=torch.bool)
    mask[:, :first_hidden] = True
    labels = torch.zeros(images, dtype=torch.long, device=device) if c.num_classes else None
    known = Known(tokens.to(device), mask.to(device))
    with torch.inference_mode():
        generate(model, "sample", max_length=first_hidden + 2, batch_size=images, condition=labels,
                 known=Known(known.values[:, : first_hidden + 2], known.mask[:, : first_hidden + 2]), seed=0)  # warm-up
        seconds = timed(device, lambda: generate(model, "sample", max_length=length, batch_size=images, condition=labels,
                                                 known=known, seed=0))
    return images / seconds, source


def translation_rate(name: str, device: torch.device, sentences: int) -> float:
    """Sentences translated per second with beam 5, batches of 32, as beam-translate does."""
    model, stored = get_family(name).load(None, device)
    tokenizer = tokenizer_from_json(stored.tokenizer)
    lines = (SENTENCES * (sentences // len(SENTENCES) + 1))[:sentences]
    run = lambda some: translate_lines(model, tokenizer, some, search=DecodingOptions(beam_size=5).build("beam"), batch_size=32)  # noqa: E731
    with torch.inference_mode():
        run(lines[:2])  # warm-up
        seconds = timed(device, lambda: run(lines))
    return sentences / seconds


def cuda_tests(device: torch.device) -> str:
    env = {**os.environ, "ARCLI_TEST_DEVICE": device.type}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_cuda.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    if done.returncode not in (0, 5):
        print(done.stdout[-4000:], file=sys.stderr)
    return f"{summary} ({time.perf_counter() - started:.0f} s wall)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs (figures are rough)")
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads for the CPU figures (the CLI's default is 1)")
    parser.add_argument("--no-tests", action="store_true", help="skip tests/test_cuda.py")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu.py: --device cuda, but this machine has no CUDA device")
    devices = [device] if device.type == "cpu" else [device, torch.device("cpu")]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    print(f"arcli GPU check on {where}, torch {torch.__version__}; CPU figures on {args.cpu_threads} thread(s)"
          + (" (--quick: tiny sizes)" if args.quick else ""))
    started = time.perf_counter()
    results: dict[str, dict[str, float]] = {}
    if not args.no_tests:
        print(f"tests/test_cuda.py on {device.type}: {cuda_tests(device)}", flush=True)

    # Lengths per device: enough steps to time on the GPU, fewer on the CPU (a rate is a rate).
    wavenet_length = {"cuda": 2000, "cpu": 300} if not args.quick else {"cuda": 100, "cpu": 40}
    translations = {"cuda": 256, "cpu": 32} if not args.quick else {"cuda": 16, "cpu": 4}
    images = 16 if not args.quick else 2
    for dev in devices:
        torch.set_num_threads(args.cpu_threads if dev.type == "cpu" else torch.get_num_threads())
        for batch in (1, 16, 256):
            length = wavenet_length[dev.type] if batch < 256 or not args.quick else 20
            key = f"wavenet samples/s, batch {batch}"
            results.setdefault(key, {})[dev.type] = wavenet_rate(dev, batch, length)
            print(f"  {key} on {dev.type}: {results[key][dev.type]:,.0f}", flush=True)
        rate, source = pixelcnn_rate(dev, images)
        key = f"pixelcnn completions/s ({images} at once, bottom half, {source})"
        results.setdefault(key, {})[dev.type] = rate
        print(f"  {key} on {dev.type}: {rate:.2f}", flush=True)
        for name in ("transformer", "rnn-attention"):
            key = f"{name} beam-5 sentences/s"
            results.setdefault(key, {})[dev.type] = translation_rate(name, dev, translations[dev.type])
            print(f"  {key} on {dev.type}: {results[key][dev.type]:.1f}", flush=True)

    width = max(len(k) for k in results)
    columns = [d.type for d in devices]
    print("\n" + f"{'measurement':<{width}}  " + "  ".join(f"{c:>12}" for c in columns) + ("       ratio" if len(columns) == 2 else ""))
    for key, figures in results.items():
        row = f"{key:<{width}}  " + "  ".join(f"{figures[c]:>12,.2f}" for c in columns)
        if len(columns) == 2:
            row += f"  {figures[columns[0]] / figures[columns[1]]:>9.1f}x"
        print(row)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with atomic_path(args.json) as temp:
            temp.write_text(json.dumps({"device": where, "torch": torch.__version__, "results": results}, indent=1))


if __name__ == "__main__":
    main()
