"""Tasks: what each modality does for the subcommands.

A task sits between the CLI and the library. It turns a subcommand's request into data loading,
engine calls and files written, for one modality (audio, image, text ...). The CLI modules parse
options and hand a request to `family.task`; a task refuses a subcommand it does not serve with
one clear line. Each task declares, per subcommand, the options it takes (`Task.options`), and
`check_options` refuses the others in one message, before anything is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from arcli.decoding import DecodingOptions
from arcli.errors import ArcliError, OptionError
from arcli.units import LN2, nats_to  # noqa: F401  (re-exported for the tasks and the CLI)

if TYPE_CHECKING:
    from arcli.checkpoint import Checkpoint
    from arcli.registry import ModelFamily
    from arcli.training import LossOutput, TrainData


@dataclass
class Loaded:
    """A model ready to use: the family, the module on its device, and its checkpoint."""

    family: ModelFamily
    model: torch.nn.Module
    checkpoint: Checkpoint
    device: torch.device


@dataclass(frozen=True)
class TrainRequest:
    data: list[Path] = field(default_factory=list)
    valid: list[Path] = field(default_factory=list)  # empty: the task holds out part of `data`
    valid_fraction: float = 0.05
    src: Path | None = None  # translation: parallel text, one sentence per line
    tgt: Path | None = None
    valid_src: Path | None = None  # None: the task holds out part of src/tgt
    valid_tgt: Path | None = None
    class_names: list[str] | None = None  # images: names for people of the classes, in the order of the class ids
    teacher: Path | None = None  # parallel-wavenet: the checkpoint it is distilled from


@dataclass
class TrainingSetup:
    config: Any  # the family's config dataclass, completed from the data (e.g. speaker count)
    data: TrainData
    data_meta: dict  # stored in the checkpoint: what the model expects (rate, shape, levels ...)
    tokenizer: dict | None = None


@dataclass(frozen=True)
class SampleRequest:
    output: str  # a path, or "-" for stdout
    count: int = 1
    decoding: DecodingOptions = DecodingOptions()
    seconds: float | None = None  # audio
    speaker: int | None = None  # audio, conditional models
    label: int | None = None  # images, class-conditional models
    prompt: str | None = None  # text
    spectrogram: Path | None = None  # audio: also draw the result
    mel_from: Path | None = None  # vocoder: a clip to resynthesise, or a .npy of feature frames
    text: str | None = None  # text-to-speech: the words to speak
    text_file: Path | None = None  # text-to-speech: one utterance per line ('-' for stdin)
    force: bool = False  # overwrite existing output files
    progress: Callable[[int, int], None] | None = None


@dataclass(frozen=True)
class ScoreRequest:
    inputs: list[Path]
    output: str = "-"
    heatmap: Path | None = None  # images: per-pixel surprise
    src: Path | None = None  # translation
    tgt: Path | None = None
    force: bool = False
    batch_size: int = 16
    samples: int | None = None  # latent-variable models: importance samples per input (None: the task's default)


@dataclass(frozen=True)
class CompleteRequest:
    images: list[Path]
    mask: str  # bottom | top | left | right | center | random | path to a mask PNG
    output: str
    count: int = 8
    output_dir: Path | None = None
    decoding: DecodingOptions = DecodingOptions()
    label: int | None = None
    force: bool = False
    progress: Callable[[int, int], None] | None = None


@dataclass(frozen=True)
class TranslateRequest:
    input: Path | None  # None: stdin
    output: str = "-"
    decoding: DecodingOptions = DecodingOptions()
    max_length_ratio: float | None = None  # max target tokens per source token (with --max-length as a cap)
    batch_size: int = 32
    print_scores: str | None = None  # "tokens": TSV with each token's log-probability
    alignment: bool = False  # a column of source-target word alignments from the cross-attention
    force: bool = False
    progress: Callable[[int, int], None] | None = None


# request fields that every command takes (or that are not options): never refused
_ALWAYS = {"output", "force", "progress", "decoding", "input", "images", "inputs", "mask", "batch_size", "max_length_ratio"}
DECODING_OPTIONS = ("--strategy", "--temperature", "--top-k", "--top-p", "--beam-size", "--nbest", "--length-penalty",
                    "--max-length", "--min-length", "--no-repeat-ngram", "--repetition-penalty", "--prefix", "--seed")
# the decoding options of a search over tokens: a model that draws real values takes none of them
TOKEN_SEARCH_OPTIONS = tuple(name for name in DECODING_OPTIONS if name not in ("--strategy", "--temperature", "--seed", "--prefix"))


def given_options(request: object) -> list[str]:
    """The `--option` names set away from their defaults in a request (its decoding options included)."""
    names = [
        "--" + item.name.replace("_", "-") for item in dataclasses.fields(request)
        if item.name not in _ALWAYS and getattr(request, item.name) != item.default
    ]
    decoding = getattr(request, "decoding", None)
    return names + (decoding.given() if decoding is not None else [])


class Task:
    """Base class: every subcommand is refused until a modality implements it."""

    modality = ""
    unit = "nats/token"  # how training and scoring report likelihood
    default_strategy = "sample"
    progress_unit = "tok"  # what the progress bar counts
    importance_sampled = False  # scores latent-variable models by importance sampling (takes --samples)
    # per subcommand, the options this task takes; a subcommand not listed is refused by its method
    options: dict[str, frozenset[str]] = {}
    # why an option a user may expect is not taken, said with the refusal
    option_notes: dict[str, str] = {}

    def check_options(self, family: ModelFamily, command: str, request: object) -> None:
        """Refuse, in one line, every option `request` sets that this task does not take for `command`."""
        takes = self.options.get(command)
        if takes is None:
            return
        unused = [name for name in given_options(request) if name not in takes]
        if not unused:
            return
        notes = "; ".join(dict.fromkeys(self.option_notes[name] for name in unused if name in self.option_notes))
        raise OptionError(
            f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to the {self.modality} model '{family.name}'"
            f"{': ' + notes if notes else ''} (`arcli {command}` takes {', '.join(sorted(takes)) or 'no options'} with it)"
        )

    def _refuse(self, family: ModelFamily, what: str) -> ArcliError:
        return ArcliError(f"'{family.name}' is {_article(self.modality)} {self.modality} model: it cannot {what} (see `arcli models`)")

    def info(self, family: ModelFamily, model: torch.nn.Module) -> dict[str, str]:
        """Extra lines for `arcli models info` (receptive field, sample rate ...)."""
        return {}

    def prepare_training(self, family: ModelFamily, config: Any, request: TrainRequest) -> TrainingSetup:
        raise self._refuse(family, "be trained")

    def loss(self, model: torch.nn.Module, batch: Any) -> LossOutput:
        raise NotImplementedError

    def sample(self, loaded: Loaded, request: SampleRequest) -> None:
        raise self._refuse(loaded.family, "sample")

    def score(self, loaded: Loaded, request: ScoreRequest) -> None:
        raise self._refuse(loaded.family, "score files")

    def complete_image(self, loaded: Loaded, request: CompleteRequest) -> None:
        raise self._refuse(loaded.family, "complete images (complete-image needs an image model)")

    def translate(self, loaded: Loaded, request: TranslateRequest) -> None:
        raise self._refuse(loaded.family, "translate (beam-translate needs a translation model)")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
