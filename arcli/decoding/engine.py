"""The decoding loop shared by every model and every strategy.

The engine drives any object with `vocab_size`, `eos_id`, `start(batch_size, condition)`,
`step(state, tokens)` and `reorder(state, index)` (the model contract of DESIGN.md). It knows
nothing of audio, pixels or words: it feeds tokens, asks the strategy for the next ones, keeps the
hypotheses' tokens and log-probabilities, and drops input rows from the model's state as soon as
they are finished.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from arcli.decoding.strategies import Strategy, make_strategy
from arcli.errors import ArcliError, OptionError

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Hypothesis:
    """One decoded sequence.

    tokens:  the tokens, including the EOS token where the sequence ended with one.
    logprob: sum of the model's natural-log probabilities of `tokens` (known positions included),
             untouched by temperature, truncation or length penalties.
    score:   what the search ranked by (`logprob`, length-normalised for beam search).
    """

    tokens: list[int]
    logprob: float
    score: float


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
    max_length: int,
    min_length: int = 0,
    batch_size: int = 1,
    condition: object = None,
    known: Known | tuple[torch.Tensor, torch.Tensor] | None = None,
    beam_size: int = 5,
    nbest: int = 1,
    length_penalty: float = 1.0,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    row_offset: int = 0,
    row_max_lengths: torch.Tensor | list[int] | None = None,
    progress: ProgressCallback | None = None,
) -> list[list[Hypothesis]]:
    """Decode `batch_size` rows from `model`; returns, per row, its hypotheses best first.

    Beam search returns `nbest` hypotheses per row; sampling returns `nbest` independent samples;
    greedy returns one. Generation stops at EOS (when the model has one) or after `max_length`
    tokens (or row r's own `row_max_lengths[r]`, at most `max_length`, e.g. relative to its
    source's length); EOS is not allowed before `min_length` tokens. Row r draws its samples from the random
    stream of (`seed`, `row_offset` + r), so the result does not depend on `batch_size`.
    """
    if isinstance(strategy, str):
        strategy = make_strategy(
            strategy, beam_size=beam_size, nbest=nbest, temperature=temperature,
            top_k=top_k, top_p=top_p, length_penalty=length_penalty, seed=seed,
        )
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
    with torch.inference_mode():
        return _decode(model, strategy, max_length, limits, min_length, batch_size, condition, known, row_offset, progress)


def _check_known(known: Known, batch_size: int, max_length: int, vocab_size: int) -> None:
    if known.values.shape != known.mask.shape or known.values.dim() != 2:
        raise ValueError(f"known values {tuple(known.values.shape)} and mask {tuple(known.mask.shape)} must both be (B, L)")
    if known.values.shape[0] != batch_size or known.values.shape[1] > max_length:
        raise ValueError(f"known values {tuple(known.values.shape)} do not fit batch size {batch_size} and max length {max_length}")
    given = known.values[known.mask.bool()]
    if given.numel() and (given.min() < 0 or given.max() >= vocab_size):
        raise ValueError(f"known values must be token ids in [0, {vocab_size})")


def _decode(model, strategy: Strategy, max_length, limits, min_length, batch_size, condition, known, row_offset, progress):
    width, eos = strategy.width, model.eos_id
    if eos is None and known is None and not strategy.replaces_finished and bool((limits == max_length).all()):
        return _decode_fixed_length(model, strategy, max_length, batch_size, condition, row_offset, progress)
    strategy.begin(batch_size, row_offset)
    state = model.start(batch_size, condition)
    if width > 1:
        state = model.reorder(state, torch.arange(batch_size).repeat_interleave(width))

    finished: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    rows = torch.arange(batch_size)  # which input rows are still being decoded
    scores: torch.Tensor | None = None  # (b, W) cumulative log-probabilities
    alive: torch.Tensor | None = None  # (b, W) hypotheses still going on
    history: torch.Tensor | None = None  # (b, W, max_length) tokens so far
    known_steps = [] if known is None else known.mask.bool().any(dim=0).tolist()
    tokens = None

    for t in range(max_length):
        logits, state = model.step(state, tokens)  # (b*W, V)
        b, device = rows.numel(), logits.device
        if scores is None:  # first step: now we know the device
            rows, scores = rows.to(device), torch.zeros(batch_size, width, device=device)
            limits = limits.to(device)
            if strategy.replaces_finished:
                scores[:, 1:] = NEG_INF  # all beams are equal at first: expand only one
            alive = torch.isfinite(scores)
            history = torch.zeros(batch_size, width, max_length, dtype=torch.long, device=device)
        lprobs = torch.log_softmax(logits.float(), dim=-1).view(b, width, -1)  # (b, W, V)
        if torch.isnan(lprobs).any():
            raise ArcliError(f"the model produced invalid (NaN) probabilities at step {t}")
        allowed = lprobs
        if eos is not None and t < min_length:
            allowed = allowed.clone()
            allowed[..., eos] = NEG_INF
        cand_scores, cand_tokens, cand_beams = strategy.step(t, allowed, scores, rows)  # (b, C)
        cand_alive = torch.isfinite(cand_scores)  # a hypothesis with no possible token dies
        if t < len(known_steps) and known_steps[t]:
            cand_scores, cand_tokens, cand_beams, cand_alive = _force_known(
                strategy, known, t, rows, lprobs, scores, alive, cand_scores, cand_tokens, cand_beams, cand_alive
            )
        at_limit = limits[rows] <= t + 1  # (b,) rows whose hypotheses end at this step, EOS or not
        last = {int(rows[i]): len(finished[int(rows[i])]) for i in at_limit.nonzero().flatten().tolist()}
        ends = None  # (b, C): candidates that end here with EOS
        if eos is not None:
            ends = (cand_tokens == eos) & cand_alive
            counted = ends.clone()
            counted[:, width:] = False  # an EOS outside the best W finishes nothing, and goes on no further (fairseq)
            _finalize(strategy, finished, rows, history, t, cand_scores, cand_tokens, cand_beams, counted, uncapped=last)

        if strategy.replaces_finished:  # keep the best W candidates that did not end
            rank = torch.arange(cand_tokens.shape[1], device=device).expand_as(cand_tokens)
            if ends is not None:
                rank = rank + ends * cand_tokens.shape[1]
            keep = torch.topk(rank, width, dim=1, largest=False).indices  # (b, W)
            scores, alive = cand_scores.gather(1, keep), cand_alive.gather(1, keep)
            if ends is not None:
                alive &= ~ends.gather(1, keep)
            tokens_t, beams = cand_tokens.gather(1, keep), cand_beams.gather(1, keep)
            history = history.gather(1, beams.unsqueeze(-1).expand(-1, -1, max_length))
        else:
            scores, alive = cand_scores, alive & cand_alive
            if ends is not None:
                alive &= ~ends
            tokens_t, beams = cand_tokens, None
        history[:, :, t] = tokens_t

        if last:  # the best W of what ends at the limit (with EOS or cut there) join what finished before
            _finalize(strategy, finished, rows, history, t + 1, scores, None, None, alive & at_limit.unsqueeze(1), uncapped=last)
            for row, before in last.items():
                ending = sorted(finished[row][before:], key=lambda h: h.score, reverse=True)
                finished[row][before:] = ending[: max(0, strategy.width - before)] if strategy.replaces_finished else ending
        if t == max_length - 1:
            rows = rows[:0]
        else:
            done = ~alive.any(dim=1) | at_limit
            if strategy.replaces_finished:
                counts = torch.tensor([len(finished[r]) for r in rows.tolist()], device=device)
                done |= counts >= width
            rows, scores, alive, history, tokens_t, state = _keep_rows(
                model, state, ~done, beams, rows, scores, alive, history, tokens_t, width
            )
        if progress is not None:
            progress(t + 1 if rows.numel() else max_length, max_length)
        if rows.numel() == 0:
            break
        tokens = tokens_t.reshape(-1)

    for row, hyps in enumerate(finished):
        if not hyps:
            raise ArcliError(
                f"row {row} has no possible output: the model gives probability 0 to every sequence "
                "that keeps the known values and the minimum length"
            )
    results = []
    for hyps in finished:
        hyps.sort(key=lambda h: h.score, reverse=True)
        results.append(hyps[: strategy.nbest])
    return results


def _decode_fixed_length(model, strategy: Strategy, max_length, batch_size, condition, row_offset, progress):
    """`_decode` for the common case of audio and unconditional images: no EOS, no known values,
    independent hypotheses (greedy or sampling) and one length for all rows. No row can end early,
    so the per-step bookkeeping of `_decode` (ends, limits, dropping rows) has nothing to do; at
    batch 1 it cost as much as a WaveNet step. The result is the same as `_decode`'s.

    A NaN in the logits makes the chosen token's log-probability NaN, and a NaN score stays NaN,
    so one check at the end finds what a check at every step would have found."""
    width = strategy.width
    strategy.begin(batch_size, row_offset)
    state = model.start(batch_size, condition)
    if width > 1:
        state = model.reorder(state, torch.arange(batch_size).repeat_interleave(width))
    tokens, rows, scores, history = None, None, None, None
    for t in range(max_length):
        logits, state = model.step(state, tokens)  # (B*W, V)
        if rows is None:  # first step: now we know the device
            rows = torch.arange(batch_size, device=logits.device)
            scores = torch.zeros(batch_size, width, device=logits.device)
            history = torch.zeros(max_length, batch_size, width, dtype=torch.long, device=logits.device)
        lprobs = torch.log_softmax(logits.float(), dim=-1).view(batch_size, width, -1)  # (B, W, V)
        scores, tokens_t, _ = strategy.step(t, lprobs, scores, rows)
        history[t] = tokens_t
        tokens = tokens_t.view(-1)
        if progress is not None:
            progress(t + 1, max_length)
    if bool(torch.isnan(scores).any()):
        raise ArcliError("the model produced invalid (NaN) probabilities")
    sequences, logprobs = history.permute(1, 2, 0).tolist(), scores.tolist()
    return [
        sorted((Hypothesis(seq, lp, strategy.final_score(lp, max_length)) for seq, lp in zip(sequences[row], logprobs[row], strict=True)),
               key=lambda h: h.score, reverse=True)[: strategy.nbest]
        for row in range(batch_size)
    ]


def _force_known(strategy, known: Known, t, rows, lprobs, scores, alive, cand_scores, cand_tokens, cand_beams, cand_alive):
    """Rows with a known value at step t take that value instead of the strategy's choice; its
    log-probability is still counted. An independent hypothesis lives on even through a value of
    probability 0 (its log-probability becomes -inf); a beam of log-probability -inf dies."""
    device = lprobs.device
    forced = known.mask[:, t].to(device).bool()[rows]  # (b,)
    b, width, _ = lprobs.shape
    value = known.values[:, t].to(device)[rows].view(b, 1).expand(b, width)  # (b, W)
    forced_scores = scores + lprobs.gather(2, value.unsqueeze(-1)).squeeze(-1)  # (b, W)
    forced_alive = torch.isfinite(forced_scores) if strategy.replaces_finished else alive

    def put(candidates, first_w, rest):  # forced rows: W candidates, one per hypothesis
        filled = torch.cat([first_w, rest.expand(b, candidates.shape[1] - width)], dim=1)
        return torch.where(forced.view(b, 1), filled, candidates)

    beams = torch.arange(width, device=device).expand(b, width)
    return (
        put(cand_scores, forced_scores, torch.tensor(NEG_INF, device=device).view(1, 1)),
        put(cand_tokens, value, torch.zeros(1, 1, dtype=cand_tokens.dtype, device=device)),
        put(cand_beams, beams, torch.zeros(1, 1, dtype=cand_beams.dtype, device=device)),
        put(cand_alive, forced_alive, torch.zeros(1, 1, dtype=torch.bool, device=device)),
    )


def _finalize(strategy, finished, rows, history, length, cand_scores, cand_tokens, cand_beams, which, uncapped=()):
    """Turn the candidates marked in `which` (b, C) into finished hypotheses of their rows. A beam
    row takes its first W finished hypotheses, except the rows in `uncapped` (at their length
    limit: the caller keeps the best of what ends there)."""
    if not bool(which.any()):
        return
    for i, c in which.nonzero().tolist():
        row = int(rows[i])
        if strategy.replaces_finished and row not in uncapped and len(finished[row]) >= strategy.width:
            continue
        if cand_tokens is None:  # max length reached: the hypothesis as it stands
            seq = history[i, c, :length].tolist()
        else:
            seq = history[i, int(cand_beams[i, c]), :length].tolist() + [int(cand_tokens[i, c])]
        logprob = float(cand_scores[i, c])
        finished[row].append(Hypothesis(seq, logprob, strategy.final_score(logprob, len(seq))))


def _keep_rows(model, state, keep, beams, rows, scores, alive, history, tokens_t, width):
    """Drop finished rows and move the model's state to follow the surviving beams."""
    all_kept = bool(keep.all())
    if beams is None and all_kept:
        return rows, scores, alive, history, tokens_t, state
    b = rows.numel()
    base = torch.arange(b, device=keep.device).unsqueeze(1) * width  # (b, 1)
    index = base + (beams if beams is not None else torch.arange(width, device=keep.device))  # (b, W)
    if not all_kept:
        index, rows, scores, alive = index[keep], rows[keep], scores[keep], alive[keep]
        history, tokens_t = history[keep], tokens_t[keep]
    if rows.numel():
        state = model.reorder(state, index.reshape(-1))
    return rows, scores, alive, history, tokens_t, state
