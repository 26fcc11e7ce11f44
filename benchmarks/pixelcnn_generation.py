"""Completing the bottom half of test images: naive recompute vs incremental steps, side by side.

    python benchmarks/pixelcnn_generation.py [--checkpoint FILE] [--images 16] [--threads 1]
        [--data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz]

Both paths sample the hidden half with the known top half forced, one token at a time:
- naive: for every hidden token, run the parallel `forward` over the whole image so far;
- incremental: the engine (`arcli.decoding.generate` with `known`) over the model's `step`, which
  only computes what changes.
"""

from __future__ import annotations

import argparse
import time

import torch

from arcli.decoding import Known, generate
from arcli.image import pixels_to_tokens
from arcli.image.io import load_images
from arcli.registry import get_family


def naive_completion(model, tokens: torch.Tensor, first_hidden: int, condition) -> torch.Tensor:
    """Sample tokens[first_hidden:] one at a time, recomputing `forward` over the image each time."""
    tokens = tokens.clone()
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for t in range(first_hidden, tokens.shape[1]):
            logits = model(tokens, condition)[:, t]  # (B, V)
            tokens[:, t] = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped pixelcnn checkpoint")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, stored = get_family("pixelcnn").load(args.checkpoint, torch.device("cpu"))
    config = model.config
    images = load_images([args.data], (config.height, config.width, config.channels))
    tokens = pixels_to_tokens(images.pixels[: args.images], config.levels)  # (B, T)
    batch, length = tokens.shape
    first_hidden = (config.height // 2) * config.width * config.channels
    labels = None
    if config.num_classes:  # the images' own classes, by the names stored in the checkpoint
        names = [str(name) for name in stored.data.get("classes") or []]
        labels = torch.tensor([names.index(label) for label in images.labels[: args.images]])
    print(f"{stored.path.name}: {config.height}x{config.width}x{config.channels}, hidden {config.hidden}, "
          f"{config.layers} layers; {batch} images, bottom {length - first_hidden} of {length} tokens hidden; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[:, :first_hidden] = True
    begin = time.perf_counter()
    rows = generate(model, "sample", max_length=length, batch_size=batch, condition=labels, known=Known(tokens, mask), seed=0)
    incremental = time.perf_counter() - begin
    assert all(r[0].tokens[:first_hidden] == tokens[i, :first_hidden].tolist() for i, r in enumerate(rows))

    begin = time.perf_counter()
    naive_completion(model, tokens, first_hidden, labels)
    naive = time.perf_counter() - begin

    print(f"{'naive (forward per token)':<34} {naive:8.2f} s")
    print(f"{'incremental (engine + step)':<34} {incremental:8.2f} s")
    print(f"{'speed-up':<34} {naive / incremental:8.1f} x")


if __name__ == "__main__":
    main()
