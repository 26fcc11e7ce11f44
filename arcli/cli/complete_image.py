"""`arcli complete-image`: fill in the hidden part of images."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from arcli.cli import options as opt
from arcli.cli.common import load, progress_bar, user_errors
from arcli.errors import OptionError
from arcli.registry import get_family
from arcli.tasks import CompleteRequest


@user_errors
def complete_image(
    model: opt.ModelName,
    images: Annotated[list[Path], typer.Argument(help="Images to complete (any size or mode; converted to the model's).", show_default=False)],
    mask: Annotated[str, typer.Option(help="What is hidden: bottom, top, left, right, center, random, or a mask PNG (white = hidden).")] = "bottom",
    count: Annotated[int, typer.Option("--count", "-n", help="Completions per image.")] = 8,
    output: opt.Output = "completions.png",
    output_dir: Annotated[Path | None, typer.Option(help="Also write each completion as its own PNG here.")] = None,
    label: Annotated[int | None, typer.Option(help="Class label of a conditional model.")] = None,
    checkpoint: opt.Checkpoint = None,
    device: opt.Device = opt.DeviceChoice.auto,
    threads: opt.Threads = None,
    seed: opt.Seed = None,
    force: opt.Force = False,
    quiet: opt.Quiet = False,
    strategy: opt.Strategy = None,
    temperature: opt.Temperature = None,
    top_k: opt.TopK = None,
    top_p: opt.TopP = None,
    beam_size: opt.BeamSize = 5,
    nbest: opt.NBest = 1,
    length_penalty: opt.LengthPenalty = 1.0,
) -> None:
    """Complete the hidden part of each IMAGE; the grid shows original, occluded input and completions.

    Known pixels are kept exactly. Pixels after the hole in raster order are honoured by importance
    resampling: proposals are drawn with the known pixels forced, then resampled by the likelihood
    the model gives the known pixels that follow the hole. A model that generates in any order
    (MADE) needs none of that: it generates in an ordering with every known pixel first, so each
    completion is an exact sample of p(hidden | known), for any mask.
    """
    if count < 1:
        raise OptionError(f"--count must be >= 1, got {count}")
    decoding = opt.decoding(strategy, temperature=temperature, top_k=top_k, top_p=top_p, beam_size=beam_size, nbest=nbest,
                            length_penalty=length_penalty, seed=seed)
    request = CompleteRequest(
        images=images, mask=mask, output=output, count=count, output_dir=output_dir, decoding=decoding, label=label, force=force,
    )
    family = get_family(model)
    decoding.build("sample")
    family.task.check_options(family, "complete-image", request)  # before loading anything, after the values are checked
    loaded = load(model, checkpoint, device.value, threads, stepwise=True)
    update, close = progress_bar(loaded.family.task.progress_unit, quiet)
    try:
        loaded.family.task.complete_image(loaded, dataclasses.replace(request, progress=update))
    finally:
        close()
