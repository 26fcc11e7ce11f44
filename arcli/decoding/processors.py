"""Logits processors: small, pure, composable transformations of next-token scores.

Each processor checks its argument once, in `__init__`, and raises `OptionError` (a `ValueError`)
for a value that makes no sense. `__call__(scores, history)` takes scores of shape (N, V) and the
tokens each of the N hypotheses holds so far, (N, t) (known positions included), and returns new
scores of the same shape; it never modifies its input. Removed tokens get `-inf`.

Two kinds serve the decoding engine:
- history processors (`MinLength`, `NoRepeatNGram`, `RepetitionPenalty`) shape what every
  strategy sees, greedy and beam search included; the engine runs them before the strategy;
- sampling warpers (`Temperature`, `TopK`, `TopP`) shape the distribution a sample is drawn
  from; the `Sample` strategy runs them (for greedy and beam search they would change nothing or
  make no sense).

A processor whose `masks_only` is True only removes tokens: the scores of the tokens it keeps are
the model's log-probabilities still, so the search score of a hypothesis stays its log-probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch

from arcli.errors import OptionError

NEG_INF = float("-inf")


class LogitsProcessor(Protocol):
    masks_only: bool

    def __call__(self, scores: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor: ...


class Temperature:
    """Divide the logits by `temperature`: < 1 sharpens the distribution, > 1 flattens it."""

    def __init__(self, temperature: float) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or temperature <= 0:
            raise OptionError(
                f"temperature must be a positive number, got {temperature!r} "
                "(for the single most likely output use --strategy greedy)"
            )
        self.temperature = float(temperature)

    masks_only = False

    def __call__(self, logits: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        return logits / self.temperature


class TopK:
    """Keep the `k` highest-scoring tokens of each row (ties with the k-th are kept too)."""

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise OptionError(f"top-k must be a whole number >= 1, got {k!r}")
        self.k = k

    masks_only = True

    def __call__(self, logits: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
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

    masks_only = True

    def __call__(self, logits: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        if self.p >= 1.0:
            return logits.clone()
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (N, V)
        probs = torch.softmax(sorted_logits.double(), dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly better tokens
        remove_sorted = mass_before >= self.p
        remove_sorted[..., 0] = False
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        return logits.masked_fill(remove, float("-inf"))


class MinLength:
    """No end-of-sequence token before `min_length` tokens (the known ones included)."""

    masks_only = True

    def __init__(self, min_length: int, eos_id: int) -> None:
        if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 0:
            raise OptionError(f"min length must be a whole number >= 0, got {min_length!r}")
        self.min_length, self.eos_id = min_length, eos_id

    def __call__(self, scores: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        if (0 if history is None else history.shape[1]) >= self.min_length:
            return scores
        blocked = scores.clone()
        blocked[:, self.eos_id] = NEG_INF
        return blocked


class NoRepeatNGram:
    """Never complete an n-gram that the hypothesis already holds (fairseq's and Hugging Face's
    `no_repeat_ngram_size`): with n = 3, after "a b" a hypothesis holding "a b c" cannot take c."""

    masks_only = True

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise OptionError(f"--no-repeat-ngram must be a whole number >= 1, got {n!r}")
        self.n = n

    def __call__(self, scores: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        n = self.n
        if history is None or history.shape[1] < n:  # no whole n-gram held yet
            return scores
        windows = history.unfold(1, n, 1)  # (N, t - n + 1, n): every n-gram held so far
        tail = history[:, history.shape[1] - (n - 1) :].unsqueeze(1)  # (N, 1, n - 1)
        repeats = (windows[:, :, : n - 1] == tail).all(dim=-1)  # (N, t - n + 1): n-grams this step would repeat
        vocab = scores.shape[-1]
        banned_at = torch.where(repeats, windows[:, :, n - 1], vocab)  # vocab: a spare column for "none"
        banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        banned.scatter_(1, banned_at, True)
        return scores.masked_fill(banned[:, :vocab], NEG_INF)


class RepetitionPenalty:
    """Make tokens the hypothesis already holds less likely (CTRL, Keskar et al. 2019, as Hugging
    Face's `repetition_penalty`): a held token's score s becomes s * R where s < 0, s / R otherwise.
    R > 1 discourages repetition, R < 1 encourages it, 1 changes nothing."""

    masks_only = False

    def __init__(self, penalty: float) -> None:
        if not (isinstance(penalty, (int, float)) and not isinstance(penalty, bool) and math.isfinite(penalty)) or penalty <= 0:
            raise OptionError(f"--repetition-penalty must be a number > 0, got {penalty!r}")
        self.penalty = float(penalty)

    def __call__(self, scores: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        if history is None or history.shape[1] == 0:
            return scores
        held = scores.gather(1, history)  # (N, t)
        penalised = torch.where(held < 0, held * self.penalty, held / self.penalty)
        return scores.scatter(1, history, penalised)


def apply_processors(
    logits: torch.Tensor, processors: Sequence[LogitsProcessor], history: torch.Tensor | None = None
) -> torch.Tensor:
    """Run `processors` left to right over `logits` (N, V), with the tokens held so far (N, t)."""
    for processor in processors:
        logits = processor(logits, history)
    return logits


def history_processors(
    min_length: int = 0, eos_id: int | None = None, no_repeat_ngram: int | None = None, repetition_penalty: float | None = None
) -> list[LogitsProcessor]:
    """The processors every strategy runs; `None` (or 0 for `min_length`) switches one off."""
    processors: list[LogitsProcessor] = []
    if min_length and eos_id is not None:
        processors.append(MinLength(min_length, eos_id))
    if no_repeat_ngram is not None:
        processors.append(NoRepeatNGram(no_repeat_ngram))
    if repetition_penalty is not None:
        processors.append(RepetitionPenalty(repetition_penalty))
    return processors


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
