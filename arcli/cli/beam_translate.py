"""`arcli beam-translate`: translate text line by line, ready for `| sacrebleu ref.txt`."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from arcli.cli import options as opt
from arcli.cli.common import load, progress_bar, user_errors
from arcli.errors import OptionError
from arcli.registry import get_family
from arcli.tasks import TranslateRequest


class ScoresChoice(str, Enum):
    tokens = "tokens"


@user_errors
def beam_translate(
    model: opt.ModelName,
    input: Annotated[Path | None, typer.Argument(help="Text file, one sentence per line; stdin when omitted.", show_default=False)] = None,
    output: opt.Output = "-",
    batch_size: Annotated[int, typer.Option(help="Sentences decoded together.")] = 32,
    max_length_ratio: Annotated[float | None, typer.Option(help="At most this many target tokens per source token (plus 10); --max-length caps it.")] = 2.0,
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
    max_length: opt.MaxLength = None,
    min_length: opt.MinLength = 0,
    no_repeat_ngram: opt.NoRepeatNGram = None,
    repetition_penalty: opt.RepetitionPenalty = None,
    prefix: Annotated[str | None, typer.Option(
        help="Start every translation with this text (forced, and counted in its score).", rich_help_panel=opt.DECODING,
    )] = None,
    print_scores: Annotated[ScoresChoice | None, typer.Option(
        help="tokens: write `index<TAB>translation<TAB>log-probability<TAB>each token's log-probability` (nats).",
    )] = None,
    alignment: Annotated[bool, typer.Option(
        "--alignment", help="Add a column of source-target word alignments from the cross-attention (Pharaoh i-j pairs).",
    )] = False,
) -> None:
    """Translate INPUT (or stdin) with MODEL: exactly one output line per input line, in order.

    With --nbest N > 1 each input gives N lines `index<TAB>score<TAB>hypothesis`.
    """
    if batch_size < 1:
        raise OptionError(f"--batch-size must be >= 1, got {batch_size}")
    if max_length_ratio is not None and max_length_ratio <= 0:
        raise OptionError(f"--max-length-ratio must be > 0, got {max_length_ratio}")
    decoding = opt.decoding(
        strategy, temperature=temperature, top_k=top_k, top_p=top_p, beam_size=beam_size, nbest=nbest, length_penalty=length_penalty,
        max_length=max_length, min_length=min_length, no_repeat_ngram=no_repeat_ngram, repetition_penalty=repetition_penalty,
        prefix=prefix, seed=seed,
    )
    request = TranslateRequest(
        input=input, output=output, decoding=decoding, max_length_ratio=max_length_ratio, batch_size=batch_size,
        print_scores=print_scores.value if print_scores else None, alignment=alignment, force=force,
    )
    family = get_family(model)
    decoding.build(family.task.default_strategy)
    family.task.check_options(family, "beam-translate", request)  # before loading anything, after the values are checked
    loaded = load(model, checkpoint, device.value, threads, stepwise=True)
    update, close = progress_bar("sent", quiet)
    try:
        loaded.family.task.translate(loaded, dataclasses.replace(request, progress=update))
    finally:
        close()
