"""`arcli train`: fit a model to data with the one generic training loop."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Annotated

import torch
import typer

from arcli.checkpoint import save_checkpoint, training_state_path
from arcli.cli import options as opt
from arcli.cli.common import resolve_device, user_errors
from arcli.errors import ArcliError, OptionError
from arcli.outputs import check_new
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
    settings: Annotated[list[str] | None, typer.Option("--set", help="Model setting KEY=VALUE (see `arcli models info`).")] = None,
    steps: Annotated[int, typer.Option(help="Optimisation steps.", rich_help_panel=TRAINING)] = TrainOptions.steps,
    batch_size: Annotated[int, typer.Option(help="Examples per step.", rich_help_panel=TRAINING)] = TrainOptions.batch_size,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).", rich_help_panel=TRAINING)] = TrainOptions.learning_rate,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.", rich_help_panel=TRAINING)] = TrainOptions.weight_decay,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps, then cosine decay.", rich_help_panel=TRAINING)] = TrainOptions.warmup_steps,
    clip_norm: Annotated[float, typer.Option(help="Gradient-norm clip (0: off).", rich_help_panel=TRAINING)] = 1.0,
    eval_every: Annotated[int, typer.Option(help="Held-out evaluation every N steps.", rich_help_panel=TRAINING)] = TrainOptions.eval_every,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.", rich_help_panel=TRAINING)] = TrainOptions.save_every,
    resume: Annotated[Path | None, typer.Option(help="Continue from a training state (*.train.safetensors).", rich_help_panel=TRAINING)] = None,
    half: Annotated[bool, typer.Option(help="Store the weights in float16 (half the file size).")] = False,
    device: opt.Device = opt.DeviceChoice.auto,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and data order.")] = 0,
    force: opt.Force = False,
    quiet: opt.Quiet = False,
) -> None:
    """Train MODEL on --data and write the checkpoint to --output (plus a resumable training state).

    Ctrl-C saves a checkpoint and a training state; continue with --resume.
    """
    for name, value in (("--steps", steps), ("--batch-size", batch_size), ("--eval-every", eval_every), ("--save-every", save_every)):
        if value < 1:
            raise OptionError(f"{name} must be >= 1, got {value}")
    if learning_rate <= 0 or warmup_steps < 0 or clip_norm < 0 or weight_decay < 0:
        raise OptionError("--lr must be > 0 and --warmup-steps, --clip-norm, --weight-decay >= 0")
    if output.suffix != ".safetensors":
        raise OptionError(f"--output must end in .safetensors, got '{output}'")
    if resume is None:
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
    where = resolve_device(device.value)
    config = family.config(overrides=_settings(settings or []))
    request = TrainRequest(data=list(data or []), valid=list(valid or []), src=src, tgt=tgt, valid_src=valid_src, valid_tgt=valid_tgt,
                           class_names=names)
    setup = family.task.prepare_training(family, config, request)

    torch.manual_seed(seed)
    net = family.build(setup.config).to(where)
    options = TrainOptions(
        steps=steps, batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
        warmup_steps=warmup_steps, clip_norm=clip_norm or None, eval_every=eval_every,
        save_every=save_every, seed=seed,
    )
    provenance = {
        "command": "arcli " + shlex.join(sys.argv[1:]),
        "data": [str(p) for p in (data or [src, tgt])],
        "seed": seed,
        "options": dataclasses.asdict(options),
        "device": describe_hardware(where),
        "torch": torch.__version__,
    }

    def save(metrics: dict) -> None:
        save_checkpoint(
            output, family.name, setup.config, net.state_dict(), data=setup.data_meta, tokenizer=setup.tokenizer,
            training={**provenance, "steps": metrics.get("step"), "wall_seconds": metrics.get("wall_seconds"),
                      "step_seconds": metrics.get("step_seconds")},
            metrics=metrics, dtype=torch.float16 if half else None,
        )

    result = run_training(
        net, family.task.loss, setup.data, options, unit=family.task.unit, save=save, resume_path=resume,
        state_path=training_state_path(output), device=where, progress=not quiet,
    )
    if not result.interrupted:
        typer.echo(f"wrote {output} ({result.steps} steps, {result.wall_seconds:.0f} s)", err=True)
