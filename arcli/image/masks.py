"""Masks for image completion: which pixels are hidden (True) and which are known.

`mask_pixels` turns a named mask (bottom, top, left, right, center, random) or a mask PNG (white =
hidden) into an (H, W) bool array for a model's image size; `known_first_order` gives an ordering
of the pixels in which every known pixel comes before every hidden one, for models that can
generate in any order (MADE), where completion is then exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from arcli.errors import DataError, OptionError

MASKS = ("bottom", "top", "left", "right", "center", "random")


def mask_pixels(mask: str, size: tuple[int, int], seed: int) -> np.ndarray:
    """The hidden pixels (H, W) bool of a named mask or a mask PNG (white = hidden)."""
    height, width = size
    rows, columns = np.indices(size)
    if mask == "bottom":
        hidden = rows >= height - height // 2
    elif mask == "top":
        hidden = rows < height // 2
    elif mask == "left":
        hidden = columns < width // 2
    elif mask == "right":
        hidden = columns >= width - width // 2
    elif mask == "center":
        top, left = height // 4, width // 4
        hidden = (rows >= top) & (rows < top + height // 2) & (columns >= left) & (columns < left + width // 2)
    elif mask == "random":
        hidden = (torch.rand(size, generator=torch.Generator().manual_seed(seed)) < 0.5).numpy()
    else:
        hidden = _mask_file(Path(mask), size)
    if not hidden.any():
        raise OptionError(f"--mask {mask} hides no pixel of a {height}x{width} image: nothing to complete")
    if hidden.all():
        raise OptionError(f"--mask {mask} hides every pixel: nothing is left to complete from (use `arcli sample` for new images)")
    return hidden


def _mask_file(path: Path, size: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise OptionError(f"--mask {path}: expected {', '.join(MASKS)}, or a mask PNG file (white = hidden), and there is no such file")
    try:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"))
    except UnidentifiedImageError:
        raise DataError(f"--mask {path}: not an image Pillow can read (a mask is a PNG, white = hidden)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"--mask {path}: cannot read the image: {error}") from None
    if grey.shape != size:
        raise DataError(
            f"mask '{path}' is {grey.shape[0]}x{grey.shape[1]}, but this model's images are {size[0]}x{size[1]}: "
            "draw the mask at the model's size (white = hidden)"
        )
    return grey >= 128


def known_first_order(hidden: np.ndarray) -> torch.Tensor:
    """(T,) long: the known pixels of an (H, W) mask in raster order, then the hidden ones in raster order."""
    flat = torch.from_numpy(np.ascontiguousarray(hidden).reshape(-1))
    return torch.cat([(~flat).nonzero()[:, 0], flat.nonzero()[:, 0]])
