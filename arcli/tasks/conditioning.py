"""What an audio family's WaveNet is conditioned on, beside an optional speaker: the audio task's contract.

`AudioTask` (arcli/tasks/audio.py) serves every WaveNet-shaped audio family through one of these:
- `Unconditioned` (`wavenet`): no frames; the length comes from --seconds.
- `MelFrames` (`wavenet-vocoder`): log-mel frames of a clip (arcli/audio/features.py), from
  `--mel-from CLIP|FRAMES.npy`; the clip's own length.
- `LinguisticFrames` (`wavenet-tts`): phonemes with their timing and a pitch contour from espeak-ng's
  front end (arcli/audio/linguistic.py), from `--text` or `--text-file`; training clips carry their
  phonemes in a `<clip>.json` beside them (examples/speech/make_tts_corpus.py).

A provider says whether speaker sub-folders are speakers (`uses_speakers`), fits the model's
config to the training data (`fit`, whose `meta` goes into the checkpoint's data), computes a clip's
frames for training and scoring (`clip_frames`), and turns a sample request into utterances
(`utterances`): each output file is one utterance, made of one or more pieces (frames, samples)
that are generated side by side in one batch and joined in order.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import soxr
import torch

from arcli.audio.espeak import DEFAULT_PITCH, DEFAULT_SPEED, Phone, render
from arcli.audio.features import MelSpec, log_mel, samples_for
from arcli.audio.io import load_audio
from arcli.audio.linguistic import Inventory, pitch_contour
from arcli.errors import DataError, OptionError
from arcli.models.wavenet import WaveNetConfig

Piece = tuple[torch.Tensor, int]  # (frames (F, C), samples to generate from them)


class Unconditioned:
    kind = "none"
    uses_speakers = True

    def fit(self, config: WaveNetConfig, train: list[Path]) -> tuple[WaveNetConfig, dict]:
        return config, {}

    def clip_frames(self, path: Path, audio: torch.Tensor, config: WaveNetConfig, meta: dict) -> None:
        return None

    def describe(self, config: WaveNetConfig, meta: dict) -> dict[str, str]:
        return {}

    def utterances(self, config: WaveNetConfig, meta: dict, request, speaker: str | None) -> list[list[Piece]] | None:
        for option, value in (("--mel-from", request.mel_from), ("--text", request.text), ("--text-file", request.text_file)):
            if value is not None:
                raise OptionError(f"{option} does not apply to an unconditional WaveNet: it takes --seconds (and --speaker)")
        return None


class MelFrames:
    kind = "log-mel"
    uses_speakers = False  # a vocoder hears the voice in its frames: speaker sub-folders are only folders

    def spec(self, config: WaveNetConfig) -> MelSpec:
        return MelSpec(sample_rate=config.sample_rate, n_mels=config.cond_channels, hop=config.cond_hop)

    def fit(self, config: WaveNetConfig, train: list[Path]) -> tuple[WaveNetConfig, dict]:
        return config, {"kind": self.kind, **dataclasses.asdict(self.spec(config))}

    def clip_frames(self, path: Path, audio: torch.Tensor, config: WaveNetConfig, meta: dict) -> torch.Tensor:
        return log_mel(audio, self.spec(config))

    def describe(self, config: WaveNetConfig, meta: dict) -> dict[str, str]:
        return {"conditioning": f"{config.cond_channels} log-mel bins every {config.cond_hop} samples "
                                f"({1000 * config.cond_hop / config.sample_rate:g} ms), linearly interpolated"}

    def utterances(self, config: WaveNetConfig, meta: dict, request, speaker: str | None) -> list[list[Piece]]:
        for option, value in (("--text", request.text), ("--text-file", request.text_file)):
            if value is not None:
                raise OptionError(f"{option} is for wavenet-tts; a vocoder resynthesises audio from --mel-from CLIP.wav (or FRAMES.npy)")
        if request.mel_from is None:
            raise OptionError("a vocoder resynthesises audio from log-mel frames: give --mel-from CLIP.wav (or FRAMES.npy)")
        if request.seconds is not None:
            raise OptionError("--seconds does not apply to a vocoder: the length comes from --mel-from")
        path = request.mel_from
        if path.suffix.lower() != ".npy":
            audio = load_audio(path, config.sample_rate)
            return [[(log_mel(audio, self.spec(config)), len(audio))]]
        if not path.is_file():
            raise OptionError(f"--mel-from: no such file: '{path}'")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(f"--mel-from {path}: not a readable .npy array ({error})") from None
        if array.ndim != 2 or array.shape[1] != config.cond_channels or len(array) < 2 or not np.issubdtype(array.dtype, np.number):
            raise DataError(
                f"--mel-from {path}: expected frames x {config.cond_channels} log-mel values (at least 2 frames), "
                f"got an array of shape {array.shape}"
            )
        frames = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if not torch.isfinite(frames).all():
            raise DataError(f"--mel-from {path}: the frames hold NaN or infinite values")
        return [[(frames, samples_for(len(frames), config.cond_hop))]]


MAX_PIECE_WORDS = 30  # a sentence longer than this is cut at its commas, then every MAX_PIECE_WORDS words
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")
_CLAUSE = re.compile(r"(?<=,)\s+")
_WORD = re.compile(r"\w", re.UNICODE)


def split_text(text: str) -> list[str]:
    """A line of text as pieces of at most MAX_PIECE_WORDS words: sentences (after . ! ? ; :),
    longer ones cut after commas, then every MAX_PIECE_WORDS words. Pieces without a letter or a
    digit are dropped."""
    pieces = []
    for sentence in _SENTENCE.split(text.strip()):
        parts = [sentence] if len(sentence.split()) <= MAX_PIECE_WORDS else _CLAUSE.split(sentence)
        for part in parts:
            words = part.split()
            pieces += [" ".join(words[i : i + MAX_PIECE_WORDS]) for i in range(0, len(words), MAX_PIECE_WORDS)]
    return [piece for piece in pieces if _WORD.search(piece)]


class LinguisticFrames:
    kind = "linguistic"
    uses_speakers = True

    def fit(self, config: WaveNetConfig, train: list[Path]) -> tuple[WaveNetConfig, dict]:
        sidecars = [self._sidecar(path) for path in train]
        inventory = Inventory.fit(phones for phones, _ in sidecars)
        if config.cond_channels not in (0, inventory.channels):
            raise OptionError(
                f"--set cond_channels={config.cond_channels}, but the data's {inventory.size} phonemes make {inventory.channels} "
                "features per frame: leave cond_channels out"
            )
        voices: dict[str, str] = {}
        for path, (_, voice) in zip(train, sidecars, strict=True):
            voices.setdefault(path.parent.name, voice)
        meta = {"kind": self.kind, "phonemes": list(inventory.phonemes), "hop": config.cond_hop, "voices": voices,
                "pitch": DEFAULT_PITCH, "speed": DEFAULT_SPEED, "front_end": "libespeak-ng phoneme events; pitch measured on its waveform"}
        return dataclasses.replace(config, cond_channels=inventory.channels), meta

    def _sidecar(self, path: Path) -> tuple[list[Phone], str]:
        sidecar = path.with_suffix(".json")
        try:
            info = json.loads(sidecar.read_text(encoding="utf-8"))
            phones = [Phone(str(name), float(start)) for name, start in info["phones"]]
            voice = str(info.get("voice", "en-us"))
        except FileNotFoundError:
            raise DataError(
                f"'{path}' has no '{sidecar.name}' beside it with its phonemes: wavenet-tts trains on clips made by "
                "examples/speech/make_tts_corpus.py"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"'{sidecar}': not a phoneme listing ({type(error).__name__}: {error})") from None
        if not phones:
            raise DataError(f"'{sidecar}' lists no phonemes")
        return phones, voice

    def _frames(self, phones: list[Phone], audio: torch.Tensor, config: WaveNetConfig, meta: dict) -> torch.Tensor:
        inventory = Inventory(tuple(meta["phonemes"]))
        f0 = pitch_contour(audio, config.sample_rate, config.cond_hop)
        return inventory.frames(phones, f0, len(audio) / config.sample_rate, config.cond_hop, config.sample_rate)

    def clip_frames(self, path: Path, audio: torch.Tensor, config: WaveNetConfig, meta: dict) -> torch.Tensor:
        phones, _ = self._sidecar(path)
        return self._frames(phones, audio, config, meta)

    def describe(self, config: WaveNetConfig, meta: dict) -> dict[str, str]:
        count = (config.cond_channels - 4) // 3 - 2  # Inventory.channels, less <sil> and <unk>
        return {"conditioning": f"{count} espeak-ng phonemes (current, previous, next), position and length, voicing and "
                                f"pitch, every {config.cond_hop} samples ({1000 * config.cond_hop / config.sample_rate:g} ms)",
                "front end": "libespeak-ng phoneme events; the pitch contour is measured on espeak-ng's rendering"}

    def utterances(self, config: WaveNetConfig, meta: dict, request, speaker: str | None) -> list[list[Piece]]:
        if request.mel_from is not None:
            raise OptionError("--mel-from is for wavenet-vocoder; wavenet-tts speaks --text or --text-file")
        if request.seconds is not None:
            raise OptionError("--seconds does not apply to wavenet-tts: the length comes from the text")
        if (request.text is None) == (request.text_file is None):
            raise OptionError("give the words to speak with --text \"...\" or --text-file FILE (one utterance per line), one of them")
        if request.text is not None:
            lines, where = [request.text], "--text"
        else:
            lines, where = _read_lines(request.text_file), f"--text-file {request.text_file}"
            if request.count != 1:
                raise OptionError("-n does not apply with --text-file: every line makes one file")
            if not lines:
                raise OptionError(f"{where}: the file has no lines with words to speak")
        voices = meta.get("voices") or {}
        voice = voices.get(speaker or "", next(iter(voices.values()), "en-us"))
        utterances = []
        for number, line in enumerate(lines, 1):
            pieces = split_text(line)
            if not pieces:
                shown = line if len(line) <= 40 else line[:37] + "..."
                at = where if request.text is not None else f"{where}, line {number}"
                raise OptionError(f"{at}: no words to speak in {shown!r}")
            utterances.append([self._piece(text, voice, config, meta) for text in pieces])
        return utterances

    def _piece(self, text: str, voice: str, config: WaveNetConfig, meta: dict) -> Piece:
        rendering = render(text, voice, int(meta.get("pitch", DEFAULT_PITCH)), int(meta.get("speed", DEFAULT_SPEED)))
        audio = torch.from_numpy(soxr.resample(rendering.audio, rendering.rate, config.sample_rate, quality="HQ")).clamp(-1, 1)
        if len(audio) < 2 * config.cond_hop:
            audio = torch.nn.functional.pad(audio, (0, 2 * config.cond_hop - len(audio)))
        return self._frames(rendering.phones, audio, config, meta), len(audio)


def _read_lines(path: Path) -> list[str]:
    try:
        text = (Path("/dev/stdin") if str(path) == "-" else path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OptionError(f"--text-file: no such file: '{path}'") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"--text-file {path}: not readable UTF-8 text ({error})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


__all__ = ["Unconditioned", "MelFrames", "LinguisticFrames", "split_text", "Piece"]
