"""Options shared by several subcommands, declared once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from arcli.decoding import DecodingOptions


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class StrategyChoice(str, Enum):
    greedy = "greedy"
    sample = "sample"
    beam = "beam"


DECODING = "Decoding"

ModelName = Annotated[str, typer.Argument(help="Registered model name (see `arcli models`).", show_default=False)]
Checkpoint = Annotated[
    Path | None, typer.Option("--checkpoint", "-c", help="Checkpoint file (.safetensors); default: the model's shipped one.")
]
Device = Annotated[DeviceChoice, typer.Option(help="auto: cuda, then mps, then cpu.")]
Seed = Annotated[int | None, typer.Option(help="Seed for a repeatable run.")]
Output = Annotated[str, typer.Option("--output", "-o", help="Output file; '-' for stdout.")]
Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite output files that already exist.")]
Threads = Annotated[
    int | None,
    typer.Option(help="CPU threads for torch; default 1 when generating one step at a time on the CPU (more threads only add waiting), torch's own otherwise."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]

Strategy = Annotated[
    StrategyChoice | None, typer.Option(help="Search strategy (default: the model's usual one).", rich_help_panel=DECODING)
]
Temperature = Annotated[float | None, typer.Option(help="Sampling temperature (> 0).", rich_help_panel=DECODING)]
TopK = Annotated[int | None, typer.Option(help="Sample only from the k most likely tokens.", rich_help_panel=DECODING)]
TopP = Annotated[float | None, typer.Option(help="Nucleus sampling: smallest set with this probability mass, in (0, 1].", rich_help_panel=DECODING)]
BeamSize = Annotated[int, typer.Option(help="Beam width for --strategy beam.", rich_help_panel=DECODING)]
NBest = Annotated[int, typer.Option(help="Hypotheses to return per input (beam or sample).", rich_help_panel=DECODING)]
LengthPenalty = Annotated[
    float, typer.Option(help="Beam ranks finished outputs by logprob / length**penalty (0: by logprob).", rich_help_panel=DECODING)
]
MaxLength = Annotated[int | None, typer.Option(help="Most tokens to generate.", rich_help_panel=DECODING)]
MinLength = Annotated[int, typer.Option(help="Fewest tokens before an end-of-sequence.", rich_help_panel=DECODING)]
NoRepeatNGram = Annotated[
    int | None, typer.Option(help="Never repeat an n-gram of this many tokens within an output (every strategy).", rich_help_panel=DECODING)
]
RepetitionPenalty = Annotated[
    float | None,
    typer.Option(help="Scores of tokens already in the output are multiplied by this (> 0; > 1 discourages repeats; every strategy).",
                 rich_help_panel=DECODING),
]


def decoding(strategy: StrategyChoice | None = None, **options) -> DecodingOptions:
    """The command's decoding options as one object (`strategy` None: the task's default)."""
    return DecodingOptions(strategy=strategy.value if strategy else None, **options)
