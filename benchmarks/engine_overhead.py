"""Engine overhead: time per decoding step of `arcli.decoding.generate` around a trivial model,
beside the model's own step time, for greedy, sampling and beam 5 at batch 1 and 64.

    python benchmarks/engine_overhead.py [--steps 300] [--vocab 256] [--device cpu] [--threads 1]

Each figure is the best of `--repeats` runs, since shared machines are noisy.

The trivial model is one embedding lookup per step (logits = table[previous token]), so nearly all
of the time above its own step time is the engine's: log-softmax, the strategy, book-keeping.

The last table sets that overhead beside a real model: the shipped Transformer translator's own
step (a bare loop over `step` and `reorder`, 64 sources of `--source-tokens` tokens, beam 5 = 320
rows) against the engine's overhead at the same rows and the Transformer's vocabulary, over
`--translation-steps` steps (about a sentence's length).
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


def transformer_step_time(model, rows: int, steps: int, source_tokens: int) -> float:
    """Seconds per step of the shipped Transformer alone: `rows` // 5 sources, beam 5, argmax tokens."""
    from arcli.models.transformer import Source

    sources = rows // 5
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, model.vocab_size, (sources, source_tokens), generator=generator)
    source = Source(tokens.to(model_device(model)), torch.full((sources,), source_tokens, device=model_device(model)))
    with torch.inference_mode():
        state = model.start(sources, source)
        state = model.reorder(state, torch.arange(sources, device=model_device(model)).repeat_interleave(5))
        previous = None
        begin = time.perf_counter()
        for _ in range(steps):
            logits, state = model.step(state, previous)
            previous = logits.argmax(-1)
            state = model.reorder(state, torch.arange(rows, device=logits.device))  # beam search reorders every step
        _sync(logits)
        return (time.perf_counter() - begin) / steps


def model_device(model) -> torch.device:
    return next(model.parameters()).device


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
    parser.add_argument("--translation-steps", type=int, default=40, help="steps for the Transformer comparison")
    parser.add_argument("--source-tokens", type=int, default=30, help="source length for the Transformer comparison")
    parser.add_argument("--no-transformer", action="store_true", help="skip the comparison with the shipped Transformer")
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
    if not args.no_transformer:
        compare_with_transformer(args)


def compare_with_transformer(args) -> None:
    from arcli.registry import get_family

    transformer, _ = get_family("transformer").load(None, torch.device(args.device))
    transformer.eval()
    vocab, rows, steps = transformer.vocab_size, 64 * 5, args.translation_steps
    lookup = Lookup(vocab).to(args.device).eval()
    step = best_of(args.repeats, transformer_step_time, transformer, rows, steps, args.source_tokens)
    alone = best_of(args.repeats, model_step_time, lookup, rows, steps)
    total = best_of(args.repeats, engine_step_time, lookup, "beam", 64, steps)
    overhead = total - alone
    print(f"\nshipped Transformer, batch 64 x beam 5 = {rows} rows, vocab {vocab}, {steps} steps, sources of {args.source_tokens} tokens")
    print(f"Transformer step {step * 1e6:.1f}us; engine overhead at vocab {vocab}: {overhead * 1e6:.1f}us "
          f"(engine step {total * 1e6:.1f}us - lookup step {alone * 1e6:.1f}us) = {overhead / step:.1%} of the model's step")


if __name__ == "__main__":
    main()
