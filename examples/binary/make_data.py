"""Binarised Fashion-MNIST for the binary-image models (FVSBN, NADE, MADE, PixelCNN with levels=2).

    python examples/binary/make_data.py data/binary [--source /usr/share/datasets/fashion-mnist] [--seed 0] [--draws 1]

Reads the IDX files of Debian's `dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`)
and binarises them stochastically: a pixel is on with probability intensity / 255, drawn once with
a fixed seed (numpy's PCG64), so every run writes the same bits. Writes .npy arrays of 0/1 (uint8,
N x 28 x 28), which arcli reads as black-and-white images:

    train.npy   the first 55,000 training images       (--draws N: N independent binarisations of
                                                         them, stacked: a fixed stand-in for
                                                         re-binarising each epoch; the table uses 1)
    valid.npy   the last 5,000 training images          (held out during training)
    test.npy    the 10,000 test images                  (the table's test set), with labels beside:
    *-labels.npy
    test-png/0000.png .. 0007.png   the first 8 test images as black-and-white PNGs (for complete-image)

and prints the SHA-256 of test.npy (README.md records it).
"""

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from arcli.image.io import read_idx, write_png

TRAIN = 55_000  # the rest of the 60,000 training images are held out


def binarise(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 grey (N, H, W) -> uint8 0/1: on with probability value / 255."""
    return (rng.random(grey.shape) < grey / 255.0).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the .npy files to")
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"), help="the IDX files")
    parser.add_argument("--seed", type=int, default=0, help="seed of the binarisation")
    parser.add_argument("--draws", type=int, default=1, help="independent binarisations of the training images")
    args = parser.parse_args()
    if args.draws < 1:
        sys.exit("error: --draws must be >= 1")
    if not (args.source / "train-images-idx3-ubyte.gz").is_file():
        sys.exit(f"error: no Fashion-MNIST IDX files in {args.source}: apt-get install dataset-fashion-mnist, or pass --source")
    train = read_idx(args.source / "train-images-idx3-ubyte.gz")
    train_labels = read_idx(args.source / "train-labels-idx1-ubyte.gz")
    test = read_idx(args.source / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(args.source / "t10k-labels-idx1-ubyte.gz")

    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    arrays = {  # drawn in this order: test first, so its bits do not depend on --draws
        "test": binarise(test, rng),
        "valid": binarise(train[TRAIN:], rng),
        "train": np.concatenate([binarise(train[:TRAIN], rng) for _ in range(args.draws)]),
        "test-labels": test_labels.astype(np.uint8),
        "valid-labels": train_labels[TRAIN:].astype(np.uint8),
        "train-labels": np.tile(train_labels[:TRAIN], args.draws).astype(np.uint8),
    }
    for name, array in arrays.items():
        np.save(args.out / f"{name}.npy", array)
    (args.out / "test-png").mkdir(exist_ok=True)
    for i, image in enumerate(arrays["test"][:8]):
        write_png(args.out / "test-png" / f"{i:04d}.png", image[..., None] * np.uint8(255))
    digest = hashlib.sha256((args.out / "test.npy").read_bytes()).hexdigest()
    on = arrays["test"].mean()
    print(f"wrote {args.out}: train {len(arrays['train'])}, valid {len(arrays['valid'])}, test {len(arrays['test'])} images; "
          f"{on:.4f} of the test pixels on; sha256(test.npy) = {digest}")


if __name__ == "__main__":
    main()
