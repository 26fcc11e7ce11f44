"""`arcli train`: fit a model to data with the one generic training loop."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import torch
import typer

from arcli import distributed, metrics_log
from arcli.checkpoint import Checkpoint, read_checkpoint, read_training_state_info, save_checkpoint, training_state_path
from arcli.cli import options as opt
from arcli.cli.common import resolve_device, user_errors
from arcli.errors import ArcliError, CheckpointError, DataError, OptionError
from arcli.metrics_log import metrics_log_path
from arcli.outputs import check_new, remove_stale_temporaries
from arcli.registry import get_family
from arcli.tasks import TrainRequest
from arcli.training import TrainOptions, describe_hardware
from arcli.training import train as run_training

TRAINING = "Training"
PARALLEL = "Parallel text (translation models)"


def _settings(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionError(f"--set expects KEY=VALUE, got {pair!r}")
        settings[key.strip()] = value.strip()
    return settings


@user_errors
def train(
    model: opt.ModelName,
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (.safetensors).")],
    data: Annotated[list[Path] | None, typer.Option("--data", "-d", help="Training data: files or folders (repeat for several).")] = None,
    valid: Annotated[list[Path] | None, typer.Option(help="Held-out data; default: a slice of --data.")] = None,
    src: Annotated[Path | None, typer.Option(help="Translation: source sentences, one per line (UTF-8).", rich_help_panel=PARALLEL)] = None,
    tgt: Annotated[Path | None, typer.Option(help="Translation: target sentences, line by line with --src.", rich_help_panel=PARALLEL)] = None,
    valid_src: Annotated[Path | None, typer.Option(help="Translation: held-out sources; default: a slice of --src.", rich_help_panel=PARALLEL)] = None,
    valid_tgt: Annotated[Path | None, typer.Option(help="Translation: held-out targets.", rich_help_panel=PARALLEL)] = None,
    class_names: Annotated[str | None, typer.Option(
        help="Image models: names of the classes in the order of their ids, comma-separated (e.g. 'T-shirt/top,trouser,...')."
    )] = None,
    teacher: Annotated[Path | None, typer.Option(
        help="parallel-wavenet: the teacher to distil, a wavenet-vocoder trained with --set output=gaussian."
    )] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="Model setting KEY=VALUE (see `arcli models info`).")] = None,
    steps: Annotated[int, typer.Option(help="Optimisation steps.", rich_help_panel=TRAINING)] = TrainOptions.steps,
    batch_size: Annotated[int, typer.Option(
        help="Examples per step, over all processes (under torchrun each takes batch-size / processes).", rich_help_panel=TRAINING
    )] = TrainOptions.batch_size,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", rich_help_panel=TRAINING)] = TrainOptions.learning_rate,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.", rich_help_panel=TRAINING)] = TrainOptions.weight_decay,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps, then cosine decay.", rich_help_panel=TRAINING)] = TrainOptions.warmup_steps,
    clip_norm: Annotated[float, typer.Option(help="Gradient-norm clip (0: off).", rich_help_panel=TRAINING)] = 1.0,
    eval_every: Annotated[int, typer.Option(help="Held-out evaluation every N steps.", rich_help_panel=TRAINING)] = TrainOptions.eval_every,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.", rich_help_panel=TRAINING)] = TrainOptions.save_every,
    log_every: Annotated[int, typer.Option(
        help="A line of the metrics log (OUT.metrics.jsonl) every N steps.", rich_help_panel=TRAINING
    )] = TrainOptions.log_every,
    log_dir: Annotated[Path | None, typer.Option(
        help="Also write TensorBoard event files to this folder (needs: pip install 'arcli[tensorboard]').", rich_help_panel=TRAINING
    )] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue from a training state (*.train.safetensors), with the model settings it was started with.", rich_help_panel=TRAINING
    )] = None,
    init: Annotated[Path | None, typer.Option(
        help="Start from this checkpoint's weights (fine-tuning, a fresh optimizer and schedule); the model settings are "
             "the checkpoint's, and the data must give the same (speakers, features, vocabulary).", rich_help_panel=TRAINING
    )] = None,
    half: Annotated[bool, typer.Option(help="Store the weights in float16 (half the file size).")] = False,
    device: opt.Device = opt.DeviceChoice.auto,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and data order.")] = 0,
    force: opt.Force = False,
    quiet: opt.Quiet = False,
) -> None:
    """Train MODEL on --data and write the checkpoint to --output (plus a resumable training state
    and a metrics log beside it).

    Ctrl-C saves a checkpoint and a training state; continue with --resume. Under
    `torchrun --nproc-per-node N -m arcli train ...` the N processes train data-parallel.
    """
    arguments = dict(locals())  # the options above, handed on as they are
    world = distributed.from_environment()
    try:
        _train(world, **arguments)
    except (distributed.PeerLost, _RankError):
        raise  # said by the rank that saw it
    except ArcliError:
        if world.main:
            raise
        raise typer.Exit(1) from None  # rank 0 meets the same mistake and says it once


class _RankError(ArcliError):
    """A mistake met by one rank other than 0 (e.g. data missing on one machine): that rank says it."""


def _train(world: distributed.World, *, model, output, data, valid, src, tgt, valid_src, valid_tgt, class_names, teacher, settings, steps,
           batch_size, learning_rate, weight_decay, warmup_steps, clip_norm, eval_every, save_every, log_every, log_dir, resume,
           init, half, device, seed, force, quiet) -> None:
    for name, value in (("--steps", steps), ("--batch-size", batch_size), ("--eval-every", eval_every), ("--save-every", save_every),
                        ("--log-every", log_every)):
        if value < 1:
            raise OptionError(f"{name} must be >= 1, got {value}")
    if learning_rate <= 0 or warmup_steps < 0 or clip_norm < 0 or weight_decay < 0:
        raise OptionError("--lr must be > 0 and --warmup-steps, --clip-norm, --weight-decay >= 0")
    if output.suffix != ".safetensors":
        raise OptionError(f"--output must end in .safetensors, got '{output}'")
    distributed.check_batch(world, batch_size)
    if init is not None and resume is not None:
        raise OptionError("--init and --resume exclude each other: --resume continues a training state, --init starts anew from a checkpoint")
    if resume is None:
        if world.main:
            check_new(output, force)
    elif not resume.exists():
        raise ArcliError(f"--resume: training state '{resume}' does not exist")
    if not data and (src is None or tgt is None):
        raise OptionError("give the training data: --data FILES_OR_FOLDERS, or --src FILE --tgt FILE for a translation model")
    family = get_family(model)
    if family.modality != "translation" and (src or tgt or valid_src or valid_tgt):
        raise OptionError(f"--src/--tgt/--valid-src/--valid-tgt are for translation models; '{model}' trains on --data")
    names = None
    if class_names is not None:
        if family.modality != "image":
            raise OptionError(f"--class-names is for image models; '{model}' has no classes")
        names = [name.strip() for name in class_names.split(",")]
        if not all(names):
            raise OptionError(f"--class-names: an empty name in {class_names!r}; give one name per class, comma-separated")
    if teacher is not None and family.name != "parallel-wavenet":
        raise OptionError(f"--teacher is for parallel-wavenet; '{model}' trains on its data alone")
    state_info = read_training_state_info(resume)[1] if resume is not None else {}
    start = None
    if init is not None:
        start = read_checkpoint(init, expected_model=family.name)
        if settings:
            raise OptionError(f"--set: a run started with --init keeps the settings of '{init}'; train without --init to change them")
        config = family.config(start.config)
    else:
        config = _model_settings(family, _settings(settings or []), state_info, resume)
    where = distributed.device_for(world, resolve_device(device.value))
    world = distributed.start(world, where)
    try:
        _train_in_group(world, family, config, state_info, where, output=output, data=data, valid=valid, src=src, tgt=tgt,
                        valid_src=valid_src, valid_tgt=valid_tgt, names=names, teacher=teacher, steps=steps, batch_size=batch_size,
                        learning_rate=learning_rate, weight_decay=weight_decay, warmup_steps=warmup_steps, clip_norm=clip_norm,
                        eval_every=eval_every, save_every=save_every, log_every=log_every, log_dir=log_dir, resume=resume,
                        start=start, half=half, seed=seed, quiet=quiet)
    finally:
        distributed.stop(world)


def _model_settings(family, overrides: dict[str, str], state_info: dict, resume: Path | None):
    """The model settings: --set over the defaults, or, resuming, those the training state was
    started with (a --set that repeats one of them is fine; one that changes it is refused)."""
    if resume is None:
        return family.config(overrides=overrides)
    stored_model = state_info.get("model")
    if stored_model is not None and stored_model != family.name:
        raise CheckpointError(
            f"'{resume}' is a training state of '{stored_model}', not of '{family.name}': resume it with `arcli train {stored_model} ...`"
        )
    if "settings" not in state_info:  # written before training states kept the settings: --set as given
        return family.config(overrides=overrides)
    started = family.config(state_info["settings"])
    asked = family.config(state_info["settings"], overrides=overrides)
    changed = [f"{key}={value} (started with {getattr(started, key)})"
               for key, value in dataclasses.asdict(asked).items() if getattr(started, key) != value]
    if changed:
        raise OptionError(
            f"--set {', '.join(changed)}: a resumed run keeps the model settings it was started with; "
            "train a new model (without --resume) to change them"
        )
    return started


def _train_in_group(world, family, config, state_info, where, *, output, data, valid, src, tgt, valid_src, valid_tgt, names, teacher, steps,
                    batch_size, learning_rate, weight_decay, warmup_steps, clip_norm, eval_every, save_every, log_every, log_dir,
                    resume, start, half, seed, quiet) -> None:
    request = TrainRequest(data=list(data or []), valid=list(valid or []), src=src, tgt=tgt, valid_src=valid_src, valid_tgt=valid_tgt,
                           class_names=names, teacher=teacher)
    failure, setup, tensorboard = None, None, None
    try:
        # Only rank 0 describes the data; the others prepare the same in silence.
        with contextlib.nullcontext() if world.main else contextlib.redirect_stderr(io.StringIO()):
            setup = _prepare(family, config, request, start)
        if "config" in state_info and dataclasses.asdict(setup.config) != state_info["config"]:
            before, now = state_info["config"], dataclasses.asdict(setup.config)
            differences = ", ".join(f"{k} {before.get(k)} -> {v}" for k, v in now.items() if before.get(k) != v)
            raise DataError(f"this data gives the model other settings than '{resume}' has ({differences}); resume with the same data")
        if start is not None:
            _check_init_fits(family, start, setup)
        if world.main:
            for path in (output, training_state_path(output), metrics_log_path(output)):
                removed = remove_stale_temporaries(path)
                if removed:
                    typer.echo(f"removed {len(removed)} stale temporary file(s) of '{path}' left by a killed run", err=True)
            if log_dir is not None:
                tensorboard = metrics_log.tensorboard_writer(log_dir)
    except ArcliError as error:
        failure = error
    # Every rank learns whether any rank failed, so that none waits for the others in vain, and the
    # lowest failing rank alone says why.
    failed = distributed.failed_ranks(world, failure is not None, where)
    if failed:
        if failure is not None and world.rank == failed[0]:
            raise failure if world.main else _RankError(f"rank {world.rank}: {failure}")
        raise typer.Exit(1)
    if not distributed.same_on_every_rank(_fingerprint(setup), world, where):
        raise ArcliError(
            "the training processes prepared different models or data (settings, tokenizer or data description); "
            "every process must read the same data"
        )

    torch.manual_seed(seed)
    net = family.build(setup.config)
    if start is not None:
        net.load_state_dict(start.tensors)  # float16 weights are widened to the parameters' dtype
    net = net.to(where)
    options = TrainOptions(
        steps=steps, batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
        warmup_steps=warmup_steps, clip_norm=clip_norm or None, eval_every=eval_every,
        save_every=save_every, log_every=log_every, seed=seed,
    )
    provenance = {
        "command": "arcli " + shlex.join(sys.argv[1:]),
        "data": [str(p) for p in (data or [src, tgt])],
        "seed": seed,
        "options": dataclasses.asdict(options),
        "device": describe_hardware(where),
        "torch": torch.__version__,
        "processes": world.size,
        **({} if start is None else {"init": str(start.path)}),
    }
    if world.parallel and world.main:
        typer.echo(f"data-parallel over {world.size} processes ({world.backend}), {batch_size // world.size} examples each per step",
                   err=True)

    def save(metrics: dict) -> None:
        save_checkpoint(
            output, family.name, setup.config, net.state_dict(), data=setup.data_meta, tokenizer=setup.tokenizer,
            training={**provenance, "steps": metrics.get("step"), "wall_seconds": metrics.get("wall_seconds"),
                      "step_seconds": metrics.get("step_seconds")},
            metrics=metrics, dtype=torch.float16 if half else None,
        )

    result = run_training(
        net, family.task.loss, setup.data, options, unit=family.task.unit, save=save, resume_path=resume,
        state_path=training_state_path(output), device=where, progress=not quiet, world=world,
        metrics_path=metrics_log_path(output), tensorboard=tensorboard,
        state_info={"model": family.name, "settings": dataclasses.asdict(config), "config": dataclasses.asdict(setup.config)},
    )
    if not result.interrupted and world.main:
        typer.echo(f"wrote {output} ({result.steps} steps, {result.wall_seconds:.0f} s)", err=True)


def _prepare(family, config, request: TrainRequest, start: Checkpoint | None):
    """The task's training setup; with --init, a data/settings clash is said in terms of the checkpoint."""
    try:
        return family.task.prepare_training(family, config, request)
    except ArcliError as error:
        if start is None:
            raise
        with contextlib.redirect_stderr(io.StringIO()):  # what this data gives with the default settings
            given = dataclasses.asdict(family.task.prepare_training(family, family.config(), request).config)
        defaults = dataclasses.asdict(family.config())
        stored = dataclasses.asdict(family.config(start.config))
        differences = [f"{key} {stored.get(key)} -> {value}" for key, value in given.items()
                       if value != defaults.get(key) and value != stored.get(key)]
        raise DataError(f"this data does not fit the --init checkpoint '{start.path}' ({', '.join(differences) or error}); "
                        "fine-tune on data of the same form, or train a new model") from None


def _check_init_fits(family, start: Checkpoint, setup) -> None:
    """--init: the data must complete the checkpoint's settings the same way and describe inputs the same way."""
    stored = dataclasses.asdict(family.config(start.config))  # fields added since it was written take their defaults
    differences = [f"{key} {stored.get(key)} -> {value}" for key, value in dataclasses.asdict(setup.config).items() if stored.get(key) != value]
    for key in ("speakers", "features", "classes", "class_names", "levels", "shape", "mu", "sample_rate"):
        if key in start.data and setup.data_meta.get(key) != start.data[key]:
            differences.append(f"its {key}")
    if start.tokenizer != setup.tokenizer:
        differences.append("its tokenizer")
    if differences:
        raise DataError(f"this data does not fit the --init checkpoint '{start.path}' ({', '.join(differences)}); "
                        "fine-tune on data of the same form, or train a new model")


def _fingerprint(setup) -> int:
    """A number that differs between ranks whose prepared model settings, tokenizer or data differ."""
    text = json.dumps([dataclasses.asdict(setup.config), setup.data_meta, setup.tokenizer], sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
