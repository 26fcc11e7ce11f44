"""Generation cost of the binary-image models: each model's incremental `step` beside a naive
decoder that recomputes the whole forward pass for every pixel, for 16 images of 28x28, one thread.

    python benchmarks/binary_generation.py [--images 16]

FVSBN and NADE have true caches (running pre-activations: O(n) and O(H) per pixel). MADE is the
exception DESIGN.md allows: its step keeps only the first layer's pre-activations and recomputes the
later layers for the one pixel it predicts, so its cost per pixel grows with sum H_l H_{l-1}; the
naive line is what "recompute the network" would cost.
"""

import argparse
import time

import torch

from arcli.decoding import generate
from arcli.models.fvsbn import FVSBN, FVSBNConfig
from arcli.models.made import MADE, MADEConfig
from arcli.models.nade import NADE, NADEConfig


class Naive:
    """Decodes with one full forward pass per pixel over the image so far (unknown pixels 0)."""

    eos_id = None
    vocab_size = 2

    def __init__(self, model):
        self.model = model

    def start(self, batch_size, condition=None):
        return (torch.zeros(batch_size, self.model.sequence_length, dtype=torch.long), 0)

    @torch.inference_mode()
    def step(self, state, tokens):
        image, t = state
        if tokens is not None:
            image = image.clone()
            image[:, t - 1] = tokens
        return self.model(image)[:, t], (image, t + 1)

    def reorder(self, state, index):
        return (state[0][index], state[1])


def timed(model, images: int) -> tuple[float, list]:
    started = time.perf_counter()
    rows = generate(model, "sample", max_length=784, batch_size=images, seed=0)
    return time.perf_counter() - started, [r[0].tokens for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {
        "FVSBN": FVSBN(FVSBNConfig()),
        "NADE (H=500)": NADE(NADEConfig()),
        "MADE ([500])": MADE(MADEConfig()),
        "MADE ([500, 500])": MADE(MADEConfig(hidden=[500, 500])),
    }
    print(f"{args.images} images of 28x28, one thread; seconds for the whole batch")
    print(f"{'model':<20} {'step':>8} {'naive':>8}  same samples")
    for name, model in models.items():
        model.eval()
        fast, fast_tokens = timed(model, args.images)
        slow, slow_tokens = timed(Naive(model), args.images)
        print(f"{name:<20} {fast:8.2f} {slow:8.2f}  {fast_tokens == slow_tokens}")


if __name__ == "__main__":
    main()
