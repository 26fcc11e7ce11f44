"""Search strategies: how the next token of each hypothesis is chosen.

The engine (`arcli.decoding.engine`) owns the loop; a strategy owns its bookkeeping through a few
hooks (fairseq's `Search` objects are the model):

    initial_scores(num_rows, device) -> (B, W)   the scores the W hypotheses of a row start from
    step(t, lprobs, scores, rows) -> Candidates   C candidates per row, best first
    survivors(ended) -> (b, W) index or None      which candidates go on as the next W hypotheses
    final_score(logprob, length)                  what finished hypotheses are ranked by

`lprobs` (b, W, V) are the scores allowed at step `t` (after the history processors; disallowed
tokens are `-inf`), `scores` (b, W) the cumulative scores of the W hypotheses of each of the b
active input rows (`-inf` for a dead one) and `rows` (b,) the rows' indices in the whole request.

When a row is done is the same rule for every strategy: when none of its hypotheses goes on, or
W have finished (a row keeps at most W finished hypotheses). Greedy and sampling keep W
independent hypotheses (one per `nbest`), each extending itself, so they finish at most W. Beam
search (fairseq's top-k beam) returns 2W candidates so that W can go on after some end in EOS.
"""

from __future__ import annotations

import math
import secrets
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from arcli.decoding.processors import LogitsProcessor, apply_processors, sampling_processors
from arcli.errors import OptionError

STRATEGIES = ("greedy", "sample", "beam")
NEG_INF = float("-inf")


class Candidates(NamedTuple):
    """C candidates per row, best first: cumulative scores, tokens, and the hypothesis (0..W-1)
    each extends; all (b, C). `beams` None: C = W and each candidate extends its own hypothesis."""

    scores: torch.Tensor
    tokens: torch.Tensor
    beams: torch.Tensor | None = None


class Strategy(ABC):
    width: int = 1  # hypotheses kept per input row
    nbest: int = 1  # hypotheses returned per input row

    def begin(self, num_rows: int, row_offset: int) -> None:  # noqa: B027 - a hook, empty by default
        """Called once before decoding `num_rows` rows (global indices start at `row_offset`)."""

    def initial_scores(self, num_rows: int, device: torch.device) -> torch.Tensor:
        """(B, W) scores before the first token: W independent hypotheses all start at 0."""
        return torch.zeros(num_rows, self.width, device=device)

    @abstractmethod
    def step(self, t: int, lprobs: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor) -> Candidates: ...

    def survivors(self, ended: torch.Tensor | None) -> torch.Tensor | None:
        """Which of the C candidates become the W hypotheses of the next step, (b, W) indices;
        None: the first W in order. `ended` (b, C): candidates that ended with EOS this step
        (None: none did). Independent hypotheses each go on as themselves (an ended one is dead)."""
        return None

    def final_score(self, logprob: float, length: int) -> float:
        """What finished hypotheses are ranked by."""
        return logprob


class Greedy(Strategy):
    """Always the most likely next token (the first of equals)."""

    def step(self, t, lprobs, scores, rows):
        best_lprob, tokens = lprobs.max(dim=-1)  # (b, W)
        return Candidates(scores + best_lprob, tokens)


class Sample(Strategy):
    """Ancestral sampling from the model's distribution after the logits processors.

    Each hypothesis draws from its own random stream, derived from (seed, row, hypothesis), so a
    row's samples do not depend on which other rows share its batch. A draw is an inverse-CDF
    lookup of one uniform number, so a token of probability 0 is never chosen.
    """

    _chunk = 1024  # uniforms drawn per stream at a time

    def __init__(
        self, processors: Sequence[LogitsProcessor] = (), nbest: int = 1, seed: int | None = None
    ) -> None:
        _check_count("nbest", nbest)
        self.processors = list(processors)
        self.width = self.nbest = nbest
        # secrets, not torch.seed(): choosing a seed must not reseed torch's global generator
        self.seed = seed if seed is not None else secrets.randbits(63)
        self._generators: list[torch.Generator] = []
        self._uniforms: torch.Tensor | None = None  # (rows, W, chunk)

    def begin(self, num_rows: int, row_offset: int) -> None:  # noqa: B027 - a hook, empty by default
        self._generators = [
            torch.Generator().manual_seed(_stream_seed(self.seed, row_offset + row, hyp))
            for row in range(num_rows)
            for hyp in range(self.width)
        ]
        self._uniforms = None

    def _uniform(self, t: int, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
        if t % self._chunk == 0 or self._uniforms is None:
            draws = [torch.rand(self._chunk, generator=g) for g in self._generators]
            num_rows = len(self._generators) // self.width
            # (chunk, rows, W): step t's draws are one contiguous slice
            self._uniforms = torch.stack(draws).view(num_rows, self.width, self._chunk).permute(2, 0, 1).contiguous().to(device)
        now = self._uniforms[t % self._chunk]  # (rows, W)
        # rows is an increasing subset of all rows: as many as all rows means all of them
        return now if rows.numel() == now.shape[0] else now.index_select(0, rows)  # (b, W)

    def step(self, t, lprobs, scores, rows):
        b, width, vocab = lprobs.shape
        logits = apply_processors(lprobs.reshape(b * width, vocab), self.processors)  # the warpers need no history
        cdf = torch.cumsum(torch.softmax(logits, dim=-1), dim=-1)  # (b*W, V)
        # u < 1, and the factor keeps u * total strictly below total despite rounding, so the
        # chosen token's cdf step is never empty (probability > 0).
        target = self._uniform(t, rows, lprobs.device).reshape(-1, 1) * (cdf[:, -1:] * (1 - 2**-20))
        tokens = torch.searchsorted(cdf, target, right=True).clamp_(max=vocab - 1).view(b, width)
        chosen = lprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (b, W)
        return Candidates(scores + chosen, tokens)


class BeamSearch(Strategy):
    """Top-k beam search over cumulative log-probabilities (fairseq's `BeamSearch`).

    Finished hypotheses are ranked by `logprob / length ** length_penalty` (length counts the EOS
    token); `length_penalty=0` ranks by log-probability alone, 1 by log-probability per token.
    A row stops once `beam_size` hypotheses have finished, or at `max_length`.
    """

    def __init__(self, beam_size: int, length_penalty: float = 1.0, nbest: int = 1) -> None:
        _check_count("beam size", beam_size)
        _check_count("nbest", nbest)
        if nbest > beam_size:
            raise OptionError(f"--nbest {nbest} is larger than --beam-size {beam_size}: beam search keeps only beam-size hypotheses")
        if not math.isfinite(length_penalty):
            raise OptionError(f"length penalty must be a finite number, got {length_penalty!r}")
        self.width, self.nbest = beam_size, nbest
        self.length_penalty = float(length_penalty)

    def step(self, t, lprobs, scores, rows):
        b, width, vocab = lprobs.shape
        totals = (scores.unsqueeze(-1) + lprobs).view(b, width * vocab)
        cand_scores, flat = torch.topk(totals, min(2 * width, width * vocab), dim=-1)  # (b, C)
        return Candidates(cand_scores, flat % vocab, torch.div(flat, vocab, rounding_mode="floor"))

    def initial_scores(self, num_rows: int, device: torch.device) -> torch.Tensor:
        """All W beams of a row are the same at first: only the first is expanded (the others
        start at -inf, so none of their candidates can be chosen)."""
        scores = torch.full((num_rows, self.width), NEG_INF, device=device)
        scores[:, 0] = 0.0
        return scores

    def survivors(self, ended: torch.Tensor | None) -> torch.Tensor | None:
        """The best W candidates that did not end (an ended one is replaced by the next best)."""
        if ended is None:
            return None
        candidates = ended.shape[1]
        rank = _arange(candidates, ended.device) + ended * candidates  # ended candidates rank last
        return torch.topk(rank, self.width, dim=1, largest=False).indices  # (b, W)

    def final_score(self, logprob: float, length: int) -> float:
        if self.length_penalty == 0.0 or length == 0:
            return logprob
        return logprob / length**self.length_penalty


def make_strategy(
    strategy: str,
    *,
    beam_size: int = 5,
    nbest: int = 1,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    length_penalty: float = 1.0,
    seed: int | None = None,
) -> Strategy:
    """Turn the decoding options shared by every command into a strategy object."""
    _check_count("nbest", nbest)
    processors = sampling_processors(temperature, top_k, top_p)  # validates the values
    if strategy in ("greedy", "beam") and (temperature, top_k, top_p) != (None, None, None):
        raise OptionError("--temperature, --top-k and --top-p apply to --strategy sample only")
    if strategy == "greedy":
        if nbest != 1:
            raise OptionError("greedy search gives one output per input: use --strategy beam or sample for --nbest > 1")
        return Greedy()
    if strategy == "sample":
        return Sample(processors, nbest=nbest, seed=seed)
    if strategy == "beam":
        return BeamSearch(beam_size, length_penalty, nbest)
    raise OptionError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")


_aranges: dict[tuple[int, torch.device], torch.Tensor] = {}


def _arange(n: int, device: torch.device) -> torch.Tensor:
    """torch.arange(n) on `device`, made once (read-only: callers expand it, never write to it)."""
    key = (n, device)
    if key not in _aranges:
        _aranges[key] = torch.arange(n, device=device)
    return _aranges[key]


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a whole number >= 1, got {value!r}")


def _stream_seed(seed: int, row: int, hyp: int) -> int:
    """A well-mixed 63-bit seed for the random stream of (seed, row, hypothesis)."""
    state = np.random.SeedSequence([seed % 2**64, row, hyp]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
