"""The decoding engine: decoding options -> a strategy plus processors, one loop, any model."""

from arcli.decoding.engine import AutoregressiveModel, Hypothesis, Known, generate
from arcli.decoding.options import DecodingOptions, Search
from arcli.decoding.processors import (
    MinLength,
    NoRepeatNGram,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    apply_processors,
    history_processors,
    sampling_processors,
)
from arcli.decoding.strategies import STRATEGIES, BeamSearch, Candidates, Greedy, Sample, Strategy, make_strategy

__all__ = [
    "STRATEGIES", "AutoregressiveModel", "BeamSearch", "Candidates", "DecodingOptions", "Greedy", "Hypothesis", "Known",
    "MinLength", "NoRepeatNGram", "RepetitionPenalty", "Sample", "Search", "Strategy", "Temperature", "TopK", "TopP",
    "apply_processors", "generate", "history_processors", "make_strategy", "sampling_processors",
]
