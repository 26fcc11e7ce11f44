"""Raw audio as frames of real values: the VRNN and its baseline RNN-Gauss (arcli/models/vrnn.py).

A clip is cut into frames of `frame_size` (200) consecutive samples from its first sample; a last,
partial frame is not scored. Training draws sequences of `crop_frames` frames (0.5 s) starting at
any sample of a clip, drawn in proportion to clip length (a shorter clip is used whole, its missing
frames masked out); the held-out evaluation scores every whole frame of every held-out clip, each
clip from the zero state. Speaker sub-folders are speakers of the conditional form.

Likelihoods are densities of the audio as read (float samples in [-1, 1]) in nats, per frame and
per second. Training minimises the negative ELBO (RNN-Gauss: the exact negative log-likelihood);
its "valid nll" is -ELBO per frame for the VRNN, an upper bound on the true NLL. `score-likelihood`
gives, for the VRNN, the ELBO and the importance-sampled estimate of log p(x) with K chains drawn
from the posterior, log (1/K) sum_k p(x, z^k) / q(z^k | x): a lower bound in expectation that
tightens as K grows; for RNN-Gauss the exact log-likelihood.

Sampling is ancestral, one frame at a time from the LSTM state (arcli/decoding/continuous.py):
these models have no tokens for the decoding engine.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch

from arcli.audio.io import find_audio_files, load_audio, write_spectrogram_png, write_wav
from arcli.decoding.continuous import sample_frames
from arcli.errors import DataError, OptionError
from arcli.models.vrnn import VRNN, RNNGauss, RNNGaussConfig, VRNNConfig
from arcli.outputs import check_new, open_output
from arcli.outputs import note as _note
from arcli.registry import ModelFamily
from arcli.tasks import TOKEN_SEARCH_OPTIONS, Loaded, SampleRequest, ScoreRequest, Task, TrainingSetup, TrainRequest
from arcli.tasks.audio import _listing, audio_outputs, fresh_seed, speaker_name
from arcli.training import LossOutput

DEFAULT_SECONDS = 2.0  # `arcli sample vrnn` without --seconds
MAX_SECONDS = 600.0  # more is almost surely a typo
DEFAULT_SAMPLES = 100  # importance samples per clip, as the issue asks
MAX_SAMPLES = 100_000
SCORE_SEED = 0  # the posterior draws of score-likelihood: the same figures every run
LISTED = 5


class Clip(NamedTuple):
    path: Path
    audio: torch.Tensor  # (T,) float32 in [-1, 1]
    speaker: int | None


class FrameBatch(NamedTuple):
    frames: torch.Tensor  # (B, T, frame_size) audio units, zero-padded
    counted: torch.Tensor  # (B, T) bool: real frames (not padding)
    speakers: torch.Tensor | None  # (B,) speaker ids, None for an unconditional model


def clip_frames(audio: torch.Tensor, frame_size: int) -> torch.Tensor:
    """The clip's whole frames from its first sample: (len // frame_size, frame_size)."""
    whole = len(audio) // frame_size
    return audio[: whole * frame_size].reshape(whole, frame_size)


def make_batch(pieces: list[torch.Tensor], speakers: list[int | None]) -> FrameBatch:
    """Right-pad frame sequences (T_i, frame_size) into one batch."""
    longest = max(len(p) for p in pieces)
    frames = torch.zeros(len(pieces), longest, pieces[0].shape[1])
    counted = torch.zeros(len(pieces), longest, dtype=torch.bool)
    for row, piece in enumerate(pieces):
        frames[row, : len(piece)], counted[row, : len(piece)] = piece, True
    ids = None if speakers[0] is None else torch.tensor(speakers, dtype=torch.long)
    return FrameBatch(frames, counted, ids)


class FrameData:
    """Random training sequences (from the given generator only); every held-out frame once."""

    def __init__(self, train: list[Clip], valid: list[Clip], frame_size: int, crop_frames: int):
        self.train, self.valid, self.frame_size, self.crop_frames = train, valid, frame_size, crop_frames
        self.weights = torch.tensor([len(c.audio) for c in train], dtype=torch.float64)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> FrameBatch:
        picks = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator)
        uniforms = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        span = self.frame_size * self.crop_frames
        pieces, speakers = [], []
        for index, u in zip(picks.tolist(), uniforms.tolist(), strict=True):
            clip = self.train[index]
            start = int(u * (len(clip.audio) - span + 1)) if len(clip.audio) > span else 0
            pieces.append(clip_frames(clip.audio[start : start + span], self.frame_size))
            speakers.append(clip.speaker)
        return make_batch(pieces, speakers)

    def valid_batches(self, batch_size: int) -> Iterator[FrameBatch]:
        for begin in range(0, len(self.valid), batch_size):
            chunk = self.valid[begin : begin + batch_size]
            yield make_batch([clip_frames(c.audio, self.frame_size) for c in chunk], [c.speaker for c in chunk])


class ContinuousAudioTask(Task):
    """Frame models of raw audio with real-valued outputs: VRNN and RNN-Gauss."""

    modality = "audio"
    unit = "nats/frame"
    default_strategy = "sample"
    progress_unit = "frame"
    options = {"sample": frozenset({"--count", "--seconds", "--speaker", "--spectrogram", "--strategy", "--temperature", "--seed"})}
    option_notes = {name: "it draws real-valued frames, not tokens: of the decoding options it takes only --temperature and --seed"
                    for name in TOKEN_SEARCH_OPTIONS}

    def __init__(self, latent: bool):
        self.importance_sampled = latent

    def info(self, family: ModelFamily, model: torch.nn.Module) -> dict[str, str]:
        c = model.config
        lines = {
            "frames": f"{c.frame_size} samples = {1000 * c.frame_size / c.sample_rate:g} ms at {c.sample_rate} Hz",
            "normalisation": f"(x - {c.data_mean:.3g}) / {c.data_std:.3g} (the training audio's mean and std)",
            "output": f"{'a Gaussian' if c.mixtures == 1 else f'a mixture of {c.mixtures} Gaussians'}, diagonal, std >= {c.min_std:.3g}",
            "speakers": str(c.num_speakers) if c.num_speakers else "none (unconditional)",
            "training sequences": f"{c.crop_frames} frames = {c.crop_frames * c.frame_size / c.sample_rate:g} s",
        }
        if self.importance_sampled:
            lines["latent"] = f"{c.latent} dimensions per frame"
        return lines

    # --- training --------------------------------------------------------------------------------

    def prepare_training(self, family: ModelFamily, config: RNNGaussConfig, request: TrainRequest) -> TrainingSetup:
        found = find_audio_files(request.data)
        names = sorted({label for _, label in found if label is not None}) if config.conditional else []
        if names and any(label is None for _, label in found):
            raise DataError(f"'{next(path for path, label in found if label is None)}' is not in a speaker sub-folder, but other files are: "
                            "put every file in a speaker sub-folder, or none (or --set conditional=false)")
        if config.num_speakers not in (0, len(names)):
            raise OptionError(f"--set num_speakers={config.num_speakers}, but the data has {len(names)} speaker sub-folders: leave it out")
        if request.valid:
            held = [(path, speaker_name(path, label, names)) for path, label in find_audio_files(request.valid)]
            strangers = [path for path, name in held if names and name is None]
            if strangers:
                raise DataError(f"held-out file '{strangers[0]}' is not in a folder named after a training speaker ({', '.join(names)})")
            train_files = [(path, label if names else None) for path, label in found]
        else:
            every = max(2, round(1 / request.valid_fraction))
            held = [(path, label if names else None) for path, label in found[::every]]
            train_files = [(path, label if names else None) for i, (path, label) in enumerate(found) if i % every]
            if not train_files or not held:
                raise DataError(f"{len(found)} audio file(s): too few to hold some out; pass held-out files with --valid")
        ids = {name: i for i, name in enumerate(names)}
        train = _load(train_files, ids, config)
        valid = _load(held, ids, config)
        audio = torch.cat([c.audio for c in train]).double()
        if not round(float(audio.std()), 8) > 0:
            raise DataError("the training audio is the same value throughout (silent): nothing to learn")
        config = dataclasses.replace(config, num_speakers=len(names), data_mean=round(float(audio.mean()), 8),
                                     data_std=round(float(audio.std()), 8))
        rate, seconds, valid_seconds = config.sample_rate, len(audio) / config.sample_rate, sum(len(c.audio) for c in valid) / config.sample_rate
        meta = {"sample_rate": rate, "frame_size": config.frame_size, "speakers": names, "clips": len(train),
                "seconds": round(seconds, 3), "valid_clips": len(valid), "valid_seconds": round(valid_seconds, 3)}
        who = f"{len(names)} speakers ({', '.join(names[:LISTED])}{' ...' if len(names) > LISTED else ''})" if names else "no speakers"
        print(f"data: {len(train)} clips, {seconds:.1f} s, {who}; held out: {len(valid)} clips, {valid_seconds:.1f} s; "
              f"frames of {config.frame_size} samples, normalised by mean {config.data_mean:.3g}, std {config.data_std:.3g}",
              file=sys.stderr)
        return TrainingSetup(config=config, data=FrameData(train, valid, config.frame_size, config.crop_frames), data_meta=meta)

    def loss(self, model: torch.nn.Module, batch: FrameBatch) -> LossOutput:
        terms = model(batch.frames, batch.speakers)
        elbo = ((terms.log_lik - terms.kl) * batch.counted).sum()
        count = int(batch.counted.sum())
        # Per sample rather than per frame: the objective's scale then suits gradient clipping.
        return LossOutput(objective=-elbo / max(count, 1) / model.frame_size, nll=-elbo.detach(), count=count)

    # --- sampling --------------------------------------------------------------------------------

    def sample(self, loaded: Loaded, request: SampleRequest) -> None:
        name, d = loaded.family.name, request.decoding
        self.check_options(loaded.family, "sample", request)
        if d.strategy not in (None, "sample"):
            raise OptionError(f"'{name}' draws real-valued frames, not tokens: it samples (--strategy sample), with "
                              "--temperature (the spread of each frame) and --seed")
        config, rate = loaded.model.config, loaded.model.config.sample_rate
        seconds = DEFAULT_SECONDS if request.seconds is None else request.seconds
        if not 0 < seconds <= MAX_SECONDS:
            raise OptionError(f"--seconds must be > 0 and at most {MAX_SECONDS:g}, got {seconds:g}")
        length = round(seconds * rate)
        if length < 1:
            raise OptionError(f"--seconds {seconds:g} is less than one sample at {rate} Hz")
        speaker = self._speaker(loaded, request.speaker)
        outputs = audio_outputs(request, request.count)
        seed = fresh_seed(d.seed)
        condition = None if speaker is None else torch.full((request.count,), speaker, dtype=torch.long)
        started = time.perf_counter()
        frames = sample_frames(loaded.model, math.ceil(length / config.frame_size), request.count, condition=condition, seed=seed,
                               temperature=1.0 if d.temperature is None else d.temperature, progress=request.progress)
        elapsed = time.perf_counter() - started
        audio = frames.flatten(1)[:, :length].float().cpu().clamp(-1, 1)  # (count, length)
        for path, clip in zip(outputs, audio, strict=True):
            write_wav(path, clip, rate)
        if request.spectrogram is not None:
            write_spectrogram_png(request.spectrogram, audio[0], rate)
        _note(f"generated {request.count} x {seconds:g} s of audio in {elapsed:.2f} s ({frames.shape[1]} frames each, ancestral sampling)")

    def _speaker(self, loaded: Loaded, requested: int | None) -> int | None:
        count = loaded.model.config.num_speakers
        names = list(loaded.checkpoint.data.get("speakers") or [])
        if count == 0:
            if requested is not None:
                raise OptionError(f"--speaker: '{loaded.family.name}' was trained without speakers; leave --speaker out")
            return None
        if requested is None:
            _note(f"no --speaker given: using speaker 0; speakers: {_listing(names, count)}")
            return 0
        if not 0 <= requested < count:
            raise OptionError(f"--speaker {requested} is out of range: this model's speakers are {_listing(names, count)}")
        return requested

    # --- scoring ---------------------------------------------------------------------------------

    def score(self, loaded: Loaded, request: ScoreRequest) -> None:
        name, model, config = loaded.family.name, loaded.model, loaded.model.config
        if request.heatmap is not None or request.src is not None or request.tgt is not None:
            raise OptionError(f"--heatmap, --src and --tgt do not apply to the audio model '{name}'")
        if not request.inputs:
            raise OptionError(f"give audio files or folders to score with '{name}'")
        if request.samples is not None and not self.importance_sampled:
            raise OptionError(f"--samples: '{name}' has no latent variables; its log-likelihood is exact")
        samples = DEFAULT_SAMPLES if request.samples is None else request.samples
        if not 1 <= samples <= MAX_SAMPLES:
            raise OptionError(f"--samples must be between 1 and {MAX_SAMPLES}, got {samples}")
        check_new(request.output, request.force)
        clips, note = self._score_clips(loaded, find_audio_files(request.inputs))
        if note:
            _note(note)
        per_second = config.sample_rate / config.frame_size
        totals = torch.zeros(2, dtype=torch.float64)
        frames_in_all = 0
        with open_output(request.output) as out:
            for clip in clips:
                frames = clip_frames(clip.audio, config.frame_size)
                elbo, estimate = self._clip_log_likelihood(model, frames, clip.speaker, samples, request.batch_size)
                n = len(frames)
                if self.importance_sampled:
                    out.write(f"{clip.path}\t{elbo / n:.2f}\t{estimate / n:.2f}\t{elbo / n * per_second:.1f}\t"
                              f"{estimate / n * per_second:.1f}\t{n}\n")
                else:
                    out.write(f"{clip.path}\t{elbo / n:.2f}\t{elbo / n * per_second:.1f}\t{n}\n")
                totals += torch.tensor([elbo, estimate], dtype=torch.float64)
                frames_in_all += n
        elbo, estimate = (totals / frames_in_all).tolist()
        left = sum(len(c.audio) % config.frame_size for c in clips)
        where = (f"{len(clips)} files, {frames_in_all} frames of {config.frame_size} samples ({frames_in_all / per_second:.1f} s)"
                 + (f"; {left} samples after the files' last whole frames, in all, not scored" if left else ""))
        if self.importance_sampled:
            print(f"columns: path, ELBO nats/frame, IS log p(x) nats/frame, ELBO nats/s, IS log p(x) nats/s, frames; {where}: "
                  f"ELBO {elbo:.2f} nats/frame ({elbo * per_second:.1f} nats/s, a lower bound); importance-sampled log p(x) "
                  f"with K={samples} {estimate:.2f} nats/frame ({estimate * per_second:.1f} nats/s, a lower bound in expectation, "
                  "tighter as K grows); log-densities of the audio as read", file=sys.stderr)
        else:
            print(f"columns: path, log p(x) nats/frame, log p(x) nats/s, frames; {where}: exact log-likelihood "
                  f"{elbo:.2f} nats/frame ({elbo * per_second:.1f} nats/s); log-densities of the audio as read", file=sys.stderr)

    def _score_clips(self, loaded: Loaded, found: list[tuple[Path, str | None]]) -> tuple[list[Clip], str]:
        """Every file read before any work; a conditional model scores a file as the speaker its
        folder is named after, else speaker 0 (the note says so)."""
        config = loaded.model.config
        names = list(loaded.checkpoint.data.get("speakers") or [])[: config.num_speakers]
        clips, unnamed = [], 0
        for path, label in found:
            audio = load_audio(path, config.sample_rate)
            if len(audio) < config.frame_size:
                raise DataError(f"'{path}' has {len(audio)} samples, less than one frame of {config.frame_size}: nothing to score")
            speaker = None
            if config.num_speakers:
                who = speaker_name(path, label, names)
                unnamed += who is None
                speaker = 0 if who is None else names.index(who)
            clips.append(Clip(path, audio, speaker))
        note = (f"{unnamed} of {len(found)} files are not in a folder named after a speaker of this model: scored as speaker 0 "
                f"(speakers: {_listing(names, config.num_speakers)})") if unnamed else ""
        return clips, note

    @torch.inference_mode()
    def _clip_log_likelihood(self, model, frames: torch.Tensor, speaker: int | None, samples: int, batch_size: int) -> tuple[float, float]:
        """(ELBO, importance-sampled log p(x)) of one clip's frames (T, frame_size) in nats; for a
        model without latents both are the exact log-likelihood."""
        device = next(model.parameters()).device
        if not self.importance_sampled:
            condition = None if speaker is None else torch.tensor([speaker], device=device)
            terms = model(frames[None].to(device), condition)
            exact = float(terms.log_lik.double().sum())
            return exact, exact
        return importance_sampled(model, frames.to(device), speaker, samples, rows=max(batch_size, 1) * 8)


def importance_sampled(model: VRNN, frames: torch.Tensor, speaker: int | None, samples: int, rows: int = 128,
                       seed: int = SCORE_SEED) -> tuple[float, float]:
    """(ELBO, log (1/K) sum_k w_k) of frames (T, frame_size): K = `samples` posterior chains z^k ~ q(z | x)
    with w_k = p(x, z^k) / q(z^k | x); the ELBO is the mean over the chains of sum_t (log p(x_t | z_t) - KL_t),
    the KL in closed form. `rows` chains run side by side."""
    generator = torch.Generator().manual_seed(seed)
    elbos, log_weights = [], []
    for begin in range(0, samples, rows):
        k = min(rows, samples - begin)
        noise = torch.randn(k, len(frames), model.latent_dim, generator=generator).to(frames.device, frames.dtype)
        condition = None if speaker is None else torch.full((k,), speaker, dtype=torch.long, device=frames.device)
        terms = model(frames[None].expand(k, -1, -1), condition, noise)
        elbos.append((terms.log_lik - terms.kl).double().sum(1))
        log_weights.append(terms.log_weight.double().sum(1))
    log_w = torch.cat(log_weights)
    return float(torch.cat(elbos).mean()), float(log_w.logsumexp(0) - math.log(samples))


def _load(files: list[tuple[Path, str | None]], ids: dict[str, int], config: RNNGaussConfig) -> list[Clip]:
    clips = [Clip(path, load_audio(path, config.sample_rate), ids[label] if label is not None else None) for path, label in files]
    short = [c for c in clips if len(c.audio) < config.frame_size]
    if short:
        raise DataError(f"{len(short)} clip(s) shorter than one frame of {config.frame_size} samples, e.g. '{short[0].path}' "
                        f"({len(short[0].audio)} samples): remove them")
    return clips


VRNN_FAMILY = ModelFamily(
    name="vrnn",
    modality="audio",
    summary="VRNN: raw audio frames, a VAE per frame with its prior from the LSTM state (Chung et al. 2015)",
    config_class=VRNNConfig,
    model_class=VRNN,
    task=ContinuousAudioTask(latent=True),
    default_checkpoint="vrnn-speech.safetensors",
)

RNN_GAUSS = ModelFamily(
    name="rnn-gauss",
    modality="audio",
    summary="RNN-Gauss: raw audio frames, an LSTM with a Gaussian output per frame (the VRNN's baseline)",
    config_class=RNNGaussConfig,
    model_class=RNNGauss,
    task=ContinuousAudioTask(latent=False),
)
