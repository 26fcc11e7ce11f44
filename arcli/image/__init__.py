"""Images: quantisation of 8-bit sub-pixels into a model's levels, and image file I/O (`io`).

Inside arcli an image is a uint8 array (H, W, C), C = 1 (grey) or 3 (R, G, B), and a batch of them
is (N, H, W, C). A model sees an image as T = H * W * C tokens in raster order with the sub-pixels
of a pixel innermost (R, G, B): exactly `pixels.reshape(N, -1)`.
"""

from __future__ import annotations

import numpy as np
import torch


def pixels_to_tokens(pixels: np.ndarray, levels: int) -> torch.Tensor:
    """uint8 pixels (N, H, W, C) -> tokens (N, H*W*C) in [0, levels): value * levels // 256, so
    256 levels keep the values as they are. uint8 when the levels fit, else int32."""
    if pixels.dtype != np.uint8 or pixels.ndim != 4:
        raise ValueError(f"pixels must be a uint8 array (N, H, W, C), got {pixels.dtype} {pixels.shape}")
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    flat = torch.from_numpy(np.ascontiguousarray(pixels).reshape(len(pixels), -1))
    if levels == 256:
        return flat.clone()
    tokens = flat.to(torch.int32) * levels // 256
    return tokens.to(torch.uint8) if levels <= 256 else tokens


def tokens_to_pixels(tokens: torch.Tensor, shape: tuple[int, int, int], levels: int) -> np.ndarray:
    """tokens (N, H*W*C) in [0, levels) -> uint8 pixels (N, H, W, C): 0 -> 0, levels-1 -> 255,
    evenly spaced between."""
    values = tokens.detach().to("cpu", torch.int64)
    if levels != 256:
        values = torch.round(values.double() * (255 / (levels - 1))).long()
    return values.clamp(0, 255).to(torch.uint8).numpy().reshape(len(values), *shape)
