"""Decoding options: the one road from what a user asked for to what the engine runs.

`DecodingOptions` holds every decoding option a command takes; `build` turns it into a `Search`,
the strategy object plus the history processors, which is what `generate` takes. Lengths
(`max_length`, `min_length`) are counted by each task in its own units (new tokens after a
prompt, target tokens per source token ...), and a `prefix` is text only a task can tokenize, so
a task reads those and hands the engine numbers (lengths, known positions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

from arcli.decoding.processors import LogitsProcessor, history_processors
from arcli.decoding.strategies import Strategy, make_strategy


class Search(NamedTuple):
    """What `generate` runs: the strategy and the processors every strategy's scores pass through."""

    strategy: Strategy
    processors: list[LogitsProcessor] = []


@dataclass(frozen=True)
class DecodingOptions:
    """The decoding options of every generating command; `None` means "off" or "the default"."""

    strategy: str | None = None  # None: the task's default strategy
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    beam_size: int = 5
    nbest: int = 1
    length_penalty: float = 1.0
    max_length: int | None = None
    min_length: int = 0
    no_repeat_ngram: int | None = None
    repetition_penalty: float | None = None
    prefix: str | None = None  # the start of every output (translation), forced through known positions
    seed: int | None = None

    def build(self, default: str = "greedy", *, nbest: int | None = None, seed: int | None = None) -> Search:
        """The strategy (`self.strategy`, else `default`) and its processors; checks every value
        (an `OptionError` with the option's name) and touches no global random state."""
        strategy = make_strategy(
            self.strategy or default, beam_size=self.beam_size, nbest=self.nbest if nbest is None else nbest,
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            length_penalty=self.length_penalty, seed=self.seed if seed is None else seed,
        )
        processors = history_processors(no_repeat_ngram=self.no_repeat_ngram, repetition_penalty=self.repetition_penalty)
        return Search(strategy, processors)

    def given(self) -> list[str]:
        """The options set away from their defaults, as `--option` names (for the option check)."""
        return ["--" + item.name.replace("_", "-") for item in dataclasses.fields(self) if getattr(self, item.name) != item.default]
