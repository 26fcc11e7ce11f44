"""The decoding loop shared by every model and every strategy.

The engine drives any object with `vocab_size`, `eos_id`, `start(batch_size, condition)`,
`step(state, tokens)` and `reorder(state, index)` (the model contract of DESIGN.md). It knows
nothing of audio, pixels or words. Each step, for the W hypotheses of each input row still going:

    1. the model gives the next token's logits; log-softmax makes them log-probabilities;
    2. the history processors (min-length, n-gram blocking ...) shape what the search may choose;
    3. the strategy proposes candidates (`Strategy.step`); known positions override them;
    4. candidates that end in EOS finish (a row keeps at most W finished hypotheses);
    5. the strategy says which candidates go on (`Strategy.survivors`); their tokens join the history;
    6. rows at their length limit finish what is left; a row is done when nothing of it goes on,
       or W of its hypotheses have finished; done rows leave the batch and the model's state.

Everything a step keeps is in one `_Search` object; the strategy owns the choices (its initial
scores, which candidates survive, how finished hypotheses are ranked).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from arcli.decoding.options import DecodingOptions
from arcli.decoding.processors import LogitsProcessor, MinLength, apply_processors
from arcli.decoding.strategies import Candidates, Strategy, _arange
from arcli.errors import ArcliError, OptionError

NEG_INF = float("-inf")
# what a strategy name may come with: the options of DecodingOptions that `build` reads
STRATEGY_OPTIONS = ("beam_size", "nbest", "length_penalty", "temperature", "top_k", "top_p", "seed", "no_repeat_ngram", "repetition_penalty")


@dataclass(frozen=True)
class Hypothesis:
    """One decoded sequence.

    tokens:  the tokens, including the EOS token where the sequence ended with one.
    logprob: sum of the model's natural-log probabilities of `tokens` (known positions included),
             untouched by temperature, truncation, penalties or length normalisation.
    score:   what the search ranked by (`logprob`, length-normalised for beam search).
    token_logprobs: the model's log-probability of each token (`generate(token_scores=True)`).
    """

    tokens: list[int]
    logprob: float
    score: float
    token_logprobs: list[float] | None = None


@dataclass(frozen=True)
class Known:
    """Positions whose values are given: `values` and `mask` are (B, L) with L <= max_length."""

    values: torch.Tensor
    mask: torch.Tensor


class AutoregressiveModel(Protocol):
    vocab_size: int
    eos_id: int | None

    def start(self, batch_size: int, condition: object = None) -> Any: ...
    def step(self, state: Any, tokens: torch.Tensor | None) -> tuple[torch.Tensor, Any]: ...
    def reorder(self, state: Any, index: torch.Tensor) -> Any: ...


ProgressCallback = Callable[[int, int], None]  # (steps done, max_length)


def generate(
    model: AutoregressiveModel,
    strategy: str | Strategy = "greedy",
    *,
    processors: Sequence[LogitsProcessor] = (),
    max_length: int,
    min_length: int = 0,
    batch_size: int = 1,
    condition: object = None,
    known: Known | tuple[torch.Tensor, torch.Tensor] | None = None,
    row_offset: int = 0,
    row_max_lengths: torch.Tensor | list[int] | None = None,
    token_scores: bool = False,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> list[list[Hypothesis]]:
    """Decode `batch_size` rows from `model`; returns, per row, its hypotheses best first.

    `strategy` is a `Strategy` object (from `DecodingOptions.build`, with its `processors`), or a
    strategy name with its options as keywords (`beam_size`, `nbest`, `length_penalty`,
    `temperature`, `top_k`, `top_p`, `seed`, `no_repeat_ngram`, `repetition_penalty`); options
    given beside an object are an error, never ignored.

    Beam search returns `nbest` hypotheses per row; sampling returns `nbest` independent samples;
    greedy returns one. Generation stops at EOS (when the model has one) or after `max_length`
    tokens (or row r's own `row_max_lengths[r]`, at most `max_length`, e.g. relative to its
    source's length); EOS is not allowed before `min_length` tokens. Row r draws its samples from
    the random stream of (`seed`, `row_offset` + r), so the result does not depend on `batch_size`.
    `token_scores`: also give each hypothesis' per-token log-probabilities.
    """
    if isinstance(strategy, str):
        unknown = sorted(set(options) - set(STRATEGY_OPTIONS))
        if unknown:
            raise TypeError(f"generate() got unexpected options {', '.join(unknown)}")
        strategy, more = DecodingOptions(strategy=strategy, **options).build()
        processors = [*more, *processors]
    elif options:
        raise TypeError(f"generate() got {', '.join(sorted(options))} beside a Strategy object, which carries its own options")
    for name, value, low in (("max length", max_length, 1), ("batch size", batch_size, 1), ("min length", min_length, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise OptionError(f"{name} must be a whole number >= {low}, got {value!r}")
    if min_length > max_length:
        raise OptionError(f"min length {min_length} is larger than max length {max_length}")
    limits = torch.full((batch_size,), max_length, dtype=torch.long)
    if row_max_lengths is not None:
        limits = torch.as_tensor(row_max_lengths, dtype=torch.long).clamp(max=max_length)
        if limits.shape != (batch_size,) or bool((limits < max(min_length, 1)).any()):
            raise OptionError(f"row max lengths must be {batch_size} numbers >= max(1, min length {min_length})")
    if known is not None:  # any integer dtype (images come as uint8) -> token ids, bool mask
        values, mask = (known.values, known.mask) if isinstance(known, Known) else known
        known = Known(torch.as_tensor(values).long(), torch.as_tensor(mask).bool())
        _check_known(known, batch_size, max_length, model.vocab_size)
    if min_length and model.eos_id is not None:
        processors = [MinLength(min_length, model.eos_id), *processors]
    with torch.inference_mode():
        return _decode(model, strategy, list(processors), max_length=max_length, limits=limits, batch_size=batch_size,
                       condition=condition, known=known, row_offset=row_offset, token_scores=token_scores, progress=progress)


def _check_known(known: Known, batch_size: int, max_length: int, vocab_size: int) -> None:
    if known.values.shape != known.mask.shape or known.values.dim() != 2:
        raise ValueError(f"known values {tuple(known.values.shape)} and mask {tuple(known.mask.shape)} must both be (B, L)")
    if known.values.shape[0] != batch_size or known.values.shape[1] > max_length:
        raise ValueError(f"known values {tuple(known.values.shape)} do not fit batch size {batch_size} and max length {max_length}")
    given = known.values[known.mask.bool()]
    if given.numel() and (given.min() < 0 or given.max() >= vocab_size):
        raise ValueError(f"known values must be token ids in [0, {vocab_size})")


@dataclass
class _Search:
    """What the loop keeps between steps, for the b input rows still being decoded (W hypotheses each)."""

    rows: torch.Tensor  # (b,) their indices in the request
    scores: torch.Tensor  # (b, W) cumulative search scores; -inf for a hypothesis that is dead
    alive: torch.Tensor  # (b, W) hypotheses that go on
    tokens: torch.Tensor  # (b, W, max_length) tokens so far
    lprobs: torch.Tensor | None  # (b, W, max_length) the model's log-probability of each, when kept
    logprob_is_sum: bool  # a hypothesis' log-probability is the sum of `lprobs` (not its search score)
    token_scores: bool  # finished hypotheses carry their tokens' log-probabilities
    finished: torch.Tensor  # (b,) how many hypotheses each row has finished
    model_state: Any = None

    def history(self, t: int) -> torch.Tensor:
        """(b * W, t) the tokens each hypothesis holds before step t."""
        b, width, _ = self.tokens.shape
        return self.tokens[:, :, :t].reshape(b * width, t)

    def follow(self, model: AutoregressiveModel, keep: torch.Tensor | None, beams: torch.Tensor | None, t: int) -> None:
        """Keep the rows in `keep` (b,) (None: all) and move each hypothesis onto the one it
        extends, `beams` (b, W) (None: itself): the history and the model's state follow."""
        if keep is None and beams is None:
            return
        b, width, _ = self.tokens.shape
        index = _first_of_row(b, width, self.tokens.device) + (_arange(width, self.tokens.device) if beams is None else beams)  # (b, W) into b * W
        if keep is not None:
            index, self.rows, self.scores, self.alive = index[keep], self.rows[keep], self.scores[keep], self.alive[keep]
            self.finished = self.finished[keep]
        flat = index.reshape(-1)
        self.tokens = _take(self.tokens, flat, t)
        if self.lprobs is not None:
            self.lprobs = _take(self.lprobs, flat, t)
        if self.rows.numel():
            self.model_state = model.reorder(self.model_state, flat)


def _first_of_row(b: int, width: int, device: torch.device) -> torch.Tensor:
    """(b, 1): the index of each row's first hypothesis among b * W (made once per shape)."""
    key = (b, width, device)
    if key not in _FIRSTS:
        _FIRSTS[key] = torch.arange(b, device=device).unsqueeze(1) * width
    return _FIRSTS[key]


_FIRSTS: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _take(history: torch.Tensor, flat: torch.Tensor, t: int) -> torch.Tensor:
    """(n, W, L) history rows `flat` (indices into n * W), of which only the first t columns count."""
    width, length = history.shape[1], history.shape[2]
    n = flat.numel() // width
    taken = history.new_empty(n, width, length)  # columns from t on are written before they are read
    taken[:, :, :t] = history.view(-1, length)[:, :t].index_select(0, flat).view(n, width, t)
    return taken


def _decode(model, strategy: Strategy, processors: list[LogitsProcessor], *, max_length: int, limits: torch.Tensor,
            batch_size: int, condition, known: Known | None, row_offset: int, token_scores: bool, progress) -> list[list[Hypothesis]]:
    width, eos = strategy.width, model.eos_id
    strategy.begin(batch_size, row_offset)
    model_state = model.start(batch_size, condition)
    if width > 1:
        model_state = model.reorder(model_state, torch.arange(batch_size).repeat_interleave(width))
    finished: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    known_steps = [] if known is None else known.mask.any(dim=0).tolist()
    limit_steps = set(limits.tolist())  # lengths at which some row reaches its limit
    search: _Search | None = None
    tokens = None

    for t in range(max_length):
        logits, model_state = model.step(model_state, tokens)  # (b*W, V)
        if search is None:  # first step: now we know the device
            search = _start(strategy, batch_size, max_length, logits.device, processors, token_scores)
            limits = limits.to(logits.device)
        search.model_state = model_state
        b = search.rows.numel()
        lprobs = torch.log_softmax(logits.float(), dim=-1).view(b, width, -1)  # (b, W, V)
        allowed = lprobs
        if processors:
            allowed = apply_processors(lprobs.view(b * width, -1), processors, search.history(t)).view(b, width, -1)
        cand = strategy.step(t, allowed, search.scores, search.rows)  # (b, C)
        cand_alive = cand.scores > NEG_INF  # a hypothesis with no possible token dies, as does one with a NaN score
        # (not torch.isfinite, which costs several kernels: log-probabilities are never +inf)
        if t < len(known_steps) and known_steps[t]:
            cand, cand_alive = _force_known(known, t, search, lprobs, cand, cand_alive)
        cand_lprobs = _token_lprobs(lprobs, cand) if search.lprobs is not None else None

        at_limit = limits[search.rows] <= t + 1 if t + 1 in limit_steps else None  # (b,) rows ending here, EOS or not
        before = {} if at_limit is None else {row: len(finished[row]) for row in search.rows[at_limit].tolist()}
        ended = None  # (b, C) candidates that end here with EOS
        if eos is not None:
            ended = (cand.tokens == eos) & cand_alive
            if bool(ended.any()):
                counted = ended[:, :width]  # an EOS outside the best W finishes nothing, and goes on no further (fairseq)
                _finish(finished, strategy, search, counted, t, cand, cand_lprobs, uncapped=before)
                search.finished = search.finished + counted.sum(dim=1)  # (b,) as len(finished[row]), past W only at a limit
            else:
                ended = None

        keep = strategy.survivors(ended)  # (b, W) into C, or None: the first W
        search.scores, search.alive, new_tokens = _pick(cand.scores, keep, width), _pick(cand_alive, keep, width), _pick(cand.tokens, keep, width)
        if ended is not None:
            search.alive = search.alive & ~_pick(ended, keep, width)
            search.scores = search.scores.masked_fill(~search.alive, NEG_INF)  # a finished hypothesis proposes nothing more
        search.follow(model, None, None if cand.beams is None and keep is None else _pick(_beams(cand), keep, width), t)
        search.tokens.select(2, t).copy_(new_tokens)  # (select + copy_: a tenth of the cost of tokens[:, :, t] = ...)
        if cand_lprobs is not None:
            search.lprobs.select(2, t).copy_(_pick(cand_lprobs, keep, width))

        if at_limit is not None:  # the best W of what ends at the limit (with EOS or cut there) join what finished before
            _finish(finished, strategy, search, search.alive & at_limit.unsqueeze(1), t + 1, uncapped=before)
            for row, count in before.items():
                ending = sorted(finished[row][count:], key=lambda h: h.score, reverse=True)
                finished[row][count:] = ending[: max(0, width - count)]
        last = t == max_length - 1
        dead = not bool(search.alive.all())
        if dead and bool(torch.isnan(search.scores).any()):  # a NaN score is not finite: its hypothesis died
            raise ArcliError(f"the model produced invalid (NaN) probabilities at step {t}")
        if not last and (ended is not None or at_limit is not None or dead):
            done = ~search.alive.any(dim=1)
            if at_limit is not None:
                done |= at_limit
            if ended is not None:  # W finished: nothing still going can enter the row's best W
                done |= search.finished >= width
            if bool(done.any()):
                search.follow(model, ~done, None, t + 1)
                new_tokens = search.tokens.select(2, t)
        if progress is not None:
            progress(max_length if last or search.rows.numel() == 0 else t + 1, max_length)
        if last or search.rows.numel() == 0:
            break
        tokens, model_state = new_tokens.reshape(-1), search.model_state  # (b*W,) the tokens just chosen

    for row, hyps in enumerate(finished):
        if not hyps:
            raise ArcliError(
                f"row {row} has no possible output: the model gives probability 0 to every sequence "
                "that keeps the known values and the minimum length"
            )
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[: strategy.nbest] for hyps in finished]


def _start(strategy: Strategy, batch_size: int, max_length: int, device: torch.device,
           processors: list[LogitsProcessor], token_scores: bool) -> _Search:
    scores = strategy.initial_scores(batch_size, device)
    # With only masking processors a hypothesis' search score is its log-probability; else, or
    # when the tokens' log-probabilities are asked for, its log-probability is their sum (in
    # float64, so that the two agree).
    summed = token_scores or not all(p.masks_only for p in processors)
    shape = (batch_size, strategy.width, max_length)
    return _Search(
        rows=torch.arange(batch_size, device=device), scores=scores, alive=torch.isfinite(scores),
        tokens=torch.zeros(shape, dtype=torch.long, device=device),
        lprobs=torch.zeros(shape, device=device) if summed else None,
        logprob_is_sum=summed, token_scores=token_scores, finished=torch.zeros(batch_size, dtype=torch.long, device=device),
    )


def _pick(candidates: torch.Tensor, keep: torch.Tensor | None, width: int) -> torch.Tensor:
    """(b, W) of (b, C) candidates: those in `keep` (b, W), or (None) the first W."""
    if keep is None:
        return candidates if candidates.shape[1] == width else candidates[:, :width]
    return candidates.gather(1, keep)


def _beams(cand: Candidates) -> torch.Tensor:
    """(b, C) the hypothesis each candidate extends (None in `cand`: its own)."""
    if cand.beams is not None:
        return cand.beams
    b, count = cand.tokens.shape
    return torch.arange(count, device=cand.tokens.device).expand(b, count)


def _token_lprobs(lprobs: torch.Tensor, cand: Candidates) -> torch.Tensor:
    """(b, C) the model's log-probability of each candidate's token."""
    if cand.beams is None:
        return lprobs.gather(2, cand.tokens.unsqueeze(-1)).squeeze(-1)
    b, width, vocab = lprobs.shape
    return lprobs.view(b, width * vocab).gather(1, cand.beams * vocab + cand.tokens)


def _force_known(known: Known, t: int, search: _Search, lprobs: torch.Tensor, cand: Candidates,
                 cand_alive: torch.Tensor) -> tuple[Candidates, torch.Tensor]:
    """Rows with a known value at step t take that value instead of the strategy's choice, for
    each of their W hypotheses; its log-probability is still counted. A hypothesis goes on through
    a known value of probability 0 (its log-probability becomes -inf, never NaN) and dies at the
    next choice. The other C - W candidates of such rows are dead."""
    device = lprobs.device
    forced = known.mask[:, t].to(device)[search.rows].view(-1, 1)  # (b, 1)
    b, width, _ = lprobs.shape
    value = known.values[:, t].to(device)[search.rows].view(b, 1).expand(b, width)  # (b, W)
    forced_scores = search.scores + lprobs.gather(2, value.unsqueeze(-1)).squeeze(-1)  # (b, W)

    def put(candidates, first_w, rest):  # forced rows: W candidates, one per hypothesis
        filled = torch.cat([first_w, rest.expand(b, candidates.shape[1] - width)], dim=1)
        return torch.where(forced, filled, candidates)

    def nothing(dtype):
        return torch.zeros(1, 1, dtype=dtype, device=device)

    beams = None
    if cand.beams is not None:
        beams = put(cand.beams, torch.arange(width, device=device).expand(b, width), nothing(cand.beams.dtype))
    return (
        Candidates(put(cand.scores, forced_scores, nothing(cand.scores.dtype) + NEG_INF), put(cand.tokens, value, nothing(cand.tokens.dtype)), beams),
        put(cand_alive, search.alive, nothing(torch.bool)),
    )


def _finish(finished: list[list[Hypothesis]], strategy: Strategy, search: _Search, which: torch.Tensor, length: int,
            cand: Candidates | None = None, cand_lprobs: torch.Tensor | None = None, uncapped: dict[int, int] | None = None) -> None:
    """Turn the hypotheses marked in `which` into finished ones of their rows: candidates (b, C)
    that add one token to the first `length` (`cand` given), or else the hypotheses (b, W) as they
    stand, `length` tokens. A row keeps at most W, except the rows in `uncapped` (at their length
    limit: the caller keeps the best of what ends there)."""
    if not bool(which.any()):
        return
    i, c = which.nonzero().unbind(1)
    if cand is None:
        sequences, scores = search.tokens[i, c, :length], search.scores[i, c]
        lprobs = None if search.lprobs is None else search.lprobs[i, c, :length]
    else:
        beams = c if cand.beams is None else cand.beams[i, c]
        sequences = torch.cat([search.tokens[i, beams, :length], cand.tokens[i, c].unsqueeze(1)], dim=1)
        scores = cand.scores[i, c]
        lprobs = None if search.lprobs is None else torch.cat([search.lprobs[i, beams, :length], cand_lprobs[i, c].unsqueeze(1)], dim=1)
    per_token = [None] * len(i) if lprobs is None else lprobs.tolist()
    for row, seq, score, token_lprobs in zip(search.rows[i].tolist(), sequences.tolist(), scores.tolist(), per_token, strict=True):
        if (uncapped is None or row not in uncapped) and len(finished[row]) >= strategy.width:
            continue
        logprob = math.fsum(token_lprobs) if search.logprob_is_sum else score
        finished[row].append(Hypothesis(seq, logprob, strategy.final_score(score, len(seq)), token_lprobs if search.token_scores else None))
