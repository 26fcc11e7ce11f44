"""How well does `complete-image` do on Fashion-MNIST test images? Two measurements.

    python examples/fashion/evaluate_completion.py [--checkpoint C] [--images 200] [--top-images 5] [-n 8]

1. Class from half an image: the bottom half hidden, the class of each of the first --images test
   images is inferred from its top half, p(c | top) ∝ p(known | c) under a uniform prior (exact: the
   known pixels come first in raster order), and the most probable class is compared with the label.
2. Masks that leave known pixels after the hole (--masks, default left, center, top): for the first
   --top-images images (true label given), the effective sample size of one round of max(4 n, 16)
   engine proposals (what complete-image did before), then what it does now (sequential Monte Carlo
   rounds until the ESS reaches n), how many of the n completions are distinct, and the mean
   log-likelihood of the known pixels after the hole under the completions, beside the original's
   (bits per known sub-pixel: lower is better).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from arcli.image import pixels_to_tokens
from arcli.image.io import load_images
from arcli.registry import get_family
from arcli.tasks import Decoding
from arcli.tasks.completion import Completer, mask_pixels, proposal_log_weights, token_nats

DATA = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--top-images", type=int, default=5)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--masks", nargs="+", default=["left", "center", "top"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    family = get_family("pixelcnn")
    model, checkpoint = family.load(args.checkpoint, torch.device("cpu"))  # None: the shipped checkpoint
    model.eval()
    config = model.config
    names = checkpoint.data.get("class_names") or [str(c) for c in range(config.num_classes)]
    images = load_images([args.data], (config.height, config.width, config.channels))
    tokens = pixels_to_tokens(images.pixels, config.levels).long()
    labels = torch.tensor([int(label) for label in images.labels])
    T = tokens.shape[1]

    # 1. class from the top half
    known = torch.arange(T) < T // 2
    count, classes = min(args.images, len(tokens)), config.num_classes
    started = time.perf_counter()
    log_known = torch.zeros(count, classes, dtype=torch.float64)
    with torch.inference_mode():
        for start in range(0, count, 50):
            batch = tokens[start : min(start + 50, count)] * known  # the hidden half zeroed: never seen
            for c in range(classes):
                nats = token_nats(model, batch, torch.full((len(batch),), c)).double()
                log_known[start : start + len(batch), c] = -(nats * known).sum(1)
    posterior = torch.softmax(log_known, 1)
    top2 = posterior.topk(2, 1).indices
    right = (top2[:, 0] == labels[:count]).double().mean().item()
    right2 = (top2 == labels[:count, None]).any(1).double().mean().item()
    confused: dict[tuple[int, int], int] = {}
    for truth, guess in zip(labels[:count].tolist(), top2[:, 0].tolist(), strict=True):
        if truth != guess:
            confused[(truth, guess)] = confused.get((truth, guess), 0) + 1
    print(f"class from the top half, {count} test images: accuracy {100 * right:.1f}% (top-2 {100 * right2:.1f}%), "
          f"mean posterior of the true class {posterior[torch.arange(count), labels[:count]].mean():.3f}; "
          f"{time.perf_counter() - started:.1f} s")
    worst = sorted(confused.items(), key=lambda kv: -kv[1])[:5]
    print("  most frequent confusions: " + ", ".join(f"{names[t]} -> {names[g]} x{k}" for (t, g), k in worst))

    # 2. masks with known pixels after the hole
    decoding = Decoding(strategy="sample", seed=args.seed)
    per_round = max(4 * args.n, 16)
    for mask in args.masks:
        hidden = torch.from_numpy(mask_pixels(mask, (config.height, config.width), args.seed).reshape(-1)).repeat_interleave(config.channels)
        known_after = ~hidden & (torch.arange(T) > int(hidden.nonzero()[0]))
        completer = Completer(model, decoding, args.seed, T, ~hidden, ~hidden & ~known_after, known_after, classes, names,
                              args.n, None, 1)
        after = known_after.sum().item()
        for index in range(min(args.top_images, len(tokens))):
            label = int(labels[index])
            values = tokens[index] * ~hidden
            started = time.perf_counter()
            one_round = completer._generate(index, values, [label], completer._sampler(index, 99, per_round))
            first = torch.tensor([h.tokens for h in one_round[0]])
            w = torch.softmax(proposal_log_weights(model, first, known_after, torch.tensor(label)), 0)
            ess_before = float(1 / (w**2).sum())
            before = time.perf_counter() - started
            started = time.perf_counter()
            chosen, report = completer.resampled(index, values, [label])
            original = proposal_log_weights(model, tokens[index][None], known_after, torch.tensor(label))[0]
            under = proposal_log_weights(model, chosen, known_after, torch.tensor(label))
            print(f"{mask} mask, image {index} ({names[label]}): one round of {per_round} engine proposals: ESS {ess_before:.1f} "
                  f"({before:.1f} s); now {report.line} ({time.perf_counter() - started:.1f} s), "
                  f"{len(set(map(tuple, chosen.tolist())))} distinct of {args.n}; known pixels after the hole: "
                  f"{-under.mean().item() / after / math.log(2):.3f} bits/dim under the completions (mean), "
                  f"{-original.item() / after / math.log(2):.3f} under the original")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
