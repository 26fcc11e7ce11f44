"""Engine overhead: time per decoding step of `arcli.decoding.generate` around a trivial model,
beside the model's own step time, for greedy, sampling and beam 5 at batch 1 and 64.

    python benchmarks/engine_overhead.py [--steps 300] [--vocab 256] [--device cpu] [--threads 1]

Each figure is the best of `--repeats` runs, since shared machines are noisy.

The trivial model is one embedding lookup per step (logits = table[previous token]), so nearly all
of the time above its own step time is the engine's: log-softmax, the strategy, book-keeping.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from arcli.decoding import generate


class Lookup(nn.Module):
    """logits of the next token = a row of a fixed random table chosen by the previous token."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size, self.eos_id = vocab_size, None
        self.table = nn.Embedding(vocab_size + 1, vocab_size)  # row vocab_size = "no previous token"

    def start(self, batch_size, condition=None):
        return torch.full((batch_size,), self.vocab_size, device=self.table.weight.device)

    def step(self, state, tokens):
        previous = state if tokens is None else tokens
        return self.table(previous), previous

    def reorder(self, state, index):
        return state[index]


def best_of(repeats: int, measure, *args) -> float:
    return min(measure(*args) for _ in range(repeats))


def model_step_time(model: Lookup, rows: int, steps: int) -> float:
    """Seconds per step of the model alone, driven by a bare loop feeding argmax tokens."""
    with torch.inference_mode():
        state = model.start(rows)
        tokens = None
        begin = time.perf_counter()
        for _ in range(steps):
            logits, state = model.step(state, tokens)
            tokens = logits.argmax(-1)
        _sync(logits)
        return (time.perf_counter() - begin) / steps


def engine_step_time(model: Lookup, strategy: str, batch: int, steps: int) -> float:
    kwargs = {"beam_size": 5} if strategy == "beam" else {}
    generate(model, strategy, max_length=10, batch_size=batch, seed=0, **kwargs)  # warm up
    begin = time.perf_counter()
    generate(model, strategy, max_length=steps, batch_size=batch, seed=0, **kwargs)
    return (time.perf_counter() - begin) / steps


def _sync(tensor: torch.Tensor) -> None:
    if tensor.is_cuda:
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadiest for small steps)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Lookup(args.vocab).to(args.device).eval()
    print(f"device {args.device}, vocab {args.vocab}, {args.steps} steps, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'strategy':<8} {'batch':>5} {'rows':>5} {'model step':>12} {'engine step':>12} {'overhead':>10} {'ratio':>6}")
    for batch in (1, 64):
        for strategy in ("greedy", "sample", "beam"):
            rows = batch * (5 if strategy == "beam" else 1)
            alone = best_of(args.repeats, model_step_time, model, rows, args.steps)
            total = best_of(args.repeats, engine_step_time, model, strategy, batch, args.steps)
            print(
                f"{strategy:<8} {batch:>5} {rows:>5} {alone * 1e6:>10.1f}us {total * 1e6:>10.1f}us "
                f"{(total - alone) * 1e6:>8.1f}us {total / alone:>6.1f}"
            )


if __name__ == "__main__":
    main()
