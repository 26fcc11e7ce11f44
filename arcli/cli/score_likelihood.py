"""`arcli score-likelihood`: exact log-likelihood of files under a model, in the field's units."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from arcli.cli import options as opt
from arcli.cli.common import load, user_errors
from arcli.errors import OptionError
from arcli.tasks import ScoreRequest


@user_errors
def score_likelihood(
    model: opt.ModelName,
    inputs: Annotated[list[Path] | None, typer.Argument(help="Files to score (audio, images, text).", show_default=False)] = None,
    output: opt.Output = "-",
    src: Annotated[Path | None, typer.Option(help="Translation: source sentences, one per line.")] = None,
    tgt: Annotated[Path | None, typer.Option(help="Translation: target sentences, one per line.")] = None,
    heatmap: Annotated[Path | None, typer.Option(help="Images: draw per-pixel surprise to this PNG.")] = None,
    batch_size: Annotated[int, typer.Option(help="Inputs scored together.")] = 16,
    samples: Annotated[int | None, typer.Option(
        help="Latent-variable models (vrnn): importance samples K per file for the estimate of log p(x) [default: 100]."
    )] = None,
    checkpoint: opt.Checkpoint = None,
    device: opt.Device = opt.DeviceChoice.auto,
    threads: opt.Threads = None,
    force: opt.Force = False,
) -> None:
    """Score files under MODEL: one tab-separated line per input on stdout, a summary on stderr."""
    if batch_size < 1:
        raise OptionError(f"--batch-size must be >= 1, got {batch_size}")
    if not inputs and src is None:
        raise OptionError("give files to score (or --src and --tgt for a translation model)")
    if samples is not None and samples < 1:
        raise OptionError(f"--samples must be >= 1, got {samples}")
    loaded = load(model, checkpoint, device.value, threads)
    if samples is not None and not loaded.family.task.importance_sampled:
        raise OptionError(f"--samples is for latent-variable models (vrnn); '{model}' is scored exactly")
    request = ScoreRequest(inputs=list(inputs or []), output=output, heatmap=heatmap, src=src, tgt=tgt, force=force,
                           batch_size=batch_size, samples=samples)
    loaded.family.task.score(loaded, request)
