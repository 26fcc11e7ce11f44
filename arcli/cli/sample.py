"""`arcli sample`: generate new audio, images or text from a model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from arcli.cli import options as opt
from arcli.cli.common import load, progress_bar, user_errors
from arcli.errors import OptionError
from arcli.registry import get_family
from arcli.tasks import SampleRequest

MAX_COUNT = 1024  # samples per run, one batch: every row holds its own decoding caches (layers x channels x positions)
MAX_TOTAL_SECONDS = 1800.0  # audio per run, all samples together: 28.8M samples at 16 kHz, held until written


@user_errors
def sample(
    model: opt.ModelName,
    output: opt.Output = "-",
    count: Annotated[int, typer.Option("--count", "-n", help="How many samples (generated as one batch).")] = 1,
    seconds: Annotated[float | None, typer.Option(help="Audio: length in seconds.")] = None,
    speaker: Annotated[int | None, typer.Option(help="Audio: speaker id of a conditional model.")] = None,
    label: Annotated[int | None, typer.Option(help="Images: class label of a conditional model.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Text: the start of the text to continue.")] = None,
    spectrogram: Annotated[Path | None, typer.Option(help="Audio: also draw the spectrogram to this PNG.")] = None,
    mel_from: Annotated[Path | None, typer.Option(
        help="Vocoder: resynthesise this clip (wav/flac/ogg) from its log-mel frames, or take frames from a .npy (frames x mels)."
    )] = None,
    text: Annotated[str | None, typer.Option(help="Text-to-speech: the words to speak (long text is cut at sentence ends).")] = None,
    text_file: Annotated[Path | None, typer.Option(help="Text-to-speech: one utterance per line, one output file each ('-': stdin).")] = None,
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
) -> None:
    """Generate new samples from MODEL (its shipped checkpoint unless --checkpoint)."""
    if count < 1:
        raise OptionError(f"--count must be >= 1, got {count}")
    # One run generates its samples as one batch and holds them in memory until they are written:
    # refuse up front what could not finish, rather than be killed for memory hours later.
    if count > MAX_COUNT:
        raise OptionError(f"--count {count} is more than the {MAX_COUNT} samples one run generates (as one batch, in memory); "
                          "run several times with different --seed values")
    if seconds is not None and count > 1 and count * seconds > MAX_TOTAL_SECONDS:  # one sample's length: the task's own limit
        raise OptionError(f"--count {count} x --seconds {seconds:g} is {count * seconds:g} s of audio, more than the "
                          f"{MAX_TOTAL_SECONDS:g} s one run holds in memory; ask for fewer or shorter samples")
    decoding = opt.decoding(
        strategy, temperature=temperature, top_k=top_k, top_p=top_p, beam_size=beam_size, nbest=nbest, length_penalty=length_penalty,
        max_length=max_length, min_length=min_length, no_repeat_ngram=no_repeat_ngram, repetition_penalty=repetition_penalty, seed=seed,
    )
    request = SampleRequest(
        output=output, count=count, decoding=decoding, seconds=seconds, speaker=speaker, label=label,
        prompt=prompt, spectrogram=spectrogram, mel_from=mel_from, text=text, text_file=text_file, force=force,
    )
    family = get_family(model)
    decoding.build(family.task.default_strategy)
    family.task.check_options(family, "sample", request)  # before loading anything, after the values are checked
    loaded = load(model, checkpoint, device.value, threads, stepwise=True)
    update, close = progress_bar(loaded.family.task.progress_unit, quiet)
    try:
        loaded.family.task.sample(loaded, dataclasses.replace(request, progress=update))
    finally:
        close()
