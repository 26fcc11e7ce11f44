"""The decoding engine: one loop, pluggable strategies and logits processors, any model."""

from arcli.decoding.engine import AutoregressiveModel, Hypothesis, Known, generate
from arcli.decoding.processors import Temperature, TopK, TopP, apply_processors, sampling_processors
from arcli.decoding.strategies import STRATEGIES, BeamSearch, Greedy, Sample, Strategy, make_strategy

__all__ = [
    "STRATEGIES", "AutoregressiveModel", "BeamSearch", "Greedy", "Hypothesis", "Known", "Sample",
    "Strategy", "Temperature", "TopK", "TopP", "apply_processors", "generate", "make_strategy",
    "sampling_processors",
]
