"""The model registry: every model family that every subcommand and the engine can serve.

A family ties together a config dataclass, a model class honouring the model contract of
DESIGN.md, the task that knows its modality's data (audio, images, text), and the name of its
shipped checkpoint. Built-in families are listed here; a third-party package adds one through the
`arcli.models` entry-point group, pointing at a `ModelFamily` (or a function returning one):

    [project.entry-points."arcli.models"]
    bigram = "arcli_bigram:family"
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from arcli.errors import ArcliError, CheckpointError, OptionError

if TYPE_CHECKING:
    from arcli.checkpoint import Checkpoint
    from arcli.tasks import Task

ENTRY_POINT_GROUP = "arcli.models"


@dataclass(frozen=True)
class ModelFamily:
    name: str
    modality: str  # "audio", "image", "text" or "translation": which task serves it
    summary: str  # one line for `arcli models`
    config_class: type  # a dataclass; the model is rebuilt from it
    model_class: type  # model_class(config) -> torch.nn.Module with forward/start/step/reorder
    task: Task
    default_checkpoint: str | None = None  # file name under checkpoints/
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, values: dict[str, Any] | None = None, overrides: dict[str, str] | None = None):
        """The config from stored `values` and command-line `overrides` (strings, converted to
        the type of each field's default)."""
        fields = {f.name: f for f in dataclasses.fields(self.config_class)}
        values = dict(values or {})
        unknown = set(values) - set(fields)
        if unknown:
            raise CheckpointError(f"the checkpoint's {self.name} config has unknown fields {sorted(unknown)}: it was written by another arcli version")
        for key, text in (overrides or {}).items():
            if key not in fields:
                raise ArcliError(f"{self.name} has no setting {key!r}; settings: {', '.join(fields)}")
            values[key] = _parse_value(key, text, getattr(self.config_class(), key))
        try:
            return self.config_class(**values)
        except (ValueError, TypeError) as error:  # the config's own checks of its values
            raise OptionError(f"{self.name} settings: {error}") from None

    def build(self, config) -> torch.nn.Module:
        return self.model_class(config)

    def checkpoint_path(self, checkpoint: str | Path | None) -> Path:
        """The checkpoint to use: the one given, else the shipped default."""
        if checkpoint is not None:
            return Path(checkpoint)
        path = self.shipped_checkpoint()
        if path is None:
            raise ArcliError(
                f"'{self.name}' has no shipped checkpoint: train one with `arcli train {self.name} ...` "
                "and pass it with --checkpoint FILE"
            )
        if not path.exists():
            raise CheckpointError(f"the shipped checkpoint {path} is missing: reinstall arcli or pass --checkpoint FILE")
        return path

    def shipped_checkpoint(self) -> Path | None:
        """Where the shipped checkpoint is installed (it may be missing), or None if there is none."""
        return None if self.default_checkpoint is None else checkpoints_dir() / self.default_checkpoint

    def load(self, checkpoint: str | Path | None, device: torch.device) -> tuple[torch.nn.Module, Checkpoint]:
        """Rebuild the model from a checkpoint (the shipped one when `checkpoint` is None)."""
        from arcli.checkpoint import check_fits, read_checkpoint

        stored = read_checkpoint(self.checkpoint_path(checkpoint), expected_model=self.name)
        config = self.config(stored.config)
        check_fits(stored, self.build, config, device)  # before building: a damaged config must not exhaust memory
        model = self.build(config)
        try:
            model.load_state_dict(stored.tensors)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise CheckpointError(f"'{stored.path}' does not fit the {self.name} model: {first}") from None
        return model.to(device).eval(), stored


def _parse_value(key: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, (int, float, str)):
            return type(default)(text)
        return json.loads(text)
    except ValueError:
        raise ArcliError(f"setting {key}={text!r}: expected a value like {default!r}") from None


def checkpoints_dir() -> Path:
    """Where shipped checkpoints are: inside the installed package, else the source checkout."""
    installed = Path(str(resources.files("arcli"))) / "checkpoints"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "checkpoints"


_BUILTIN = {
    "wavenet": "arcli.tasks.audio:WAVENET",
    "wavenet-vocoder": "arcli.tasks.audio:WAVENET_VOCODER",
    "wavenet-tts": "arcli.tasks.audio:WAVENET_TTS",
    "parallel-wavenet": "arcli.tasks.parallel_wavenet:PARALLEL_WAVENET",
    "vrnn": "arcli.tasks.continuous:VRNN_FAMILY",
    "rnn-gauss": "arcli.tasks.continuous:RNN_GAUSS",
    "pixelcnn": "arcli.tasks.image:PIXELCNN",
    "fvsbn": "arcli.tasks.image:FVSBN_FAMILY",
    "nade": "arcli.tasks.image:NADE_FAMILY",
    "made": "arcli.tasks.image:MADE_FAMILY",
    "pixelrnn-row": "arcli.tasks.image:PIXELRNN_ROW",
    "pixelrnn-diagonal": "arcli.tasks.image:PIXELRNN_DIAGONAL",
    "transformer": "arcli.tasks.translation:TRANSFORMER",
    "rnn-attention": "arcli.tasks.translation:RNN_ATTENTION",
    "transformer-lm": "arcli.tasks.text:TRANSFORMER_LM",
    "tcn": "arcli.tasks.text:TCN_LM",
    "lstm-lm": "arcli.tasks.text:RNN_LM",
}


@cache
def _entry_point_families() -> dict[str, ModelFamily]:
    found = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry  # loaded on first use
    return found


def family_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_entry_point_families()))


def get_family(name: str) -> ModelFamily:
    """The family registered as `name`; an ArcliError listing the known names otherwise."""
    if name in _BUILTIN:
        module, attr = _BUILTIN[name].split(":")
        return getattr(importlib.import_module(module), attr)
    entry = _entry_point_families().get(name)
    if entry is None:
        raise ArcliError(f"unknown model {name!r}: known models are {', '.join(family_names())} (see `arcli models`)")
    try:
        family = entry.load()
    except Exception as error:  # a broken plugin must not take the whole tool down
        raise ArcliError(f"the plugin model {name!r} ({entry.value}) failed to load: {error}") from None
    family = family() if callable(family) and not isinstance(family, ModelFamily) else family
    if not isinstance(family, ModelFamily):
        raise ArcliError(f"the plugin model {name!r} ({entry.value}) is not an arcli ModelFamily")
    return family
