"""Recurrent language models: an Elman RNN, a GRU or an LSTM over tokens (`--set cell=rnn|gru|lstm`).

    x_t = dropout(embed(token_{t-1}))            position 0 reads `eos_id`, the start token
    h_t = cell(x_t, h_{t-1})                     `layers` stacked cells, h_0 = 0 (and c_0 = 0)
    logits_t = W dropout(h_t) + b

with Elman's cell h_t = tanh(W_x x_t + W_h h_{t-1} + b), the GRU (Cho et al. 2014) or the LSTM
(Hochreiter & Schmidhuber 1997), all PyTorch's. `forward(tokens)[:, t]` scores `tokens[:, t]`
given `tokens[:, :t]`. The state is the cache: `step` runs the same recurrent module for one time
step from the state it is given, so each step costs the same whatever the position, and the two
views agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@dataclass
class RNNLMConfig:
    vocab_size: int = 257  # set from the tokenizer: UTF-8 bytes + end of line by default
    cell: str = "lstm"  # "rnn" (Elman, tanh), "gru" or "lstm"
    embed_dim: int = 64  # bytes need few dimensions; the recurrent width does the work
    hidden: int = 256  # the recurrent state's width (per layer)
    layers: int = 1  # stacked recurrent layers
    dropout: float = 0.1  # on the embeddings, between layers and before the output layer
    tokenizer: str = "bytes"  # "bytes" (UTF-8, lossless on any text) or "bpe" (trained on the data)
    pad_id: int = 0
    eos_id: int = 256  # ends a line; also the start token that position 0 sees

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_dim", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tokenizer not in ("bytes", "bpe"):
            raise ValueError(f"tokenizer must be 'bytes' or 'bpe', got {self.tokenizer!r}")
        if not 0 <= self.eos_id < self.vocab_size:
            raise ValueError(f"eos_id {self.eos_id} is outside the vocabulary of {self.vocab_size}")


class RNNState(NamedTuple):
    hidden: Tensor  # (layers, B, H)
    cell: Tensor | None  # (layers, B, H): the LSTM's memory cell; None for the RNN and the GRU
    started: bool  # whether the start token has been fed


class RNNLM(nn.Module):
    def __init__(self, config: RNNLMConfig):
        super().__init__()
        c = self.config = config
        self.vocab_size, self.eos_id, self.pad_id = c.vocab_size, c.eos_id, c.pad_id
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.rnn = CELLS[c.cell](c.embed_dim, c.hidden, num_layers=c.layers, batch_first=True, dropout=c.dropout if c.layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden, c.vocab_size)

    def _check_condition(self, condition: object) -> None:
        if condition is not None:
            raise ValueError("a recurrent language model takes no condition")

    def _recur(self, inputs: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
        """inputs: (B, T) token ids -> logits (B, T, V) and the state after the last of them."""
        x = self.drop(self.embed(inputs))  # (B, T, E)
        if state.cell is None:
            y, hidden = self.rnn(x, state.hidden)  # y: (B, T, H)
            cell = None
        else:
            y, (hidden, cell) = self.rnn(x, (state.hidden, state.cell))
        return self.out(self.drop(y)), RNNState(hidden, cell, True)

    def forward(self, tokens: Tensor, condition: object = None) -> Tensor:
        """tokens: (B, T) -> logits (B, T, V); [:, t] is the distribution of tokens[:, t] given tokens[:, :t]."""
        self._check_condition(condition)
        inputs = torch.cat([torch.full_like(tokens[:, :1], self.eos_id), tokens[:, :-1]], dim=1)  # (B, T)
        logits, _ = self._recur(inputs, self.start(tokens.shape[0]))
        return logits

    # --- incremental decoding ---------------------------------------------------------------

    def start(self, batch_size: int, condition: object = None) -> RNNState:
        self._check_condition(condition)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        zeros = self.embed.weight.new_zeros(self.config.layers, batch_size, self.config.hidden)  # (layers, B, H)
        return RNNState(zeros, zeros if self.config.cell == "lstm" else None, False)

    def step(self, state: RNNState, tokens: Tensor | None) -> tuple[Tensor, RNNState]:
        """tokens: (B,) the previous token of each row, None at the first step -> logits (B, V)."""
        if tokens is None:
            if state.started:
                raise ValueError("step(state, None) is only for the first step")
            tokens = torch.full((state.hidden.shape[1],), self.eos_id, dtype=torch.long)
        logits, state = self._recur(tokens.to(self.embed.weight.device).view(-1, 1), state)
        return logits[:, 0], state

    def reorder(self, state: RNNState, index: Tensor) -> RNNState:
        index = index.to(state.hidden.device)
        cell = None if state.cell is None else state.cell.index_select(1, index)
        return RNNState(state.hidden.index_select(1, index), cell, state.started)
