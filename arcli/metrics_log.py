"""The metrics log of a training run: JSON lines beside the checkpoint, and TensorBoard on request.

`arcli train -o OUT.safetensors` writes OUT.metrics.jsonl, one JSON object per line:

    {"kind": "train", "step": 20, "loss": 2.41, "train_nll": 2.38, "train_bits_per_dim": 3.43,
     "lr": 0.00098, "wall_seconds": 12.5}
    {"kind": "valid", "step": 500, "valid_nll": 2.29, "valid_bits_per_dim": 3.30, "wall_seconds": 80.1}

A "train" line averages the steps since the previous one: `loss` is the objective minimised (label
smoothing included), `train_nll` the negative log-likelihood in nats per unit (sample, sub-pixel,
token), and `train_<unit>` the same in the model's unit; `lr` is the learning rate of the line's last
step. A "valid" line holds the held-out figures of one evaluation. A resumed run first drops the
lines of steps after the state it resumes from (steps that will be trained again), then appends.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from arcli.errors import ArcliError, OptionError
from arcli.outputs import atomic_path


def metrics_log_path(checkpoint_path: str | os.PathLike) -> Path:
    """out.safetensors -> out.metrics.jsonl"""
    path = Path(checkpoint_path)
    stem = path.stem if path.suffix == ".safetensors" else path.name
    return path.with_name(f"{stem}.metrics.jsonl")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics log. A last line cut short (a run killed while writing it) is skipped;
    any other line that is not a JSON object makes the log unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ArcliError(f"no metrics log '{path}': `arcli train` writes one beside each checkpoint it trains")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ArcliError(f"cannot read the metrics log '{path}': {error}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # the run stopped in the middle of this line
            raise ArcliError(f"the metrics log '{path}' is damaged at line {number} (not JSON)") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ArcliError(f"the metrics log '{path}' is damaged at line {number} (not a record with a step)")
        records.append(record)
    return records


def tensorboard_writer(log_dir: Path):
    """A TensorBoard SummaryWriter, or a clear error where the `tensorboard` package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise OptionError(
            "--log-dir writes TensorBoard event files and needs the tensorboard package: pip install 'arcli[tensorboard]'"
        ) from None
    if log_dir.exists() and not log_dir.is_dir():
        raise OptionError(f"--log-dir '{log_dir}' is a file; give a folder")
    return SummaryWriter(log_dir=str(log_dir))


class MetricsLog:
    """Appends records to a metrics log (and their numbers to TensorBoard, given a writer)."""

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None, tensorboard=None):
        self.path, self.tensorboard = Path(path), tensorboard
        kept: list[str] = []
        if resume_step is not None and self.path.is_file():
            kept = [json.dumps(r) for r in read_metrics(self.path) if r["step"] <= resume_step]
        with atomic_path(self.path) as temp:  # a fresh log, or the resumed one without its future
            temp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.tensorboard is not None:
            kind, step = record.get("kind", "train"), record["step"]
            for key, value in record.items():
                if key not in ("kind", "step") and isinstance(value, (int, float)) and math.isfinite(value):
                    tag = "lr" if key == "lr" else f"{kind}/{key.removeprefix(kind + '_')}"
                    self.tensorboard.add_scalar(tag, value, step)
            self.tensorboard.flush()

    def close(self) -> None:
        self._file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
