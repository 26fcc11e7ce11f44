"""Checkpoints and training states as safetensors files with JSON metadata; never pickle.

A model checkpoint is one `.safetensors` file: the model's state dict, plus string metadata whose
values are JSON:

    arcli.format    "arcli-1"
    arcli.model     registry name, e.g. "wavenet"
    arcli.config    the config dataclass as a dict
    arcli.data      data description (sample rate, image shape, levels, speakers ...)
    arcli.tokenizer the tokenizer as a dict, or null
    arcli.training  provenance (command line, steps, seed, data paths, wall time, hardware)
    arcli.metrics   measured metrics, e.g. {"valid_bits_per_sample": 2.9}

A training state (for `--resume`) is another safetensors file, of format "arcli-train-1": the model
weights, the optimizer's tensors, the random generators' states (as uint8 tensors) and, in JSON
metadata, the step, the optimizer's other values and the training loop's extra state.

Nothing here calls `torch.load`: a file is read only if it is safetensors. Every write is atomic
(a temporary file in the same directory, then `os.replace`), so an interrupted write never leaves a
half-written file behind or destroys the previous one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from arcli.errors import CheckpointError
from arcli.outputs import atomic_path as atomic_write

FORMAT = "arcli-1"
TRAINING_FORMAT = "arcli-train-1"


@dataclass
class Checkpoint:
    """A model checkpoint as read from disk. `tensors` are as stored (possibly float16): load them
    with `model.load_state_dict(checkpoint.tensors)`, which copies them into the model's dtype."""

    path: Path
    model_name: str  # registry name, e.g. "wavenet"
    config: dict  # the model's config dataclass as a dict (dataclasses.asdict)
    tensors: dict[str, torch.Tensor]  # the state dict
    data: dict  # data description (sample rate, image shape, levels, speakers ...)
    tokenizer: dict | None  # tokenizer as a JSON-able dict (text models), else None
    training: dict  # provenance: command line, steps, seed, data paths, wall time, hardware
    metrics: dict  # measured metrics, e.g. {"valid_bits_per_sample": 2.9}


@dataclass
class TrainingState:
    """A resumable training snapshot, as read by `load_training_state` (which has already loaded
    the optimizer's state). Load `model_state` into the model and call `restore_rng`."""

    path: Path
    step: int  # optimizer steps taken
    model_state: dict[str, torch.Tensor]  # full-precision weights
    generator_states: dict[str, torch.Tensor]  # name -> torch.Generator.get_state()
    extra: dict  # the training loop's own JSON state (history, options, wall time ...)
    rng_state: torch.Tensor  # torch.get_rng_state()
    cuda_rng_states: list[torch.Tensor]  # one per CUDA device, empty where there was no CUDA

    def restore_rng(self, generators: Mapping[str, torch.Generator]) -> None:
        """Put the global torch RNG, the CUDA RNGs (when this machine has the same number of CUDA
        devices) and each named generator back in the state they had when the snapshot was taken."""
        missing = sorted(set(generators) - set(self.generator_states))
        if missing:
            raise CheckpointError(
                f"training state '{self.path}' has no state for the random generator(s) {', '.join(missing)}; "
                "it was written by another version of the training loop: start the training again"
            )
        torch.set_rng_state(self.rng_state)
        if self.cuda_rng_states and torch.cuda.is_available() and torch.cuda.device_count() == len(self.cuda_rng_states):
            torch.cuda.set_rng_state_all(self.cuda_rng_states)
        for name, generator in generators.items():
            generator.set_state(self.generator_states[name])


# -------------------------------------------------------------------------------------------------
# writing


def save_checkpoint(
    path: str | os.PathLike,
    model_name: str,
    config: Any,
    state_dict: Mapping[str, torch.Tensor],
    *,
    data: dict | None = None,
    tokenizer: dict | None = None,
    training: dict | None = None,
    metrics: dict | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a model checkpoint atomically; returns its path.

    `config` is the model's config dataclass (or a dict). `dtype=torch.float16` stores floating
    tensors in half precision (small shipped files); other tensors keep their dtype. Tensors are
    moved to the CPU and made contiguous; tensors that share memory (tied weights) are stored as
    separate copies, which `load_state_dict` copies back into the one shared parameter.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dataclass instance or a dict, got {type(config).__name__}")
    metadata = {
        "arcli.format": _dumps(FORMAT),
        "arcli.model": _dumps(model_name),
        "arcli.config": _dumps(config),
        "arcli.data": _dumps(data or {}),
        "arcli.tokenizer": _dumps(tokenizer),
        "arcli.training": _dumps(training or {}),
        "arcli.metrics": _dumps(metrics or {}),
    }
    return _write(path, _storable(state_dict, dtype), metadata)


def save_training_state(
    path: str | os.PathLike,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    step: int,
    generators: Mapping[str, torch.Generator],
    extra: dict,
) -> Path:
    """Write a resumable training snapshot atomically; returns its path.

    Stored: the model weights as given (`model.<name>`), the optimizer's state tensors
    (`optimizer.state.<param index>.<name>`, e.g. AdamW's exp_avg and its tensor `step`, exactly),
    its param groups and non-tensor values in JSON, the global torch RNG, the CUDA RNGs when CUDA
    is available, each of `generators` (`rng.generator.<name>`), `step` and the JSON-able `extra`.
    """
    tensors = {f"model.{name}": tensor for name, tensor in model_state.items()}
    optimizer_json = _split_optimizer(optimizer.state_dict(), tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    for name, generator in generators.items():
        tensors[f"rng.generator.{name}"] = generator.get_state()
    metadata = {
        "arcli.format": _dumps(TRAINING_FORMAT),
        "arcli.step": _dumps(int(step)),
        "arcli.optimizer": _dumps(optimizer_json),
        "arcli.extra": _dumps(extra),
    }
    return _write(path, _storable(tensors, None), metadata)


def training_state_path(checkpoint_path: str | os.PathLike) -> Path:
    """Where the training state of a checkpoint goes: out.safetensors -> out.train.safetensors."""
    path = Path(checkpoint_path)
    stem = path.stem if path.suffix == ".safetensors" else path.name
    return path.with_name(f"{stem}.train.safetensors")


def _write(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    path = Path(path)
    with atomic_write(path) as temp:
        save_file(tensors, temp, metadata=metadata)
    return path


def _storable(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """CPU, contiguous, optionally cast, and no two tensors sharing memory (safetensors refuses
    shared tensors: tied weights, or views of one buffer)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state entry {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensor = tensor.contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen:
            tensor = tensor.clone()
        elif storage != 0:
            seen.add(storage)
        out[name] = tensor
    return out


def _split_optimizer(state_dict: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """The optimizer's state dict as JSON, its tensors moved into `tensors` (replaced by
    {"tensor": key} markers)."""

    def split(value, key):
        if isinstance(value, torch.Tensor):
            tensors[key] = value
            return {"tensor": key}
        if isinstance(value, (list, tuple)):
            return [split(v, f"{key}.{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {"dict": {str(k): split(v, f"{key}.{k}") for k, v in value.items()}}
        return value

    state = [[index, {name: split(v, f"optimizer.state.{index}.{name}") for name, v in values.items()}]
             for index, values in state_dict["state"].items()]
    groups = [{name: split(v, f"optimizer.param_groups.{i}.{name}") for name, v in group.items()}
              for i, group in enumerate(state_dict["param_groups"])]
    return {"state": state, "param_groups": groups}


def _join_optimizer(saved: dict, tensors: dict[str, torch.Tensor], current: dict) -> dict:
    """Inverse of `_split_optimizer`; JSON lists become tuples where the current optimizer has
    tuples (AdamW's betas)."""

    def join(value, like=None):
        if isinstance(value, dict) and set(value) == {"tensor"}:
            return tensors[value["tensor"]]
        if isinstance(value, dict) and set(value) == {"dict"}:
            return {k: join(v) for k, v in value["dict"].items()}
        if isinstance(value, list):
            items = [join(v) for v in value]
            return tuple(items) if isinstance(like, tuple) else items
        return value

    current_groups = current["param_groups"]
    groups = []
    for i, group in enumerate(saved["param_groups"]):
        like = current_groups[i] if i < len(current_groups) else {}
        groups.append({name: join(v, like.get(name)) for name, v in group.items()})
    state = {index: {name: join(v) for name, v in values.items()} for index, values in saved["state"]}
    return {"state": state, "param_groups": groups}


def _dumps(value) -> str:
    return json.dumps(value, sort_keys=True)


# -------------------------------------------------------------------------------------------------
# reading


def read_checkpoint(path: str | os.PathLike, expected_model: str | None = None) -> Checkpoint:
    """Read a model checkpoint; with `expected_model`, refuse one of another model family.

    Raises `CheckpointError` with a one-line message for a missing file, a file that is not
    safetensors (text, pickled .pt, cut short in its header), a damaged safetensors file, a
    safetensors file that is not an arcli checkpoint, a training state, corrupt metadata and a
    checkpoint of another family.
    """
    path = Path(path)
    metadata, tensors = _read_safetensors(path, "checkpoint")
    form = _field(path, metadata, "format", (str,))
    if form == TRAINING_FORMAT:
        raise CheckpointError(
            f"'{path}' is a training state (for --resume), not a model checkpoint; "
            "pass the model checkpoint written next to it"
        )
    if form != FORMAT:
        raise CheckpointError(
            f"'{path}' is an arcli checkpoint of format {form!r}, which this version of arcli cannot read "
            f"(it reads {FORMAT!r}); upgrade arcli"
        )
    values = {
        "model": _field(path, metadata, "model", (str,)),
        "config": _field(path, metadata, "config", (dict,)),
        "data": _field(path, metadata, "data", (dict,)),
        "tokenizer": _field(path, metadata, "tokenizer", (dict, type(None))),
        "training": _field(path, metadata, "training", (dict,)),
        "metrics": _field(path, metadata, "metrics", (dict,)),
    }
    model_name = values["model"]
    if expected_model is not None and model_name != expected_model:
        raise CheckpointError(
            f"'{path}' is a '{model_name}' checkpoint, not a '{expected_model}' checkpoint; "
            f"use it with the '{model_name}' model, or pass a '{expected_model}' checkpoint"
        )
    return Checkpoint(
        path=path, model_name=model_name, config=values["config"], tensors=tensors, data=values["data"],
        tokenizer=values["tokenizer"], training=values["training"], metrics=values["metrics"],
    )


def check_fits(stored: Checkpoint, build: Callable[[Any], torch.nn.Module], config: Any, device: torch.device | str = "cpu") -> None:
    """Refuse, before any memory is taken, a checkpoint whose config does not match its own tensors
    (names and shapes) or whose model would not fit in the memory of `device`.

    The model is built on PyTorch's "meta" device, which records shapes and allocates nothing, so a
    config damaged into asking for a billion channels costs nothing to check. A model whose
    constructor cannot run on the meta device (it computes values at build time) is not checked."""
    try:
        with torch.device("meta"), _no_random_fills():
            skeleton = build(config)
    except (RuntimeError, NotImplementedError, TypeError):
        return
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in stored.tensors.items()}
    problems = [f"{name} missing" for name in expected if name not in found]
    problems += [f"{name} not in this model" for name in found if name not in expected]
    problems += [f"{name} is {found[name]} in the file but {shape} by its config"
                 for name, shape in expected.items() if name in found and found[name] != shape]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckpointError(
            f"'{stored.path}' does not match its own config ({'; '.join(problems[:3])}{more}): the file is damaged or was "
            "edited; save or download it again"
        )
    tensors = [*skeleton.parameters(), *skeleton.buffers()]
    needed = sum(t.numel() * t.element_size() for t in tensors)
    available, where = _memory(torch.device(device))
    if available is not None and needed > available:
        raise CheckpointError(
            f"'{stored.path}' asks for a model of {needed / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB of memory "
            f"{where}: its config is damaged or the model needs a larger machine"
        )


@contextlib.contextmanager
def _no_random_fills():
    """`Tensor.normal_` as a no-op while a shape-only model is built: a meta tensor holds no values
    anyway, and the meta kernel of `normal_` (nn.Embedding's init) imports torch._dynamo, ~1 s of CPU
    on every command that loads a model."""
    original = torch.Tensor.normal_
    torch.Tensor.normal_ = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.normal_ = original


def _memory(device: torch.device) -> tuple[int | None, str]:
    """(bytes of memory on `device`, where), or (None, ...) where it cannot be told."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"of GPU {index}"
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "of this machine"
    except (AttributeError, ValueError, OSError):  # not on every platform (Windows)
        return None, "of this machine"


def load_training_state(path: str | os.PathLike, optimizer: torch.optim.Optimizer) -> TrainingState:
    """Read a training state written by `save_training_state` and load its optimizer state into
    `optimizer` (which must be built over the same parameters, in the same order)."""
    path = Path(path)
    metadata, tensors = _read_safetensors(path, "training state")
    form = _field(path, metadata, "format", (str,))
    if form == FORMAT:
        raise CheckpointError(
            f"'{path}' is a model checkpoint, not a training state; resume from the .train.safetensors "
            "file written next to it"
        )
    if form != TRAINING_FORMAT:
        raise CheckpointError(
            f"'{path}' is a training state of format {form!r}, which this version of arcli cannot read "
            f"(it reads {TRAINING_FORMAT!r}); upgrade arcli or start the training again"
        )
    step = _field(path, metadata, "step", (int,))
    saved = _field(path, metadata, "optimizer", (dict,))
    extra = _field(path, metadata, "extra", (dict,))
    try:
        optimizer_state = _join_optimizer(saved, tensors, optimizer.state_dict())
        optimizer.load_state_dict(optimizer_state)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"'{path}' does not fit this model or optimizer ({_first_line(e)}); "
            "resume with the same model options the training started with"
        ) from None
    if "rng.torch" not in tensors:
        raise CheckpointError(f"'{path}' has no random generator state; the file is damaged: start the training again")
    cuda = []
    while f"rng.cuda.{len(cuda)}" in tensors:
        cuda.append(tensors[f"rng.cuda.{len(cuda)}"])
    return TrainingState(
        path=path,
        step=step,
        model_state={k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")},
        generator_states={k.removeprefix("rng.generator."): v for k, v in tensors.items() if k.startswith("rng.generator.")},
        extra=extra,
        rng_state=tensors["rng.torch"],
        cuda_rng_states=cuda,
    )


def read_training_state_info(path: str | os.PathLike) -> tuple[int, dict]:
    """(step, extra state) of a training state, read from its metadata alone (no tensors): what
    `arcli train --resume` needs to know before it builds a model."""
    path = Path(path)
    metadata, _ = _read_safetensors(path, "training state", with_tensors=False)
    form = _field(path, metadata, "format", (str,))
    if form == FORMAT:
        raise CheckpointError(
            f"'{path}' is a model checkpoint, not a training state; resume from the .train.safetensors file written next to it"
        )
    if form != TRAINING_FORMAT:
        raise CheckpointError(
            f"'{path}' is a training state of format {form!r}, which this version of arcli cannot read "
            f"(it reads {TRAINING_FORMAT!r}); upgrade arcli or start the training again"
        )
    return _field(path, metadata, "step", (int,)), _field(path, metadata, "extra", (dict,))


def _read_safetensors(path: Path, what: str, with_tensors: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file (no tensors read when `tensors` is False), or a
    CheckpointError saying why not."""
    if not path.exists():
        raise CheckpointError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise CheckpointError(f"{what} '{path}' is a directory, not a .safetensors file")
    try:
        looks_like_safetensors = _has_safetensors_header(path)
    except OSError as e:
        raise CheckpointError(f"cannot read {what} '{path}': {e.strerror or e}") from None
    if not looks_like_safetensors:
        raise CheckpointError(
            f"'{path}' is not a safetensors file (arcli checkpoints are .safetensors; it will not load pickled .pt files)"
        )
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if "arcli.format" not in metadata:
                raise CheckpointError(f"'{path}' is a safetensors file but not an arcli checkpoint (no arcli metadata)")
            tensors = {name: f.get_tensor(name) for name in f.keys()} if with_tensors else {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"'{path}' is a damaged safetensors file (truncated or corrupt: {_first_line(e)}); "
            "save or download it again"
        ) from None
    return metadata, tensors


def _has_safetensors_header(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length, then a JSON object of
    that length. Pickles, zip archives (torch.save) and text fail this test."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = f.read(8)
        if len(start) < 8:
            return False
        (length,) = struct.unpack("<Q", start)
        if length < 2 or 8 + length > size:
            return False
        header = f.read(length)
    try:
        return isinstance(json.loads(header), dict)
    except (UnicodeDecodeError, ValueError):
        return False


def _field(path: Path, metadata: dict[str, str], name: str, types: tuple[type, ...]):
    key = f"arcli.{name}"
    if key not in metadata:
        raise CheckpointError(f"'{path}' has no {key} metadata; the file is damaged or was written by another tool")
    try:
        value = json.loads(metadata[key])
    except ValueError:
        raise CheckpointError(
            f"'{path}' has corrupt {key} metadata (not valid JSON); the file is damaged: save or download it again"
        ) from None
    if not isinstance(value, types) or (bool in types) != isinstance(value, bool):
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise CheckpointError(
            f"'{path}' has corrupt {key} metadata ({type(value).__name__} instead of {expected}); "
            "the file is damaged: save or download it again"
        )
    return value


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
