"""Temporal convolutional network (Bai, Kolter & Koltun 2018, "An Empirical Evaluation of Generic
Convolutional and Recurrent Networks for Sequence Modeling") as a language model over tokens.

A stack of residual blocks; block i has dilation d = 2^i (i = 0 .. levels-1) and computes, on its
input x (B, T, C),

    conv_d(x)_t = b + sum_{j=0}^{k-1} W_j x_{t-(k-1-j) d}          causal, x_{<0} = 0 (zero padding)
    h = dropout(relu(norm(conv_d(x))))
    h = dropout(relu(norm(conv_d'(h))))                                a second conv, same dilation
    y = relu(x + h)

`norm` is weight normalisation of each conv's kernel (W = g v / ||v||, the paper's choice), layer
normalisation over channels, or nothing (`--set norm=weight|layer|none`). Tokens are embedded to
C channels, and a linear layer reads the logits from the last block. The receptive field is
1 + 2 (k-1) (2^levels - 1) tokens.

Shift convention (as the Transformer's): the input at position t is token t-1, and position 0 sees
`eos_id` as a start token, so `forward(tokens)[:, t]` scores `tokens[:, t]` given `tokens[:, :t]`.

Incremental view: each conv keeps a queue of its last (k-1) d inputs (the per-layer queues of Fast
WaveNet, Paine et al. 2016). A step reads k-1 of them, writes the new input over the oldest, and
costs the same at every position. The queues start at zero, which is the convolutions' zero padding,
so `step` and `forward` compute the same numbers; `forward` is the plain reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("weight", "layer", "none")

# -------------------------------------------------------------------------------------------------
# building blocks


class CausalConv(nn.Module):
    """A dilated causal convolution over time-major input (B, T, C), as k matrix products (one per
    tap): on a CPU this avoids Conv1d's im2col copies and the (B, C, T) transposes.

    With weight normalisation the kernel is `weight_g * weight_v / ||weight_v||` (norm per output
    channel), initialised to weight_v itself."""

    def __init__(self, channels: int, kernel: int, dilation: int, weight_norm: bool):
        super().__init__()
        self.kernel, self.dilation = kernel, dilation
        # weight_v[:, :, j] multiplies x_{t-(k-1-j) d}; N(0, 0.01) as in the paper.
        self.weight_v = nn.Parameter(torch.randn(channels, channels, kernel) * 0.01)  # (C_out, C_in, k)
        self.weight_g = nn.Parameter(self.weight_v.detach().norm(dim=(1, 2), keepdim=True)) if weight_norm else None  # (C_out, 1, 1)
        self.bias = nn.Parameter(torch.zeros(channels))

    @property
    def span(self) -> int:
        """How far back the oldest tap reaches: the length of this conv's queue."""
        return (self.kernel - 1) * self.dilation

    def weight(self) -> Tensor:
        """The kernel (C_out, C_in, k) in use."""
        if self.weight_g is None:
            return self.weight_v
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(1, 2), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, C_in) -> (B, T, C_out), position t reading x_t, x_{t-d}, ..., zero before 0."""
        weight, T = self.weight(), x.shape[1]
        y = F.linear(x, weight[:, :, -1], self.bias)  # the current input's tap
        for j in range(self.kernel - 1):
            shift = (self.kernel - 1 - j) * self.dilation
            if shift < T:
                y = y + F.pad(F.linear(x[:, : T - shift], weight[:, :, j]), (0, 0, shift, 0))  # (B, T, C_out)
        return y


class TemporalBlock(nn.Module):
    """Two causal convs of one dilation, each followed by norm, ReLU and dropout; a residual around both."""

    def __init__(self, config: TCNConfig, dilation: int):
        super().__init__()
        C, k, weight_norm = config.channels, config.kernel_size, config.norm == "weight"
        self.conv1 = CausalConv(C, k, dilation, weight_norm)
        self.conv2 = CausalConv(C, k, dilation, weight_norm)
        self.norm1 = nn.LayerNorm(C) if config.norm == "layer" else nn.Identity()
        self.norm2 = nn.LayerNorm(C) if config.norm == "layer" else nn.Identity()
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        h = self.drop(F.relu(self.norm1(self.conv1(x))))
        h = self.drop(F.relu(self.norm2(self.conv2(h))))
        return F.relu(x + h)


# -------------------------------------------------------------------------------------------------
# config


@dataclass
class TCNConfig:
    vocab_size: int = 257  # set from the tokenizer: UTF-8 bytes + end of line by default
    channels: int = 128  # width of every block (and of the embedding); the paper's char-level PTB model has 450
    levels: int = 6  # blocks, dilations 1, 2, ..., 32: receptive field 253 tokens with kernel 3
    kernel_size: int = 3  # the paper's value for character-level language modelling
    norm: str = "weight"  # "weight" (the paper's), "layer" (over channels) or "none"
    dropout: float = 0.1  # after every ReLU inside the blocks and on the embedding, as the paper
    tokenizer: str = "bytes"  # "bytes" (UTF-8, lossless on any text) or "bpe" (trained on the data)
    pad_id: int = 0
    eos_id: int = 256  # ends a line; also the start token that position 0 sees

    def __post_init__(self) -> None:
        for name in ("vocab_size", "channels", "levels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2 (1 sees no past), got {self.kernel_size}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tokenizer not in ("bytes", "bpe"):
            raise ValueError(f"tokenizer must be 'bytes' or 'bpe', got {self.tokenizer!r}")
        if not 0 <= self.eos_id < self.vocab_size:
            raise ValueError(f"eos_id {self.eos_id} is outside the vocabulary of {self.vocab_size}")


# -------------------------------------------------------------------------------------------------
# model


class TCNState(NamedTuple):
    """Decoding state of B rows. `step` writes into the queues and returns a new TCNState around
    them, so a state must not be stepped twice; `reorder` returns an independent one."""

    queues: list[Tensor]  # per conv, in order: (span, B, C), row s % span holds that conv's input at time s
    position: int  # tokens fed so far (the start token counts as one)
    batch_size: int
    kernels: list[Tensor]  # per conv: its kernel (C_out, C_in, k), weight norm applied once at `start`


class TCN(nn.Module):
    def __init__(self, config: TCNConfig):
        super().__init__()
        self.config = config
        self.vocab_size, self.eos_id, self.pad_id = config.vocab_size, config.eos_id, config.pad_id
        self.embed = nn.Embedding(config.vocab_size, config.channels)
        self.blocks = nn.ModuleList(TemporalBlock(config, 2**i) for i in range(config.levels))
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.channels, config.vocab_size)

    @property
    def receptive_field(self) -> int:
        """Tokens the logits at position t depend on: t-receptive_field .. t-1 (the start token before 0)."""
        return 1 + sum(conv.span for block in self.blocks for conv in (block.conv1, block.conv2))

    def _check_condition(self, condition: object) -> None:
        if condition is not None:
            raise ValueError("a TCN language model takes no condition")

    def forward(self, tokens: Tensor, condition: object = None) -> Tensor:
        """tokens: (B, T) -> logits (B, T, V); [:, t] is the distribution of tokens[:, t] given tokens[:, :t]."""
        self._check_condition(condition)
        inputs = torch.cat([torch.full_like(tokens[:, :1], self.eos_id), tokens[:, :-1]], dim=1)  # (B, T)
        x = self.drop(self.embed(inputs))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.out(x)  # (B, T, V)

    # --- incremental decoding ---------------------------------------------------------------

    def _convs(self) -> list[tuple[CausalConv, nn.Module]]:
        return [pair for block in self.blocks for pair in ((block.conv1, block.norm1), (block.conv2, block.norm2))]

    def start(self, batch_size: int, condition: object = None) -> TCNState:
        """Zero queues, as the convolutions' zero padding before position 0."""
        self._check_condition(condition)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        like = self.embed.weight
        with torch.no_grad():
            kernels = [conv.weight().detach() for conv, _ in self._convs()]
        queues = [like.new_zeros(conv.span, batch_size, self.config.channels) for conv, _ in self._convs()]
        return TCNState(queues, 0, batch_size, kernels)

    @torch.no_grad()
    def step(self, state: TCNState, tokens: Tensor | None) -> tuple[Tensor, TCNState]:
        """tokens: (B,) the previous token of each row, None at the first step -> logits (B, V)."""
        device, t = self.embed.weight.device, state.position
        if tokens is None:
            if t:
                raise ValueError("step(state, None) is only for the first step")
            tokens = torch.full((state.batch_size,), self.eos_id, dtype=torch.long, device=device)
        x = self.embed(tokens.to(device))  # (B, C)
        convs = iter(zip(self._convs(), state.queues, state.kernels, strict=True))
        for _block in self.blocks:
            block_input = x
            for _ in range(2):  # conv1 then conv2 of this block
                (conv, norm), queue, weight = next(convs)
                x = F.relu(norm(self._conv_step(conv, weight, queue, x, t)))
            x = F.relu(block_input + x)
        return self.out(x), state._replace(position=t + 1)

    @staticmethod
    def _conv_step(conv: CausalConv, weight: Tensor, queue: Tensor, x: Tensor, t: int) -> Tensor:
        """The conv's output at time t from its input x_t (B, C) and its queue, which then takes x_t."""
        span = conv.span
        y = F.linear(x, weight[:, :, -1], conv.bias)
        for j in range(conv.kernel - 1):
            y = y + F.linear(queue[(t - (conv.kernel - 1 - j) * conv.dilation) % span], weight[:, :, j])
        queue[t % span] = x  # x_{t-span}, the oldest, was read above and is no longer needed
        return y

    def reorder(self, state: TCNState, index: Tensor) -> TCNState:
        index = index.to(self.embed.weight.device)
        return state._replace(queues=[q.index_select(1, index) for q in state.queues], batch_size=index.numel())
