"""Ancestral sampling for models without a token vocabulary (continuous outputs), beside the engine.

The engine (arcli/decoding/engine.py) searches over tokens through logits; a model whose outputs
are real-valued frames (a VRNN, RNN-Gauss) has no logits to search. DESIGN.md's exception for
such models is this small path: the model draws its own next frame from the noise it is given,

    class ContinuousModel(Protocol):
        frame_size: int
        def start(self, batch_size, condition=None) -> State
        def sample_step(self, state, noise: RowNoise, temperature: float) -> tuple[Tensor (B, frame_size), State]

and `sample_frames` runs it step by step. As in the engine, each row draws from its own random
stream, derived from (seed, row_offset + row), so a row gives the same frames alone or inside any
batch, and no global random state is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor


class ContinuousModel(Protocol):
    frame_size: int

    def start(self, batch_size: int, condition: Any = None) -> Any: ...

    def sample_step(self, state: Any, noise: RowNoise, temperature: float) -> tuple[Tensor, Any]: ...


def row_seed(seed: int, row: int) -> int:
    """A well-mixed 63-bit seed for the random stream of (seed, row)."""
    words = np.random.SeedSequence([seed % 2**64, row, 0x5EED]).generate_state(2, np.uint32)
    return (int(words[0]) << 31 ^ int(words[1])) % 2**63


class RowNoise:
    """Standard normal and uniform numbers, each row from its own generator: normal(n) -> (B, n)."""

    def __init__(self, seed: int, batch_size: int, device: torch.device | str = "cpu", row_offset: int = 0):
        self.generators = [torch.Generator().manual_seed(row_seed(seed, row_offset + row)) for row in range(batch_size)]
        self.device = torch.device(device)

    def normal(self, size: int) -> Tensor:
        return torch.stack([torch.randn(size, generator=g) for g in self.generators]).to(self.device)

    def uniform(self, size: int) -> Tensor:
        return torch.stack([torch.rand(size, generator=g) for g in self.generators]).to(self.device)


@torch.no_grad()
def sample_frames(
    model: ContinuousModel,
    steps: int,
    batch_size: int,
    *,
    condition: Any = None,
    seed: int,
    temperature: float = 1.0,
    row_offset: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """`steps` frames per row, drawn one at a time: (B, steps, frame_size). `temperature` scales
    the spread of each frame's output distribution (1: the model's own)."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = next(iter(model.parameters())).device if isinstance(model, torch.nn.Module) else torch.device("cpu")
    noise = RowNoise(seed, batch_size, device, row_offset)
    state = model.start(batch_size, condition)
    frames = []
    for step in range(steps):
        frame, state = model.sample_step(state, noise, temperature)
        frames.append(frame)
        if progress is not None:
            progress(step + 1, steps)
    return torch.stack(frames, 1)


class GaussianSteps(torch.nn.Module):
    """A model whose `step(state, previous)` gives the mean and log-scale (B, 2) of the next scalar
    sample from the previous samples (B,) (None first), as a `ContinuousModel` of frames of one
    sample, for `sample_frames`: a WaveNet with a gaussian head (arcli/models/wavenet.py). Each draw
    is mean + temperature * scale * N(0, 1), clipped to [-1, 1] (the waveform's range), and is fed
    back as the next step's input."""

    frame_size = 1

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def start(self, batch_size: int, condition: Any = None) -> tuple[Any, Tensor | None]:
        return self.model.start(batch_size, condition), None

    def sample_step(self, state: tuple[Any, Tensor | None], noise: RowNoise, temperature: float) -> tuple[Tensor, Any]:
        inner, previous = state
        params, inner = self.model.step(inner, previous)  # (B, 2)
        drawn = (params[:, 0] + temperature * params[:, 1].exp() * noise.normal(1)[:, 0].to(params.dtype)).clamp(-1.0, 1.0)  # (B,)
        return drawn[:, None], (inner, drawn)
