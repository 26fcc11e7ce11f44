"""Raw audio: WaveNet over 8-bit mu-law samples, trained on crops, sampled to WAV, scored per file.

Which positions count. `forward(x)[:, t]` predicts x_t from the `receptive_field` samples before
it, with zeros (silence, "nothing") where a sequence has no past. That zero past is the truth at
the start of a clip -- generation starts from it too -- but not inside a crop cut from the middle
of a clip, whose first `receptive_field` positions would see zeros instead of the audio before the
cut. So a crop that starts at sample 0 of its clip counts every position, and any other crop counts
only positions t >= receptive_field. Training, held-out evaluation and scoring all follow this
one rule; held-out evaluation and scoring cover each sample exactly once with overlapping crops, so
they equal a forward pass over the whole file.

Training crops are `max(4 * receptive_field, 4000)` samples long, so at most a quarter of a crop
is context that the loss does not count (8188 samples, 512 ms at 16 kHz, for the default
receptive field of 2047: three quarters of the compute trains on counted positions, where crops of
twice the receptive field would spend half of it on context). Clips are drawn
in proportion to their length; clips shorter than a crop are used whole and padded, the padding
masked out of the loss. Clips shorter than the receptive field are refused.
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from arcli.audio.io import find_audio_files, load_audio, write_spectrogram_png, write_wav
from arcli.decoding import DecodingOptions, Sample, generate
from arcli.errors import DataError, OptionError
from arcli.models import wavenet_fused
from arcli.models.wavenet import PCM16_STEP, LocalCondition, TTSConfig, VocoderConfig, WaveNet, WaveNetConfig, gaussian_16bit_nats
from arcli.outputs import check_new, open_output
from arcli.outputs import note as _note
from arcli.registry import ModelFamily
from arcli.tasks import LN2, Loaded, SampleRequest, ScoreRequest, Task, TrainingSetup, TrainRequest
from arcli.tasks.conditioning import LinguisticFrames, MelFrames, Piece, Unconditioned
from arcli.tasks.waveform import check_gaussian_decoding, decode_samples, encode_samples, gaussian_rows
from arcli.training import LossOutput

DEFAULT_SECONDS = 2.0  # `arcli sample wavenet` without --seconds
MAX_SECONDS = 600.0  # more is almost surely a typo (ms for s): hours of compute on a CPU
MIN_CROP = 4000  # training crop floor in samples; the crop is max(4 * receptive_field, MIN_CROP)
SCORE_CHUNK = 1 << 16  # new samples scored per forward pass (plus receptive_field of context)
LISTED = 5  # offending files named in an error line


@dataclass(frozen=True)
class Clip:
    path: Path
    codes: torch.Tensor  # (T,) mu-law codes, uint8 when they fit
    speaker: int | None  # speaker id of a conditional model
    frames: torch.Tensor | None = None  # (F, C) feature frames of a locally conditioned model (log-mel)


class AudioBatch(NamedTuple):
    tokens: torch.Tensor  # (B, T) mu-law codes, zero-padded on the right
    counted: torch.Tensor  # (B, T) bool: positions that enter the loss (see the module docstring)
    speakers: torch.Tensor | None  # (B,) speaker ids, None for an unconditional model
    frames: torch.Tensor | None = None  # (B, F, C) feature frames (right-padded), locally conditioned models
    offsets: torch.Tensor | None = None  # (B,) where each row's first sample sits in its frames' timeline


def frame_slice(frames: torch.Tensor, start: int, length: int, hop: int) -> tuple[torch.Tensor, int]:
    """The frames that samples start .. start+length-1 interpolate between, and the first sample's
    position in them (as LocalCondition's offset)."""
    first = start // hop
    last = min(len(frames), (start + length - 1) // hop + 2)
    return frames[first:last], start - first * hop


def crop_length(receptive_field: int) -> int:
    """Training crop in samples: at most a quarter of it is context that the loss does not count."""
    return max(4 * receptive_field, MIN_CROP)


def windows(length: int, crop: int, receptive_field: int) -> list[tuple[int, int]]:
    """Crops covering a clip of `length` samples so that each sample is counted exactly once,
    with its full past: (start, first counted position within the crop) pairs. The first crop
    counts from 0 (the clip's true past is silence); each next one starts `receptive_field`
    samples before the previous one ends and counts from there."""
    if crop <= receptive_field:
        raise ValueError(f"crop {crop} must be longer than the receptive field {receptive_field}")
    spans = [(0, 0)]
    start = crop - receptive_field
    while start + receptive_field < length:
        spans.append((start, receptive_field))
        start += crop - receptive_field
    return spans


def make_batch(pieces: list[tuple[torch.Tensor, int]], speakers: list[int | None],
               frames: list[tuple[torch.Tensor, int]] | None = None) -> AudioBatch:
    """Right-pad (codes, first counted position) pieces into one batch, with their (frames, offset)
    for a locally conditioned model (frames padded by repeating the last one)."""
    length = max(len(codes) for codes, _ in pieces)
    tokens = torch.zeros(len(pieces), length, dtype=torch.long)
    counted = torch.zeros(len(pieces), length, dtype=torch.bool)
    for row, (codes, first) in enumerate(pieces):
        tokens[row, : len(codes)] = codes
        counted[row, first : len(codes)] = True
    ids = None if speakers[0] is None else torch.tensor(speakers, dtype=torch.long)
    if frames is None:
        return AudioBatch(tokens, counted, ids)
    most = max(len(f) for f, _ in frames)
    padded = torch.stack([torch.cat([f, f[-1:].expand(most - len(f), -1)]) for f, _ in frames])
    return AudioBatch(tokens, counted, ids, padded, torch.tensor([offset for _, offset in frames], dtype=torch.long))


class CropData:
    """Random crops of the training clips (from the given generator only); fixed crops covering
    every held-out sample once."""

    def __init__(self, train: list[Clip], valid: list[Clip], crop: int, receptive_field: int, hop: int = 0):
        self.train, self.valid = train, valid
        self.crop, self.receptive_field, self.hop = crop, receptive_field, hop  # hop: of the clips' frames, if any
        self.lengths = [len(clip.codes) for clip in train]
        self.weights = torch.tensor(self.lengths, dtype=torch.float64)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> AudioBatch:
        device = generator.device
        picks = torch.multinomial(self.weights.to(device), batch_size, replacement=True, generator=generator)
        uniforms = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
        crop, rf = self.crop, self.receptive_field
        pieces, speakers, frames = [], [], []
        for index, u in zip(picks.tolist(), uniforms.tolist(), strict=True):
            clip, length = self.train[index], self.lengths[index]
            start = 0
            if length > crop:
                # A start in [-rf, length - crop], clamped to 0: the clip's opening samples are
                # counted about as often as any other (a crop at 0 counts from its first position).
                start = max(0, int(u * (length - crop + 1 + rf)) - rf)
            pieces.append((clip.codes[start : start + crop].long(), 0 if start == 0 else rf))
            speakers.append(clip.speaker)
            if clip.frames is not None:
                frames.append(frame_slice(clip.frames, start, crop, self.hop))
        return make_batch(pieces, speakers, frames or None)

    def valid_batches(self, batch_size: int) -> Iterator[AudioBatch]:
        pieces, speakers, frames = [], [], []
        for clip in self.valid:
            for start, first in windows(len(clip.codes), self.crop, self.receptive_field):
                pieces.append((clip.codes[start : start + self.crop].long(), first))
                speakers.append(clip.speaker)
                if clip.frames is not None:
                    frames.append(frame_slice(clip.frames, start, self.crop, self.hop))
        for begin in range(0, len(pieces), batch_size):
            chunk = slice(begin, begin + batch_size)
            yield make_batch(pieces[chunk], speakers[chunk], frames[chunk] or None)


def sample_nats(model: torch.nn.Module, batch: AudioBatch) -> torch.Tensor:
    """-log p of every counted sample in nats, (B, T), zero elsewhere."""
    device = next(model.parameters()).device
    tokens = batch.tokens.to(device)
    condition = None if batch.speakers is None else batch.speakers.to(device)
    if batch.frames is not None:
        condition = LocalCondition(batch.frames.to(device), batch.offsets.to(device), condition)
    if getattr(model, "module", model).config.output == "gaussian":  # tokens are 16-bit codes
        nats = gaussian_16bit_nats(model(tokens * PCM16_STEP, condition), tokens)  # (B, T) float64
    else:
        logits = model(tokens, condition)  # (B, T, V)
        nats = F.cross_entropy(logits.transpose(1, 2).float(), tokens, reduction="none")  # (B, T)
    return nats * batch.counted.to(device)


def speaker_name(path: Path, label: str | None, names: list[str]) -> str | None:
    """The speaker a file is by: its first-level sub-folder (`label`) when that names a known
    speaker, else its own folder when that does (`valid/alice/3.wav` given by name), else None."""
    if label in names:
        return label
    return path.parent.name if path.parent.name in names else None


def _checkpoint_temperature(loaded: Loaded, decoding: DecodingOptions) -> tuple[DecodingOptions, str]:
    """The checkpoint's own sampling temperature (data["temperature"]) where the user gave none.

    A shipped audio model may store the temperature its samples were judged at (the model card says
    why); `--temperature 1` samples the model's own distribution, and greedy ignores it.
    """
    stored = loaded.checkpoint.data.get("temperature")
    if stored is None or decoding.temperature is not None or decoding.strategy not in (None, "sample"):
        return decoding, ""
    if not isinstance(stored, (int, float)) or isinstance(stored, bool) or not 0 < stored <= 10:
        raise DataError(f"the checkpoint's default temperature {stored!r} is not a number in (0, 10]")
    note = f"temperature {stored:g}, the checkpoint's default (--temperature 1 samples the model's own distribution)"
    return dataclasses.replace(decoding, temperature=float(stored)), note


def _load_clips(found: list[tuple[Path, int | None]], sample_rate: int, config: WaveNetConfig, frames_of=lambda path, audio: None) -> list[Clip]:
    """Read every clip as the model's codes, with its feature frames `frames_of(path, audio)` (None without)."""
    clips = []
    for path, speaker in found:
        audio = load_audio(path, sample_rate)
        frames = frames_of(path, audio)
        clips.append(Clip(path, encode_samples(audio, config), speaker, frames))
    return clips


def _listing(names: list[str], count: int) -> str:
    """'0=alice, 1=bob' (ids alone where the checkpoint has no names)."""
    return ", ".join(f"{i}={names[i]}" if i < len(names) else str(i) for i in range(count))


class AudioTask(Task):
    """Every WaveNet-shaped audio family; `features` says what its frames are (arcli/tasks/conditioning.py)."""

    modality = "audio"
    unit = "bits/sample"
    default_strategy = "sample"
    progress_unit = "sample"
    options = {"sample": frozenset({
        "--count", "--seconds", "--speaker", "--spectrogram", "--mel-from", "--text", "--text-file",
        "--strategy", "--temperature", "--top-k", "--top-p", "--beam-size", "--length-penalty", "--seed",
    })}
    option_notes = {
        "--max-length": "give the length with --seconds", "--min-length": "give the length with --seconds",
        "--nbest": "ask for several samples with -n COUNT",
    }

    def __init__(self, features=None):
        self.features = Unconditioned() if features is None else features

    def info(self, family: ModelFamily, model: torch.nn.Module) -> dict[str, str]:
        config, rf = model.config, model.receptive_field
        rate = config.sample_rate
        return {
            "receptive field": f"{rf} samples = {1000 * rf / rate:.1f} ms at {rate} Hz",
            "sample rate": f"{rate} Hz",
            "quantisation": f"{config.quantization_channels} mu-law levels (mu = {config.quantization_channels - 1})"
            if config.output == "categorical" else f"none: a Gaussian over [-1, 1] (log-scale >= {config.min_log_scale:g}), 16-bit audio",
            "speakers": str(config.num_speakers) if config.num_speakers else "none (unconditional)",
            "training crop": f"{crop_length(rf)} samples",
            **self.features.describe(config, {}),
        }

    # --- training --------------------------------------------------------------------------------

    def prepare_training(self, family: ModelFamily, config: WaveNetConfig, request: TrainRequest) -> TrainingSetup:
        if not 0 < request.valid_fraction < 1:
            raise ValueError(f"valid_fraction must lie in (0, 1), got {request.valid_fraction}")
        found = find_audio_files(request.data)
        if not self.features.uses_speakers:
            found = [(path, None) for path, _ in found]
        names = sorted({label for _, label in found if label is not None})
        if names:
            unlabelled = [path for path, label in found if label is None]
            if unlabelled:
                raise DataError(
                    f"'{unlabelled[0]}' is not in a speaker sub-folder, but other files are ({', '.join(names[:LISTED])}): "
                    "put every file in a speaker sub-folder (DATA/<speaker>/*.wav), or none"
                )
            if config.num_speakers not in (0, len(names)):
                raise OptionError(
                    f"--set num_speakers={config.num_speakers}, but the data has {len(names)} speaker sub-folders "
                    f"({', '.join(names[:LISTED])}{' ...' if len(names) > LISTED else ''}): leave num_speakers out"
                )
            config = dataclasses.replace(config, num_speakers=len(names))
        elif config.num_speakers:
            raise OptionError(
                f"--set num_speakers={config.num_speakers}, but the data has no speaker sub-folders (DATA/<speaker>/*.wav) "
                "to take speaker ids from"
            )
        ids = {name: i for i, name in enumerate(names)}
        speaker = (lambda label: ids[label]) if names else (lambda label: None)

        if request.valid:
            held = find_audio_files(request.valid)
            if not self.features.uses_speakers:
                held = [(path, None) for path, _ in held]
            if names:
                held = [(path, speaker_name(path, label, names)) for path, label in held]
                strangers = [path for path, name in held if name is None]
                if strangers:
                    raise DataError(
                        f"held-out file '{strangers[0]}' is not in a folder named after a training speaker ({', '.join(names)})"
                    )
            train_files, valid_files = found, held
        else:
            train_files, valid_files = _hold_out(found, max(2, round(1 / request.valid_fraction)))

        mu = config.quantization_channels - 1 if config.output == "categorical" else None  # None: 16-bit samples
        rate = config.sample_rate
        config, features = self.features.fit(config, [path for path, _ in train_files])
        frames_of = lambda path, audio: self.features.clip_frames(path, audio, config, features)  # noqa: E731
        train = _load_clips([(path, speaker(label)) for path, label in train_files], rate, config, frames_of)
        valid = _load_clips([(path, speaker(label)) for path, label in valid_files], rate, config, frames_of)
        rf = family.build(config).receptive_field
        _refuse_short(train + valid, rf, rate)

        crop = crop_length(rf)
        samples, valid_samples = sum(len(c.codes) for c in train), sum(len(c.codes) for c in valid)
        meta = {
            "sample_rate": rate,
            "mu": mu,
            "speakers": names,
            "clips": len(train),
            "seconds": round(samples / rate, 3),
            "valid_clips": len(valid),
            "valid_seconds": round(valid_samples / rate, 3),
            "crop": crop,
        }
        if features:
            meta["features"] = features
        shown = ", ".join(names[:LISTED]) + (" ..." if len(names) > LISTED else "")
        who = f"{len(names)} speakers ({shown})" if names else "no speaker labels"
        print(
            f"data: {len(train)} clips, {samples / rate:.1f} s, {who}; held out: {len(valid)} clips, {valid_samples / rate:.1f} s; "
            f"receptive field {rf} samples, training crops of {crop} samples",
            file=sys.stderr,
        )
        return TrainingSetup(config=config, data=CropData(train, valid, crop, rf, config.cond_hop), data_meta=meta)

    def loss(self, model: torch.nn.Module, batch: AudioBatch) -> LossOutput:
        nll = sample_nats(model, batch).sum()
        count = int(batch.counted.sum())
        return LossOutput(objective=nll / max(count, 1), nll=nll.detach(), count=count)

    # --- sampling --------------------------------------------------------------------------------

    def sample(self, loaded: Loaded, request: SampleRequest) -> None:
        self.check_options(loaded.family, "sample", request)
        decoding = request.decoding
        if loaded.model.config.output == "gaussian":
            check_gaussian_decoding(decoding)
        rate = self._sample_rate(loaded)
        config = loaded.model.config
        speaker, speaker_note = self._speaker(loaded, request.speaker)
        names = list(loaded.checkpoint.data.get("speakers") or [])
        features = loaded.checkpoint.data.get("features") or {}
        utterances = self.features.utterances(config, features, request, names[speaker] if speaker is not None and speaker < len(names) else None)
        if utterances is None:  # unconditional: --seconds long
            seconds = DEFAULT_SECONDS if request.seconds is None else request.seconds
            if not 0 < seconds <= MAX_SECONDS:
                raise OptionError(f"--seconds must be > 0 and at most {MAX_SECONDS:g}, got {seconds:g}")
            if round(seconds * rate) < 1:
                raise OptionError(f"--seconds {seconds:g} is less than one sample at {rate} Hz")
            pieces: list[list[Piece | int]] = [[round(seconds * rate)]] * request.count
        else:  # every utterance request.count times, each output file one utterance
            pieces = [utterance for utterance in utterances for _ in range(request.count)]
            longest = max(sum(length for _, length in utterance) for utterance in utterances) / rate
            if longest > MAX_SECONDS:
                raise OptionError(f"the audio would last {longest:.0f} s, more than the {MAX_SECONDS:g} s one file may hold: give less")
        outputs = audio_outputs(request, len(pieces))
        if speaker_note:  # last: only once every check has passed
            _note(speaker_note)

        decoding, temperature_note = _checkpoint_temperature(loaded, decoding)
        if temperature_note:
            _note(temperature_note)
        strategy = decoding.build(self.default_strategy).strategy
        if isinstance(strategy, Sample) and decoding.seed is None:
            _note(f"seed {strategy.seed} (pass --seed {strategy.seed} to repeat this run)")
        rows = [piece for output in pieces for piece in output]  # generated side by side, joined per output
        condition = None if speaker is None else torch.full((len(rows),), speaker, dtype=torch.long)
        if utterances is None:
            length = rows[0]
        else:
            length = max(samples for _, samples in rows)
            most = max(len(frames) for frames, _ in rows)
            frames = torch.stack([torch.cat([f, f[-1:].expand(most - len(f), -1)]) for f, _ in rows])
            condition = LocalCondition(frames, None, condition)
        started = time.perf_counter()
        fused = wavenet_fused.plan(loaded.model, strategy, len(rows), loaded.device)  # None for a gaussian head
        if config.output == "gaussian":  # no tokens: drawn beside the engine
            tokens = gaussian_rows(loaded.model, strategy, decoding, length, condition, len(rows), request.progress)
        elif fused is not None:  # the same samples, each row only as long as it needs
            lengths = [length] * len(rows) if utterances is None else [samples for _, samples in rows]
            per_row = [None] * len(rows) if utterances is None else list(condition.frames)
            speakers = [speaker] * len(rows)
            tokens = wavenet_fused.generate(loaded.model, strategy, lengths, speakers, per_row, *fused, progress=request.progress)
        else:
            generated = generate(
                loaded.model, strategy, max_length=length, batch_size=len(rows), condition=condition, progress=request.progress
            )
            tokens = [row[0].tokens for row in generated]
        elapsed = time.perf_counter() - started

        decoded = iter(decode_samples(torch.as_tensor(row, dtype=torch.long), config) for row in tokens)
        audio = []
        for output in pieces:
            parts = [next(decoded)[: (piece if utterances is None else piece[1])] for piece in output]
            audio.append(torch.cat(parts))
        for path, clip in zip(outputs, audio, strict=True):
            write_wav(path, clip, rate)
        if request.spectrogram is not None:
            write_spectrogram_png(request.spectrogram, audio[0], rate)
        made = sum(len(clip) for clip in audio) / rate
        _note(
            f"generated {len(audio)} x {made / len(audio):.3g} s of audio in {elapsed:.1f} s "
            f"(real-time factor {elapsed / made:.2f}: seconds of compute per second of audio)"
        )
        if len(outputs) > 1:
            _note(f"wrote {outputs[0]} ... {outputs[-1]} ({len(outputs)} files)")

    def _sample_rate(self, loaded: Loaded) -> int:
        return int(loaded.checkpoint.data.get("sample_rate") or loaded.model.config.sample_rate)

    def _speaker(self, loaded: Loaded, requested: int | None) -> tuple[int | None, str]:
        """The speaker id to generate as, and a note to show when none was asked for."""
        count = loaded.model.config.num_speakers
        names = list(loaded.checkpoint.data.get("speakers") or [])
        if count == 0:
            if requested is not None:
                raise OptionError(f"--speaker: '{loaded.family.name}' was trained without speaker sub-folders; leave --speaker out")
            return None, ""
        if requested is None:
            return 0, f"no --speaker given: using speaker 0; speakers: {_listing(names, count)}"
        if not 0 <= requested < count:
            raise OptionError(f"--speaker {requested} is out of range: this model's speakers are {_listing(names, count)}")
        return requested, ""

    # --- scoring ---------------------------------------------------------------------------------

    def score(self, loaded: Loaded, request: ScoreRequest) -> None:
        name = loaded.family.name
        if request.heatmap is not None or request.src is not None or request.tgt is not None:
            raise OptionError(f"--heatmap, --src and --tgt do not apply to the audio model '{name}'")
        if not request.inputs:
            raise OptionError(f"give audio files or folders to score with '{name}'")
        check_new(request.output, request.force)
        rate = self._sample_rate(loaded)
        found = find_audio_files(request.inputs)
        speakers, note = self._score_speakers(loaded, found)
        config, features = loaded.model.config, loaded.checkpoint.data.get("features") or {}
        frames_of = lambda path, audio: self.features.clip_frames(path, audio, config, features)  # noqa: E731
        clips = _load_clips(speakers, rate, config, frames_of)  # every file read before any work, or any note
        if note:
            _note(note)
        rf = loaded.model.receptive_field
        total_nats, total_samples = 0.0, 0
        with open_output(request.output) as out:
            for clip in clips:
                nats, samples = self._clip_nats(loaded.model, clip, rf, request.batch_size), len(clip.codes)
                out.write(f"{clip.path}\t{nats / samples / LN2:.4f}\t{nats:.4f}\t{samples}\n")
                total_nats, total_samples = total_nats + nats, total_samples + samples
        print(
            f"columns: path, bits/sample, nats, samples; {len(clips)} files, {total_samples} samples "
            f"({total_samples / rate:.1f} s at {rate} Hz): {total_nats / total_samples / LN2:.4f} bits/sample overall",
            file=sys.stderr,
        )

    def _score_speakers(self, loaded: Loaded, found: list[tuple[Path, str | None]]) -> tuple[list[tuple[Path, int | None]], str]:
        """A conditional model scores a file as the speaker its folder is named after: the
        first-level sub-folder of a folder given, else the file's own folder; else speaker 0 (and
        the note returned says so)."""
        count = loaded.model.config.num_speakers
        if count == 0:
            return [(path, None) for path, _ in found], ""
        names = list(loaded.checkpoint.data.get("speakers") or [])[:count]
        chosen, unnamed = [], 0
        for path, label in found:
            name = speaker_name(path, label, names)
            unnamed += name is None
            chosen.append((path, 0 if name is None else names.index(name)))
        note = ""
        if unnamed:
            note = (
                f"{unnamed} of {len(found)} files are not in a folder named after a speaker of this model: "
                f"scored as speaker 0 (speakers: {_listing(names, count)})"
            )
        return chosen, note

    @torch.inference_mode()
    def _clip_nats(self, model: torch.nn.Module, clip: Clip, rf: int, batch_size: int) -> float:
        crop = rf + SCORE_CHUNK
        spans = windows(len(clip.codes), crop, rf)
        nats = 0.0
        for begin in range(0, len(spans), batch_size):
            chosen = spans[begin : begin + batch_size]
            pieces = [(clip.codes[start : start + crop].long(), first) for start, first in chosen]
            frames = None
            if clip.frames is not None:
                frames = [frame_slice(clip.frames, start, crop, model.config.cond_hop) for start, _ in chosen]
            batch = make_batch(pieces, [clip.speaker] * len(pieces), frames)
            nats += float(sample_nats(model, batch).double().sum())
        return nats


def _hold_out(found: list[tuple[Path, str | None]], every: int) -> tuple[list, list]:
    """Every `every`-th file of each speaker (the 1st, the every+1-th ...) is held out, so a
    speaker with two files or more has at least one held out; one with a single file has none."""
    groups: dict[str | None, list[int]] = {}
    for index, (_, label) in enumerate(found):
        groups.setdefault(label, []).append(index)
    held = {index for indices in groups.values() if len(indices) >= 2 for index in indices[::every]}
    if not held:
        raise DataError(
            f"{len(found)} audio file(s), none of which can be held out: every {every}th file of each speaker is held out "
            "for evaluation, which needs 2 files or more of a speaker; add files, or pass held-out files with --valid"
        )
    train = [item for index, item in enumerate(found) if index not in held]
    valid = [item for index, item in enumerate(found) if index in held]
    return train, valid


def _refuse_short(clips: list[Clip], receptive_field: int, rate: int) -> None:
    short = [clip for clip in clips if len(clip.codes) < receptive_field]
    if short:
        named = ", ".join(f"'{clip.path}' ({len(clip.codes)} samples)" for clip in short[:LISTED])
        more = f" and {len(short) - LISTED} more" if len(short) > LISTED else ""
        raise DataError(
            f"{len(short)} clip(s) shorter than the receptive field of {receptive_field} samples "
            f"({1000 * receptive_field / rate:.0f} ms at {rate} Hz): {named}{more}; remove them, or train a smaller "
            "receptive field (--set layers_per_stack=... / --set stacks=...)"
        )


def audio_outputs(request: SampleRequest, count: int) -> list:
    """A sample request's WAV outputs (see `_output_paths`), each checked to be new, and its --spectrogram
    PNG; no WAV to a terminal. Every audio family's `sample` calls it before generating anything."""
    outputs = _output_paths(request.output, count)
    for path in outputs:
        check_new(path, request.force)
    if request.spectrogram is not None:
        if request.spectrogram.suffix.lower() != ".png":
            raise OptionError(f"--spectrogram {request.spectrogram}: the spectrogram is a PNG; give a name ending in .png")
        check_new(request.spectrogram, request.force)
    if outputs == ["-"] and sys.stdout.isatty():
        raise OptionError("refusing to write a WAV file to the terminal: give -o FILE.wav, or pipe the output")
    return outputs


def fresh_seed(seed: int | None) -> int:
    """--seed, or a new one said on stderr so the run can be repeated (from `secrets`: torch's global generator is left alone)."""
    if seed is None:
        seed = secrets.randbits(31)
        _note(f"seed {seed} (pass --seed {seed} to repeat this run)")
    return seed


def _output_paths(output: str, count: int) -> list:
    """Where the samples go: stdout ('-', one sample only), FILE.wav, or FILE-1.wav ... FILE-N.wav."""
    if output == "-":
        if count > 1:
            raise OptionError(
                f"-n {count} makes {count} WAV files, which cannot all go to stdout: "
                f"give -o NAME.wav (writes NAME-1.wav ... NAME-{count}.wav)"
            )
        return ["-"]
    path = Path(output)
    if path.suffix.lower() != ".wav":
        raise OptionError(f"-o {output}: audio is written as WAV; give a file name ending in .wav, or '-' for stdout")
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, count + 1)]


WAVENET = ModelFamily(
    name="wavenet",
    modality="audio",
    summary="WaveNet: raw audio, 8-bit mu-law, dilated causal convolutions",
    config_class=WaveNetConfig,
    model_class=WaveNet,
    task=AudioTask(),
    default_checkpoint="wavenet-speech.safetensors",
)

WAVENET_VOCODER = ModelFamily(
    name="wavenet-vocoder",
    modality="audio",
    summary="WaveNet vocoder: raw audio from log-mel frames (local conditioning)",
    config_class=VocoderConfig,
    model_class=WaveNet,
    task=AudioTask(MelFrames()),
    default_checkpoint="wavenet-vocoder-speech.safetensors",
)

WAVENET_TTS = ModelFamily(
    name="wavenet-tts",
    modality="audio",
    summary="WaveNet text-to-speech: raw audio from espeak-ng phonemes and pitch (local conditioning)",
    config_class=TTSConfig,
    model_class=WaveNet,
    task=AudioTask(LinguisticFrames()),
    default_checkpoint="wavenet-tts-speech.safetensors",
)
