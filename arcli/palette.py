"""One colour scale for every picture of a quantity (spectrograms, per-pixel surprise heatmaps).

A dark-to-bright palette in the spirit of matplotlib's "inferno": black, purple, red, orange, pale
yellow. Brightness rises steadily, so the quantity reads the same in colour and in grey.
"""

from __future__ import annotations

import numpy as np

_STOPS = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float64,
)


def palette(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB colours (shape + (3,)), linear between the stops."""
    positions = np.clip(values, 0.0, 1.0) * (len(_STOPS) - 1)
    lower = np.floor(positions).astype(int).clip(max=len(_STOPS) - 2)
    fraction = (positions - lower)[..., None]
    colours = _STOPS[lower] * (1 - fraction) + _STOPS[lower + 1] * fraction
    return colours.round().astype(np.uint8)
