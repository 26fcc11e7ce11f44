"""NADE, the neural autoregressive distribution estimator (Larochelle & Murray 2011), on binary
images in raster order: one hidden layer whose weights every pixel shares.

    h_i = sigmoid(a_i),    a_i = c + W[:, :i] x_<i         (H hidden units)
    p(x_i = 1 | x_<i) = sigmoid(b_i + V_i . h_i)

Because the pixels before i+1 are those before i plus x_i, the pre-activations follow the recursion

    a_1 = c,    a_{i+1} = a_i + W[:, i] x_i

so each pixel costs O(H) and a whole image O(nH), against O(n^2 H) for computing every a_i from
scratch. `forward` gets every a_i at once by a cumulative sum over the pixels; `step` carries a_i
in its state and applies the recursion; `naive_logits` is the definition, computed pixel by pixel,
kept as the reference both are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from arcli.image.binary import BinaryImageConfig, bernoulli_logits, check_step, check_tokens, class_labels


@dataclass
class NADEConfig(BinaryImageConfig):
    hidden: int = 500  # the hidden layer of the NADE paper's binarised-MNIST model

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1:
            raise ValueError(f"NADEConfig.hidden must be >= 1, got {self.hidden}")

    def describe(self) -> dict[str, str]:
        return {
            "architecture": f"NADE: one sigmoid hidden layer of {self.hidden} units shared by every pixel (raster order)",
            "sampling cost": "O(H) per pixel: a_{i+1} = a_i + W[:, i] x_i",
        }


class NADEState(NamedTuple):
    pre: Tensor  # (B, H): a_t, the hidden pre-activation of the next pixel
    position: int  # pixels whose logits were given so far
    out_bias: Tensor  # (B, n): b plus the label's output bias


class NADE(nn.Module):
    eos_id = None  # fixed-length output: height * width pixels
    vocab_size = 2

    def __init__(self, config: NADEConfig):
        super().__init__()
        self.config = config
        n, H = config.pixels, config.hidden
        self.W = nn.Parameter(torch.randn(H, n) * n**-0.5)  # (H, n): input -> hidden, shared by all pixels
        self.c = nn.Parameter(torch.zeros(H))
        self.V = nn.Parameter(torch.randn(n, H) * H**-0.5)  # (n, H): hidden -> pixel i's logit
        self.b = nn.Parameter(torch.zeros(n))
        self.label_hidden = nn.Embedding(config.num_classes, H) if config.num_classes else None
        self.label_out = nn.Embedding(config.num_classes, n) if config.num_classes else None
        for embedding in (self.label_hidden, self.label_out):
            if embedding is not None:
                nn.init.zeros_(embedding.weight)

    @property
    def sequence_length(self) -> int:
        return self.config.pixels

    def _biases(self, labels: Tensor | None, batch_size: int) -> tuple[Tensor, Tensor]:
        """(c (B, H), b (B, n)) with the label's biases added."""
        c, b = self.c.expand(batch_size, -1), self.b.expand(batch_size, -1)
        if labels is None:
            return c, b
        return c + self.label_hidden(labels), b + self.label_out(labels)

    def forward(self, tokens: Tensor, condition: object = None) -> Tensor:
        """tokens: (B, n) pixels 0/1 in raster order; condition: class labels (B,) or None ->
        logits (B, n, 2); logits[:, i] predict tokens[:, i] from tokens[:, :i]."""
        check_tokens(tokens, self.config.pixels, self.config)
        B = tokens.shape[0]
        c, b = self._biases(class_labels(condition, B, self.config.num_classes, self.c.device, "NADE"), B)
        x = tokens.to(self.W.dtype)
        steps = x[:, :, None] * self.W.t()[None]  # (B, n, H): W[:, i] x_i, the term pixel i adds
        pre = c[:, None] + torch.cumsum(steps, 1) - steps  # (B, n, H): a_i, the sum over j < i
        a = b + (torch.sigmoid(pre) * self.V).sum(-1)  # (B, n)
        return bernoulli_logits(a)

    def naive_logits(self, tokens: Tensor, condition: object = None) -> Tensor:
        """The definition, one pixel at a time: a_i = c + W[:, :i] x_<i from scratch. O(n^2 H); tests only."""
        B = tokens.shape[0]
        c, b = self._biases(class_labels(condition, B, self.config.num_classes, self.c.device, "NADE"), B)
        x = tokens.to(self.W.dtype)
        columns = []
        for i in range(self.config.pixels):
            h = torch.sigmoid(c + x[:, :i] @ self.W[:, :i].t())  # (B, H)
            columns.append(b[:, i] + h @ self.V[i])
        return bernoulli_logits(torch.stack(columns, 1))

    @torch.inference_mode()
    def start(self, batch_size: int, condition: object = None) -> NADEState:
        labels = class_labels(condition, batch_size, self.config.num_classes, self.c.device, "NADE")
        c, b = self._biases(labels, batch_size)
        return NADEState(c.clone(), 0, b.contiguous())

    @torch.inference_mode()
    def step(self, state: NADEState, tokens: Tensor | None) -> tuple[Tensor, NADEState]:
        """tokens: (B,) the previous pixel of each row, None at the first step -> logits (B, 2) of
        the next pixel, and the new state."""
        pre, t, out_bias = state
        check_step(t, self.config.pixels, tokens, pre.shape[0])
        if tokens is not None:
            pre = pre + tokens.to(pre.dtype)[:, None] * self.W[:, t - 1]  # a_t = a_{t-1} + W[:, t-1] x_{t-1}
        a = out_bias[:, t] + torch.sigmoid(pre) @ self.V[t]  # (B,)
        return bernoulli_logits(a), NADEState(pre, t + 1, out_bias)

    @torch.inference_mode()
    def reorder(self, state: NADEState, index: Tensor) -> NADEState:
        index = index.to(state.pre.device)
        return NADEState(state.pre.index_select(0, index), state.position, state.out_bias.index_select(0, index))
