"""Training curves as a PNG, drawn with Pillow: the training and held-out likelihood of a run,
read from its metrics log (`arcli.metrics_log`), in the model's unit.

    arcli models info my.safetensors --plot curve.png
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from arcli.errors import ArcliError
from arcli.outputs import atomic_path

SIZE = (800, 480)
MARGINS = (64, 36, 16, 40)  # left, top, right, bottom: room for the axes, their labels and the title
TRAIN_COLOUR = (31, 119, 180)  # blue
VALID_COLOUR = (230, 97, 1)  # orange


def nice_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) covering [low, high], at most `most` of
    them, the first at or below `low` and the last at or above `high`:
    nice_ticks(0.3, 4.2) == [0, 1, 2, 3, 4, 5]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high < low or most < 2:
        raise ValueError(f"need finite low <= high and most >= 2, got {low}, {high}, {most}")
    if high == low:
        low, high = low - 0.5, high + 0.5
    span = high - low
    for power in range(math.floor(math.log10(span / most)) - 1, math.ceil(math.log10(span)) + 2):
        for factor in (1, 2, 5):
            step = factor * 10.0**power
            first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
            if last - first + 1 <= most:
                return [round(i * step, 12) for i in range(first, last + 1)]
    raise AssertionError("unreachable: a step of 10 ** ceil(log10(span)) always fits")


def curves(records: Sequence[dict], unit: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(training, held-out) points (step, value in `unit`) of a metrics log's records."""
    key = unit.replace("/", "_per_")
    train = [(r["step"], r[f"train_{key}"]) for r in records if r.get("kind") == "train" and isinstance(r.get(f"train_{key}"), (int, float))]
    valid = [(r["step"], r[f"valid_{key}"]) for r in records if r.get("kind") == "valid" and isinstance(r.get(f"valid_{key}"), (int, float))]
    return train, valid


def draw_curves(path: str | os.PathLike, records: Sequence[dict], unit: str, title: str) -> None:
    """Write a PNG of the training curve (line) and the held-out figures (dots on a line), step on
    the x axis and `unit` on the y axis, both with ticks at round values."""
    train, valid = curves(records, unit)
    if not train and not valid:
        raise ArcliError(f"the metrics log holds no figures in {unit} to draw")
    points = [p for p in train + valid if math.isfinite(p[1])]
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    x_ticks = nice_ticks(0, max(steps), 10)
    y_ticks = nice_ticks(min(values), max(values), 8)
    left, top, right, bottom = MARGINS
    width, height = SIZE[0] - left - right, SIZE[1] - top - bottom

    def place(step: float, value: float) -> tuple[float, float]:
        x = left + (step - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (width - 1)
        y = top + (y_ticks[-1] - value) / (y_ticks[-1] - y_ticks[0]) * (height - 1)
        return x, y

    image = Image.new("RGB", SIZE, "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    grey = (225, 225, 225)
    for tick in x_ticks:
        x, _ = place(tick, y_ticks[0])
        draw.line([(x, top), (x, top + height - 1)], fill=grey)
        label = f"{tick:g}"
        draw.text((x - 3 * len(label), top + height + 4), label, fill="black", font=font)
    for tick in y_ticks:
        _, y = place(x_ticks[0], tick)
        draw.line([(left, y), (left + width - 1, y)], fill=grey)
        label = f"{tick:g}"
        draw.text((left - 6 - 6 * len(label), y - 6), label, fill="black", font=font)
    draw.rectangle([left, top, left + width - 1, top + height - 1], outline="black")
    draw.text((left + width // 2 - 12, top + height + 20), "step", fill="black", font=font)
    draw.text((4, top - 16), unit, fill="black", font=font)
    draw.text((left, 8), title, fill="black", font=font)

    if len(train) > 1:
        draw.line([place(s, v) for s, v in train], fill=TRAIN_COLOUR, width=2)
    for s, v in train if len(train) == 1 else []:
        x, y = place(s, v)
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=TRAIN_COLOUR)
    if len(valid) > 1:
        draw.line([place(s, v) for s, v in valid], fill=VALID_COLOUR, width=2)
    for s, v in valid:
        x, y = place(s, v)
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=VALID_COLOUR)

    legend_x = left + width - 150
    for row, (name, colour, shown) in enumerate((("training", TRAIN_COLOUR, train), ("held-out", VALID_COLOUR, valid))):
        if shown:
            y = top + 10 + 16 * row
            draw.line([(legend_x, y + 6), (legend_x + 24, y + 6)], fill=colour, width=3)
            draw.text((legend_x + 30, y), name, fill="black", font=font)

    path = Path(path)
    with atomic_path(path) as temp:
        image.save(temp, format="PNG")
