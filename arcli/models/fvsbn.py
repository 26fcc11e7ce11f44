"""FVSBN, the fully visible sigmoid belief network (Frey 1998; the baseline of Larochelle & Murray
2011): one logistic regression per pixel of a binary image, on the pixels before it in raster order.

    p(x_i = 1 | x_<i) = sigmoid(a_i),    a_i = b_i + sum_{j<i} W_ij x_j

W is strictly lower-triangular, so an image of n pixels has n(n-1)/2 weights and n biases:
n(n+1)/2 parameters (plus a bias per class and pixel for a class-conditional model). The weights
are stored packed (row by row of the lower triangle) so the count is exactly that.

Two views: `forward` computes every a_i at once (x @ W^T); `step` keeps the running pre-activations
of every pixel, a = b + sum of W[:, j] x_j over the pixels seen so far, and adds one column of W
per new pixel: O(n) per step, O(n^2) for a whole image (recomputing each a_i from scratch would be
O(n^2) per step and O(n^3) per image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from arcli.image.binary import BinaryImageConfig, bernoulli_logits, check_step, check_tokens, class_labels


@dataclass
class FVSBNConfig(BinaryImageConfig):
    """Nothing to choose beyond the image size and classes: the model is all the pixel pairs."""

    def describe(self) -> dict[str, str]:
        n = self.pixels
        return {
            "architecture": f"FVSBN: one logistic regression per pixel on the pixels before it (raster order); "
            f"{n * (n - 1) // 2:,} weights + {n:,} biases = n(n+1)/2 for n = {n}",
            "sampling cost": "O(n) per pixel (running pre-activations), O(n^2) per image",
        }


class FVSBNState(NamedTuple):
    pre: Tensor  # (B, n): every pixel's pre-activation from the pixels seen so far
    position: int  # pixels whose logits were given so far
    weight: Tensor  # (n, n) the dense lower-triangular W, taken at start()


class FVSBN(nn.Module):
    eos_id = None  # fixed-length output: height * width pixels
    vocab_size = 2

    def __init__(self, config: FVSBNConfig):
        super().__init__()
        self.config = config
        n = config.pixels
        self.weight = nn.Parameter(torch.zeros(n * (n - 1) // 2))  # W_ij for j < i, row by row
        self.bias = nn.Parameter(torch.zeros(n))
        self.label = nn.Embedding(config.num_classes, n) if config.num_classes else None
        if self.label is not None:
            nn.init.zeros_(self.label.weight)
        rows, columns = torch.tril_indices(n, n, -1)
        self.register_buffer("rows", rows, persistent=False)  # rebuilt from the config, not saved
        self.register_buffer("columns", columns, persistent=False)

    @property
    def sequence_length(self) -> int:
        return self.config.pixels

    def dense_weight(self) -> Tensor:
        """W as an (n, n) matrix, zero on and above the diagonal."""
        n = self.config.pixels
        return self.weight.new_zeros(n, n).index_put((self.rows, self.columns), self.weight)

    def _bias(self, labels: Tensor | None, batch_size: int) -> Tensor:
        """(B, n): the pixels' biases plus the label's."""
        bias = self.bias.expand(batch_size, -1)
        return bias if labels is None else bias + self.label(labels)

    def forward(self, tokens: Tensor, condition: object = None) -> Tensor:
        """tokens: (B, n) pixels 0/1 in raster order; condition: class labels (B,) or None ->
        logits (B, n, 2); logits[:, i] predict tokens[:, i] from tokens[:, :i]."""
        check_tokens(tokens, self.config.pixels, self.config)
        labels = class_labels(condition, tokens.shape[0], self.config.num_classes, self.bias.device, "FVSBN")
        a = self._bias(labels, tokens.shape[0]) + tokens.to(self.weight.dtype) @ self.dense_weight().t()  # (B, n)
        return bernoulli_logits(a)

    @torch.inference_mode()
    def start(self, batch_size: int, condition: object = None) -> FVSBNState:
        labels = class_labels(condition, batch_size, self.config.num_classes, self.bias.device, "FVSBN")
        return FVSBNState(self._bias(labels, batch_size).clone(), 0, self.dense_weight())

    @torch.inference_mode()
    def step(self, state: FVSBNState, tokens: Tensor | None) -> tuple[Tensor, FVSBNState]:
        """tokens: (B,) the previous pixel of each row, None at the first step -> logits (B, 2) of
        the next pixel, and the new state."""
        pre, t, weight = state
        check_step(t, self.config.pixels, tokens, pre.shape[0])
        if tokens is not None:
            pre = pre + tokens.to(pre.dtype)[:, None] * weight[:, t - 1]  # (B, n): pixel t-1 joins every later sum
        return bernoulli_logits(pre[:, t]), FVSBNState(pre, t + 1, weight)

    @torch.inference_mode()
    def reorder(self, state: FVSBNState, index: Tensor) -> FVSBNState:
        return FVSBNState(state.pre.index_select(0, index.to(state.pre.device)), state.position, state.weight)
