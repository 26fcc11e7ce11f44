"""The small contract between the image task and an image family: what a config and a model offer
so that one task trains, samples, scores and completes every image family.

A config (`ImageConfig`) gives the image shape, the levels per sub-pixel and the class count, the
lines `arcli models info` prints about its architecture, and how it fits itself to training data.
A model gives `forward(tokens, condition)` over raster-order tokens (B, T) -> logits (B, T, levels),
the engine's `start`/`step`/`reorder`, and `sequence_length`.

Models that are mixtures over several autoregressive orderings (MADE trained with K orderings) also
offer `orderings` (K), `forward(..., ordering=k)` (the logits of each raster position given its
predecessors in ordering k) and `in_order(k or a permutation)`: a model whose sequence positions
follow that ordering, for the engine. The task then scores the mixture (log of the mean probability
over the K orderings), samples each image under one ordering drawn uniformly, and completes any mask
exactly by generating in an ordering that puts every known pixel first.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import torch
import torch.nn.functional as F

from arcli.errors import OptionError
from arcli.image.io import describe_shape


class ImageConfig(Protocol):
    height: int
    width: int
    channels: int  # 1 grey, 3 RGB
    levels: int  # values per sub-pixel (2 for binary images)
    num_classes: int  # 0 = unconditional

    def describe(self) -> dict[str, str]:
        """Lines for `arcli models info` about the architecture (the task adds shape, levels, classes)."""
        ...

    def fit(self, shape: tuple[int, int, int], classes: int) -> tuple[ImageConfig, list[str]]:
        """This config fitted to training data of `shape` (H, W, C) with `classes` classes, and notes
        for stderr; refuses (OptionError) a value the user set that disagrees with the data."""
        ...


def image_shape(config: ImageConfig) -> tuple[int, int, int]:
    return config.height, config.width, config.channels


def fit_fields(config, shape: tuple[int, int, int], classes: int):
    """`config` with height, width, num_classes (and channels, where it is a field) taken from the
    data. A field the user --set to a value other than its default and the data's is refused."""
    defaults = type(config)()
    height, width, channels = shape
    wanted = {"height": height, "width": width, "num_classes": classes}
    fields = {f.name for f in dataclasses.fields(config)}
    if "channels" in fields:
        wanted["channels"] = channels
    for key, value in wanted.items():
        given = getattr(config, key)
        if given not in (value, getattr(defaults, key)):
            what = (f"the data has {classes} classes" if classes else "the data has no class labels (class sub-folders or an IDX labels file)") \
                if key == "num_classes" else f"the images are {describe_shape(shape)}"
            raise OptionError(f"--set {key}={given}, but {what}: leave {key} out (it is taken from the data)")
    return dataclasses.replace(config, **wanted)


def orderings(model: torch.nn.Module) -> int:
    """How many autoregressive orderings the model averages over (1: raster order only)."""
    return int(getattr(model, "orderings", 1))


def training_ordering(config):
    """The config's `training_ordering(generator)` (what each training batch of a model with
    several orderings trains), or None for a model of one ordering."""
    return getattr(config, "training_ordering", None)


def any_order(model: torch.nn.Module) -> bool:
    """Whether the model can generate in any ordering of its positions (`in_order`)."""
    return callable(getattr(model, "in_order", None))


def token_nats(model: torch.nn.Module, tokens: torch.Tensor, labels: torch.Tensor | None, ordering: int | None = None) -> torch.Tensor:
    """-log p of every sub-pixel in nats, (B, T): tokens (B, T), labels (B,) or None; `ordering`
    picks one ordering of a mixture model (None: the model's plain forward)."""
    logits = model(tokens, labels) if ordering is None else model(tokens, labels, ordering=ordering)  # (B, T, V)
    if logits.dtype != torch.float64:
        logits = logits.float()  # half-precision weights or autocast: the loss in float32
    return F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")


def mixture_nats(model: torch.nn.Module, tokens: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(-log p(image) in nats (B,), per-sub-pixel nats (B, T)) of one image per row. A model with K
    orderings is the uniform mixture of them: -log (1/K) sum_k p_k(image); the per-sub-pixel nats
    are then those of the first ordering (raster order for MADE)."""
    count = orderings(model)
    if count == 1:
        per_token = token_nats(model, tokens, labels).double()
        return per_token.sum(1), per_token
    each = [token_nats(model, tokens, labels, ordering=k).double() for k in range(count)]
    totals = torch.stack([nats.sum(1) for nats in each])  # (K, B)
    return math.log(count) - torch.logsumexp(-totals, 0), each[0]


def image_nats(model: torch.nn.Module, tokens: torch.Tensor, labels: list[int | None], classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(-log p(image) in nats (B,), per-sub-pixel nats (B, T)). A model with several orderings
    scores their mixture (`mixture_nats`). Unknown labels of a conditional model: -log mean_y
    p(image | y); the per-sub-pixel nats are then those of the likeliest class."""
    if classes == 0:
        return mixture_nats(model, tokens, None)
    known = torch.tensor([-1 if label is None else label for label in labels], device=tokens.device)
    nats, per_token = mixture_nats(model, tokens, known.clamp(min=0))  # (B,), (B, T)
    unknown = known < 0
    if bool(unknown.any()):
        rows = tokens[unknown]
        each = [mixture_nats(model, rows, torch.full((len(rows),), y, device=tokens.device)) for y in range(classes)]
        totals = torch.stack([total for total, _ in each])  # (K, b)
        nats[unknown] = math.log(classes) - torch.logsumexp(-totals, 0)
        per_token[unknown] = torch.stack([part for _, part in each])[totals.argmin(0), torch.arange(len(rows), device=tokens.device)]
    return nats, per_token
