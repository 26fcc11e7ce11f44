"""What the binary-image families (FVSBN, NADE, MADE) share: their config's common fields, the
Bernoulli output as two-way logits, and the class labels they are conditioned on.

A binary image of H x W pixels is T = H * W tokens in raster order, each 0 (off) or 1 (on). Every
binary model computes one logit a_t per pixel, p(x_t = 1 | ...) = sigmoid(a_t), and hands the engine
the two-way logits [0, a_t]: softmax([0, a]) = (1 - sigmoid(a), sigmoid(a)), so sampling, scoring and
the cross-entropy of the image task are those of the Bernoulli.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from arcli.errors import OptionError


@dataclass
class BinaryImageConfig:
    """The fields every binary-image config starts with; the families add their own after them."""

    height: int = 28  # 28 x 28 is (Fashion-)MNIST
    width: int = 28
    num_classes: int = 0  # 0 = unconditional; > 0 = a label bias on every pixel's logit (and hidden units)

    # The image task's contract (arcli/image/contract.py): one channel of two levels.
    channels = 1
    levels = 2

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1 or self.height * self.width < 2:
            raise ValueError(f"{type(self).__name__}: images need at least 2 pixels, got {self.height}x{self.width}")
        if self.num_classes < 0:
            raise ValueError(f"{type(self).__name__}.num_classes must be >= 0, got {self.num_classes}")

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def fit(self, shape: tuple[int, int, int], classes: int) -> tuple[BinaryImageConfig, list[str]]:
        """This config with the data's image size and class count (colour data is made grey by the task)."""
        from arcli.image.contract import fit_fields

        return fit_fields(self, shape, classes), []


def bernoulli_logits(a: Tensor) -> Tensor:
    """Per-pixel logits a (...,) -> two-way logits (..., 2) = [0, a]: p(1) = sigmoid(a)."""
    return torch.stack([torch.zeros_like(a), a], -1)


def class_labels(condition: object, batch_size: int, num_classes: int, device: torch.device, name: str) -> Tensor | None:
    """Check `condition` -> class labels (B,) on `device`, or None for an unconditional model."""
    if num_classes == 0:
        if condition is not None:
            raise OptionError(f"this {name} is unconditional: it takes no class label")
        return None
    if condition is None:
        raise OptionError(f"this {name} is class-conditional: give a class label in [0, {num_classes})")
    labels = torch.as_tensor(condition, device=device)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise OptionError(f"class labels must be integers, got {labels.dtype}")
    if labels.dim() == 0 or labels.shape == (1,):
        labels = labels.reshape(1).expand(batch_size)  # one label for every row
    if labels.shape != (batch_size,):
        raise OptionError(f"expected {batch_size} class labels, got shape {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise OptionError(f"class labels must lie in [0, {num_classes}), got {sorted(set(labels.tolist()))}")
    return labels.long()


def check_tokens(tokens: Tensor, pixels: int, config: BinaryImageConfig) -> None:
    """Refuse tokens that are not (B, T) zeros and ones."""
    if tokens.dim() != 2 or tokens.shape[1] != pixels:
        raise ValueError(f"expected tokens of shape (B, {pixels}) for {config.height}x{config.width} binary images, got {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > 1):
        raise ValueError("binary image tokens must be 0 or 1")


def check_step(position: int, pixels: int, tokens: Tensor | None, batch_size: int) -> None:
    """The checks every binary model's `step` makes of its input."""
    if position >= pixels:
        raise ValueError(f"the image is complete: all {pixels} tokens have been given")
    if (tokens is None) != (position == 0):
        raise ValueError("step takes None at the first step, then the previous token of each row")
    if tokens is not None and tokens.shape != (batch_size,):
        raise ValueError(f"expected tokens of shape ({batch_size},), got {tuple(tokens.shape)}")
