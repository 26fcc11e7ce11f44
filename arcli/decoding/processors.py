"""Logits processors: small, pure, composable transformations of next-token scores.

Each processor checks its argument once, in `__init__`, and raises `OptionError` (a `ValueError`)
for a value that makes no sense. `__call__(logits)` takes scores of shape (N, V) and returns new
scores of the same shape; it never modifies its input. Removed tokens get `-inf`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from arcli.errors import OptionError

LogitsProcessor = Callable[[torch.Tensor], torch.Tensor]


class Temperature:
    """Divide the logits by `temperature`: < 1 sharpens the distribution, > 1 flattens it."""

    def __init__(self, temperature: float) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or temperature <= 0:
            raise OptionError(
                f"temperature must be a positive number, got {temperature!r} "
                "(for the single most likely output use --strategy greedy)"
            )
        self.temperature = float(temperature)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature


class TopK:
    """Keep the `k` highest-scoring tokens of each row (ties with the k-th are kept too)."""

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise OptionError(f"top-k must be a whole number >= 1, got {k!r}")
        self.k = k

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.k >= logits.shape[-1]:
            return logits.clone()
        kth_best = torch.topk(logits, self.k, dim=-1).values[..., -1:]  # (N, 1)
        return logits.masked_fill(logits < kth_best, float("-inf"))


class TopP:
    """Nucleus truncation: keep the smallest set of most likely tokens whose probability
    mass reaches `p` (the token that crosses `p` is kept; at least one token always is)."""

    def __init__(self, p: float) -> None:
        if not (isinstance(p, (int, float)) and math.isfinite(p)) or not 0 < p <= 1:
            raise OptionError(f"top-p must be in (0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.p >= 1.0:
            return logits.clone()
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (N, V)
        probs = torch.softmax(sorted_logits.double(), dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly better tokens
        remove_sorted = mass_before >= self.p
        remove_sorted[..., 0] = False
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        return logits.masked_fill(remove, float("-inf"))


def apply_processors(logits: torch.Tensor, processors: Sequence[LogitsProcessor]) -> torch.Tensor:
    """Run `processors` left to right over `logits` (N, V)."""
    for processor in processors:
        logits = processor(logits)
    return logits


def sampling_processors(
    temperature: float | None = None, top_k: int | None = None, top_p: float | None = None
) -> list[LogitsProcessor]:
    """The processor list for the usual sampling options; `None` switches an option off."""
    processors: list[LogitsProcessor] = []
    if temperature is not None:
        scaling = Temperature(temperature)
        if scaling.temperature != 1.0:
            processors.append(scaling)
    if top_k is not None:
        processors.append(TopK(top_k))
    if top_p is not None:
        processors.append(TopP(top_p))
    return processors
