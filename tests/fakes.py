"""Hand-written models for testing the engine: every probability is written down or derived
deterministically from the prefix, so expected tokens and log-probabilities can be computed by hand
or by brute force."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence

import torch

Prefix = tuple[int, ...]


class TableModel:
    """next-token probabilities = table(condition, prefix); state = the rows' (condition, prefix).

    `step` counts its calls so tests can check the engine stops early and drops finished rows.
    """

    def __init__(self, table: Callable[[int, Prefix], Sequence[float]], vocab_size: int, eos_id: int | None):
        self.table, self.vocab_size, self.eos_id = table, vocab_size, eos_id
        self.rows_stepped = 0

    def start(self, batch_size: int, condition=None):
        conditions = [0] * batch_size if condition is None else [int(c) for c in condition]
        return [(c, ()) for c in conditions]

    def step(self, state, tokens):
        if tokens is not None:
            state = [(c, prefix + (int(tok),)) for (c, prefix), tok in zip(state, tokens.tolist(), strict=True)]
        self.rows_stepped += len(state)
        probs = torch.tensor([self.table(c, prefix) for c, prefix in state], dtype=torch.float64)
        return probs.log().float(), state

    def reorder(self, state, index):
        return [state[i] for i in index.tolist()]


def dict_table(entries: dict[Prefix, Sequence[float]], default: Sequence[float]):
    return lambda condition, prefix: entries.get(prefix, default)


def random_table(vocab_size: int, zero_token: int | None = None):
    """A fixed pseudo-random distribution for every (condition, prefix)."""

    def table(condition: int, prefix: Prefix) -> list[float]:
        rng = random.Random(str((condition, prefix)))
        weights = [rng.random() + 0.05 for _ in range(vocab_size)]
        if zero_token is not None:
            weights[zero_token] = 0.0
        total = sum(weights)
        return [w / total for w in weights]

    return table


def all_sequences(model: TableModel, max_length: int, condition: int = 0):
    """Every sequence the model can produce within max_length, with its exact log-probability."""
    results = []
    for length in range(1, max_length + 1):
        for seq in itertools.product(range(model.vocab_size), repeat=length):
            if model.eos_id is not None and model.eos_id in seq[:-1]:
                continue
            if length < max_length and seq[-1] != model.eos_id:
                continue
            logprob = sum(math.log(model.table(condition, seq[:i])[tok]) if model.table(condition, seq[:i])[tok] > 0 else -math.inf
                          for i, tok in enumerate(seq))
            results.append((list(seq), logprob))
    return results
