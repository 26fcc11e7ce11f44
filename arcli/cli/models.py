"""`arcli models`: what is registered, and `arcli models info NAME`."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from arcli.checkpoint import check_fits, read_checkpoint
from arcli.cli.common import user_errors
from arcli.cli.options import Force
from arcli.curves import draw_curves
from arcli.errors import ArcliError
from arcli.metrics_log import metrics_log_path, read_metrics
from arcli.outputs import check_new
from arcli.registry import family_names, get_family
from arcli.tasks import nats_to

app = typer.Typer(help="List the registered models; `arcli models info NAME` for one.", invoke_without_command=True)


def _shipped(family):
    """The shipped checkpoint, or None when the family has none (or it is not installed)."""
    path = family.shipped_checkpoint()
    return read_checkpoint(path, expected_model=family.name) if path is not None and path.exists() else None


def _headline(family, stored) -> str:
    if stored is None:
        return "-"
    if "test_bleu" in stored.metrics:  # translation: the test set's sacreBLEU, as in the model card
        return f"BLEU {stored.metrics['test_bleu']:.1f} (test)"
    metric = stored.metrics.get("valid_nll")
    if metric is None:
        return "-"
    unit = family.task.unit
    label = {"nats/token": "ppl", "nats/frame": "nats/frame NLL"}.get(unit, unit)  # a density's NLL may be negative
    if "teacher" in stored.data:  # a distilled student: the figure is its teacher's NLL of its samples
        return f"{nats_to(unit, metric):.3f} {label} (teacher's NLL of its samples)"
    return f"{nats_to(unit, metric):.3f} {label} (held-out)"


@app.callback()
@user_errors
def models(ctx: typer.Context) -> None:
    """List the registered models: name, modality, parameters, shipped checkpoint, headline metric."""
    if ctx.invoked_subcommand is not None:
        return
    rows = [("NAME", "MODALITY", "PARAMS", "CHECKPOINT", "METRIC", "ABOUT")]
    for name in family_names():
        family = get_family(name)
        stored = _shipped(family)
        config = family.config(stored.config if stored else None)
        params = sum(p.numel() for p in family.build(config).parameters())
        shipped = family.default_checkpoint if stored else f"{family.default_checkpoint} (not installed)" if family.default_checkpoint else "-"
        rows.append((name, family.modality, _count(params), shipped, _headline(family, stored), family.summary))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])


@app.command()
@user_errors
def info(
    name: Annotated[str, typer.Argument(help="Registered model name, or a checkpoint file (.safetensors).", show_default=False)],
    plot: Annotated[Path | None, typer.Option(
        help="Draw the training and held-out curves of the checkpoint's run (its metrics log) to this PNG."
    )] = None,
    force: Force = False,
) -> None:
    """Config, parameter count, receptive field and checkpoint of one model (the shipped one, or the
    checkpoint file given)."""
    if plot is not None:
        check_new(plot, force)
    if _is_checkpoint_path(name):
        stored = read_checkpoint(name)
        family = get_family(stored.model_name)
    else:
        family = get_family(name)
        stored = _shipped(family)
    records = None
    if plot is not None:  # read before anything is printed: a missing log is the one line said
        if stored is None:
            raise ArcliError(f"'{family.name}' has no shipped checkpoint to plot: give the checkpoint file of a training run")
        records = read_metrics(metrics_log_path(stored.path))
    config = family.config(stored.config if stored else None)
    if stored is not None:
        check_fits(stored, family.build, config)
    model = family.build(config)
    typer.echo(f"{family.name}: {family.summary}")
    typer.echo(f"modality: {family.modality}")
    typer.echo(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    for key, value in family.task.info(family, model).items():
        typer.echo(f"{key}: {value}")
    typer.echo("config:" + ("" if stored else " (defaults; no shipped checkpoint)"))
    for key, value in dataclasses.asdict(config).items():
        typer.echo(f"  {key} = {value}")
    if stored:
        typer.echo(f"checkpoint: {stored.path}")
        typer.echo(f"  metrics: {json.dumps(stored.metrics)}")
        typer.echo(f"  data: {json.dumps(stored.data)}")  # what it was trained on: shape, classes and their names, speakers ...
        if stored.training:
            typer.echo(f"  training: {json.dumps(stored.training)}")
    if plot is not None and stored is not None and records is not None:
        draw_curves(plot, records, family.task.unit, f"{family.name}: {stored.path.name}, training and held-out {family.task.unit}")
        typer.echo(f"wrote {plot} (from {metrics_log_path(stored.path)})", err=True)


def _is_checkpoint_path(name: str) -> bool:
    return name.endswith(".safetensors") or os.sep in name or Path(name).is_file()


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"
