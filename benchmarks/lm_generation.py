"""Generation speed of the text language models: tokens per second of an incremental step (KV
cache, TCN queues, recurrent state) against recomputing the whole prefix with `forward` for each
new token, at batch 1 and 32, at positions 100 and 1000, side by side in one run.

    python benchmarks/lm_generation.py [--threads 1] [--steps 20]

The models are the table's sizes (examples/text/train_table.sh: about 0.25M parameters, bytes),
with random weights: speed does not depend on what was learnt. The model calls alone are timed
(no sampling, no engine), after the state has been stepped to the position.
"""

from __future__ import annotations

import argparse
import time

import torch

from arcli.registry import get_family

MODELS = {
    "tcn": ("tcn", {"channels": "80", "levels": "6", "kernel_size": "3"}),
    "lstm": ("lstm-lm", {"cell": "lstm", "hidden": "192"}),
    "gru": ("lstm-lm", {"cell": "gru", "hidden": "224"}),
    "rnn": ("lstm-lm", {"cell": "rnn", "hidden": "384"}),
    "transformer": ("transformer-lm", {"tokenizer": "bytes", "vocab_size": "257", "eos_id": "256", "d_model": "96", "heads": "4",
                                       "decoder_layers": "2", "ff_dim": "384"}),
}


def incremental(model, batch: int, position: int, steps: int) -> float:
    """Tokens/s of `steps` steps taken at `position` onwards."""
    tokens = torch.randint(256, (batch, position + steps))
    state = model.start(batch)
    _, state = model.step(state, None)
    for t in range(position - 1):
        _, state = model.step(state, tokens[:, t])
    began = time.perf_counter()
    for t in range(position - 1, position - 1 + steps):
        _, state = model.step(state, tokens[:, t])
    return batch * steps / (time.perf_counter() - began)


def recompute(model, batch: int, position: int, steps: int) -> float:
    """Tokens/s when each new token's logits come from a forward pass over the whole prefix."""
    tokens = torch.randint(256, (batch, position + steps))
    began = time.perf_counter()
    for t in range(position, position + steps):
        model(tokens[:, : t + 1])[:, -1]
    return batch * steps / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="new tokens timed per measurement (recomputing: a quarter of them)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"tokens/s, {args.threads} thread(s), torch {torch.__version__}; 'x' = incremental / recomputing")
    print(f"{'model':<12} {'params':>8} {'batch':>5} {'position':>8} {'incremental':>12} {'recomputing':>12} {'x':>7}")
    for label, (name, settings) in MODELS.items():
        family = get_family(name)
        model = family.build(family.config(overrides=settings)).eval()
        parameters = sum(p.numel() for p in model.parameters())
        with torch.inference_mode():
            for batch in (1, 32):
                for position in (100, 1000):
                    fast = incremental(model, batch, position, args.steps)
                    slow = recompute(model, batch, position, max(2, args.steps // 4))
                    print(f"{label:<12} {parameters:>8,} {batch:>5} {position:>8} {fast:>12,.0f} {slow:>12,.0f} {fast / slow:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
