"""An arcli plugin in one file: a byte-level bigram language model.

Installing this package (`pip install examples/plugin`) registers the model `bigram` through the
`arcli.models` entry-point group; then every subcommand serves it:

    arcli train bigram --data corpus.txt -o bigram.safetensors --steps 300
    arcli sample bigram -c bigram.safetensors --prompt "In the beginning" -n 3
    arcli score-likelihood bigram -c bigram.safetensors test.txt
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from arcli.registry import ModelFamily
from arcli.tasks.text import TextTask


@dataclass
class BigramConfig:
    vocab_size: int = 257  # UTF-8 bytes + end-of-line, arcli's byte tokenizer


class Bigram(nn.Module):
    """p(x_t | x_<t) = softmax(table[x_{t-1}]), and softmax(first) for the first token."""

    def __init__(self, config: BigramConfig) -> None:
        super().__init__()
        self.vocab_size = config.vocab_size
        self.eos_id = config.vocab_size - 1
        self.first = nn.Parameter(torch.zeros(config.vocab_size))
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)
        nn.init.zeros_(self.table.weight)

    def forward(self, tokens: torch.Tensor, condition=None) -> torch.Tensor:
        """tokens: (B, T) -> logits (B, T, V); logits[:, t] scores tokens[:, t]."""
        batch = tokens.shape[0]
        first = self.first.expand(batch, 1, -1)  # (B, 1, V)
        return torch.cat([first, self.table(tokens[:, :-1])], dim=1)

    def start(self, batch_size: int, condition=None) -> int:
        return batch_size  # a bigram model needs nothing but the previous token

    def step(self, state, tokens):
        if tokens is None:
            return self.first.expand(state, -1), state
        return self.table(tokens), tokens.shape[0]

    def reorder(self, state, index):
        return index.numel()


family = ModelFamily(
    name="bigram",
    modality="text",
    summary="byte bigram language model (example plugin)",
    config_class=BigramConfig,
    model_class=Bigram,
    task=TextTask(),
)
