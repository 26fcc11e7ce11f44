"""The `arcli` command: one root Typer app, one module per subcommand."""

from __future__ import annotations

from typing import Annotated

import typer

from arcli import __version__

app = typer.Typer(
    name="arcli",
    help="Train, sample and score autoregressive generative models of audio, images and text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"arcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Train, sample and score autoregressive generative models of audio, images and text.

    Results go to stdout or -o FILE; progress and summaries go to stderr.
    """


from arcli.cli import beam_translate, complete_image, models, sample, score_likelihood, train  # noqa: E402

app.add_typer(models.app, name="models")
app.command("train")(train.train)
app.command("sample")(sample.sample)
app.command("complete-image")(complete_image.complete_image)
app.command("beam-translate")(beam_translate.beam_translate)
app.command("score-likelihood")(score_likelihood.score_likelihood)


def main() -> None:
    app()
