"""Parallel WaveNet: distil a gaussian-output WaveNet vocoder (the teacher) into an IAF student
(arcli/models/parallel_wavenet.py), then resynthesise audio from log-mel frames in one pass per flow.

Training data. The teacher's own: `arcli train parallel-wavenet --teacher T.safetensors --data ...`
reads the clips as the teacher's audio task does (arcli/tasks/audio.py: 16-bit samples, the
teacher's log-mel frames, its crops and its rule of which positions count), and adds to every crop
the student's noise, drawn from the training data generator (held-out noise from a fixed seed).

The objective per counted sample t, with the student's x = student(z, frames) and the teacher fed
the student's own samples, as they will be written (16-bit rounded, the rounding passed straight
through for the gradient):

    KL( N(M_t, S_t^2) || N(mu_t, sigma_t^2) )                     ClariNet's closed form, per sample
      = log sigma_t - log S_t + (S_t^2 + (M_t - mu_t)^2) / (2 sigma_t^2) - 1/2
    + scale_regularizer * (log sigma_t - log S_t)^2                 ClariNet's regulariser
    + power_weight * mean over frames of sum over frequencies | |STFT(x)| - |STFT(y)| |^2
                                                                    the paper's power loss (y: the real crop)

(STFT: 1024-sample Hann frames every 256 samples, normalised by sqrt(1024); on speech a frame's
summed |STFT|^2 is about 1, and halving the amplitude costs about 0.2, against KLs of nats per sample.)

where (mu_t, sigma_t) is the teacher's Gaussian for x_t given the student's x_<t. The per-sample KL
is an unbiased one-sample estimate of KL(q || p) over whole sequences (ClariNet, section 3.2).

What training reports as the "bits/sample" NLL (train and held-out, and `valid_bits_per_sample`
in the checkpoint): the teacher's negative log-likelihood of the student's samples, in bits per
16-bit sample, with the teacher's discretisation (arcli/models/wavenet.py, gaussian_16bit_nats):
the issue's quality check, next to the teacher's own held-out figure (kept in the checkpoint's
data as "teacher"). It is not the student's likelihood of held-out audio: an IAF gives the density
only of its own samples. So `score-likelihood` refuses outside audio in one line, and `sample`
reports the exact density of what it generates.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import NamedTuple

import torch

from arcli.audio.io import write_spectrogram_png, write_wav
from arcli.checkpoint import read_checkpoint
from arcli.decoding.continuous import RowNoise
from arcli.errors import ArcliError, OptionError
from arcli.models.parallel_wavenet import ParallelWaveNet, ParallelWaveNetConfig
from arcli.models.wavenet import PCM16_STEP, LocalCondition, gaussian_16bit_nats
from arcli.outputs import note as _note
from arcli.registry import ModelFamily, get_family
from arcli.tasks import LN2, TOKEN_SEARCH_OPTIONS, Loaded, SampleRequest, ScoreRequest, Task, TrainingSetup, TrainRequest
from arcli.tasks.audio import AudioBatch, audio_outputs, fresh_seed
from arcli.tasks.conditioning import MelFrames
from arcli.training import LossOutput

VALID_NOISE_SEED = 0  # the held-out noise: the same every evaluation
STFT = {"n_fft": 1024, "hop_length": 256, "win_length": 1024}  # the power loss's frames (64 ms at 16 kHz)


class DistillBatch(NamedTuple):
    audio: AudioBatch  # the teacher task's crops: 16-bit codes, counted positions, frames, offsets
    noise: torch.Tensor  # (B, T) the student's z


class DistillData:
    """The teacher task's crops, each with the student's noise."""

    def __init__(self, crops):
        self.crops = crops

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> DistillBatch:
        batch = self.crops.sample_batch(batch_size, generator)
        return DistillBatch(batch, torch.randn(batch.tokens.shape, generator=generator, device=generator.device))

    def valid_batches(self, batch_size: int):
        generator = torch.Generator().manual_seed(VALID_NOISE_SEED)
        for batch in self.crops.valid_batches(batch_size):
            yield DistillBatch(batch, torch.randn(batch.tokens.shape, generator=generator))


def load_teacher(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A conditional gaussian-output WaveNet vocoder, frozen, and its checkpoint's data; one clear
    line for anything else."""
    stored = read_checkpoint(path)
    if stored.model_name != "wavenet-vocoder":
        raise OptionError(f"--teacher {path} is a '{stored.model_name}' checkpoint: the student distils a wavenet-vocoder "
                          "(log-mel conditioned) with a gaussian output; train one with `arcli train wavenet-vocoder --set output=gaussian`")
    if stored.config.get("output", "categorical") != "gaussian":
        raise OptionError(f"--teacher {path} is a wavenet-vocoder with a categorical (mu-law softmax) output: the closed-form "
                          "distillation needs a gaussian one; train it with `arcli train wavenet-vocoder --set output=gaussian`")
    teacher, _ = get_family("wavenet-vocoder").load(path, torch.device(device))
    teacher.requires_grad_(False)
    return teacher, {"path": str(path), "config": stored.config, "data": stored.data, "metrics": stored.metrics}


def gaussian_kl(mean_q: torch.Tensor, log_scale_q: torch.Tensor, mean_p: torch.Tensor, log_scale_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_q, scale_q^2) || N(mean_p, scale_p^2)) elementwise, in nats."""
    return (log_scale_p - log_scale_q + ((2 * log_scale_q).exp() + (mean_q - mean_p) ** 2) / (2 * (2 * log_scale_p).exp()) - 0.5)


def stft_magnitude(audio: torch.Tensor) -> torch.Tensor:
    """(B, T) -> |STFT| (B, frequencies, frames), normalised by sqrt(n_fft), in float32."""
    window = torch.hann_window(STFT["win_length"], device=audio.device)
    return torch.stft(audio.float(), **STFT, window=window, center=True, normalized=True, return_complex=True).abs()


def _written(audio: torch.Tensor) -> torch.Tensor:
    """The samples as a 16-bit WAV holds them; the gradient passes straight through."""
    codes = torch.round(audio / PCM16_STEP).clamp(-32768, 32767)
    return audio + (codes * PCM16_STEP - audio).detach()


class ParallelWaveNetTask(Task):
    modality = "audio"
    unit = "bits/sample"
    default_strategy = "sample"
    progress_unit = "sample"
    # --seconds: refused by MelFrames, which says where the length comes from
    options = {"sample": frozenset({"--count", "--mel-from", "--seconds", "--spectrogram", "--strategy", "--temperature", "--seed"})}
    option_notes = {name: "it turns noise into audio in one pass: of the decoding options it takes only --temperature "
                          "(the noise's scale) and --seed" for name in TOKEN_SEARCH_OPTIONS}

    def __init__(self):
        self.features = MelFrames()
        self.teacher: torch.nn.Module | None = None  # set by prepare_training, used by loss

    def info(self, family: ModelFamily, model: torch.nn.Module) -> dict[str, str]:
        c = model.config
        return {
            "flows": f"{c.flows} inverse autoregressive flows of {c.layers_per_flow} layers (dilations 1..{2 ** (c.layers_per_flow - 1)})",
            "receptive field": f"{model.receptive_field} noise samples = {1000 * model.receptive_field / c.sample_rate:.1f} ms",
            "sample rate": f"{c.sample_rate} Hz",
            "output": "real values, written as 16-bit audio; one forward pass per flow over the whole clip",
            **self.features.describe(c, {}),
        }

    # --- training --------------------------------------------------------------------------------

    def prepare_training(self, family: ModelFamily, config: ParallelWaveNetConfig, request: TrainRequest) -> TrainingSetup:
        if request.teacher is None:
            raise OptionError("parallel-wavenet is distilled from a teacher: give --teacher TEACHER.safetensors "
                              "(a wavenet-vocoder trained with --set output=gaussian)")
        teacher, about = load_teacher(request.teacher)
        tc = teacher.config
        for name in ("cond_channels", "cond_hop", "sample_rate"):
            default = getattr(ParallelWaveNetConfig(), name)
            if getattr(config, name) not in (default, getattr(tc, name)):
                raise OptionError(f"--set {name}={getattr(config, name)} does not match the teacher's {getattr(tc, name)}: "
                                  "the student reads the teacher's frames; leave it out")
        config = dataclasses.replace(config, cond_channels=tc.cond_channels, cond_hop=tc.cond_hop, sample_rate=tc.sample_rate)
        teacher_family = get_family("wavenet-vocoder")
        setup = teacher_family.task.prepare_training(teacher_family, tc, request)
        self.teacher = teacher
        meta = {**setup.data_meta, "teacher": {"path": about["path"], "config": about["config"], "metrics": about["metrics"]},
                "nll": "the teacher's NLL of the student's 16-bit samples (bits/sample)"}
        return TrainingSetup(config=config, data=DistillData(setup.data), data_meta=meta)

    def loss(self, model: torch.nn.Module, batch: DistillBatch) -> LossOutput:
        if self.teacher is None:
            raise ArcliError("parallel-wavenet's loss needs the teacher: prepare_training was not run")
        audio, noise = batch.audio, batch.noise
        device = noise.device
        teacher = self.teacher.to(device)
        config = getattr(model, "module", model).config
        condition = LocalCondition(audio.frames.to(device), audio.offsets.to(device))
        out = model(noise, condition)
        written = _written(out.audio)
        params = teacher(written, condition).float()  # (B, T, 2): the teacher's Gaussian of x_t given the student's x_<t
        mean_p, log_scale_p = params[..., 0], params[..., 1]
        counted = audio.counted.to(device)
        count = max(int(counted.sum()), 1)
        kl = gaussian_kl(out.mean.float(), out.log_scale.float(), mean_p, log_scale_p)
        regulariser = (log_scale_p - out.log_scale.float()) ** 2
        real = audio.tokens.to(device).float() * PCM16_STEP
        power = (stft_magnitude(out.audio) - stft_magnitude(real)).pow(2).sum(1).mean()  # summed over frequency, mean over frames
        objective = ((kl + config.scale_regularizer * regulariser) * counted).sum() / count + config.power_weight * power
        codes = torch.round(written.detach() / PCM16_STEP)
        nll = (gaussian_16bit_nats(params.detach(), codes) * counted).sum()
        return LossOutput(objective=objective, nll=nll, count=int(counted.sum()))

    # --- sampling --------------------------------------------------------------------------------

    def sample(self, loaded: Loaded, request: SampleRequest) -> None:
        name, d = loaded.family.name, request.decoding
        self.check_options(loaded.family, "sample", request)
        if d.strategy not in (None, "sample"):
            raise OptionError(f"'{name}' turns noise into audio in one pass: it samples (--strategy sample), with "
                              "--temperature (the noise's scale) and --seed")
        temperature = 1.0 if d.temperature is None else d.temperature
        if not temperature > 0:
            raise OptionError(f"--temperature must be > 0, got {temperature:g}")
        model, config = loaded.model, loaded.model.config
        [[(frames, length)]] = self.features.utterances(config, {}, request, None)  # --mel-from: one clip
        outputs = audio_outputs(request, request.count)
        seed = fresh_seed(d.seed)
        started = time.perf_counter()
        audio, log_q = generate(model, frames, length, request.count, seed=seed, temperature=temperature)
        elapsed = time.perf_counter() - started
        clips = audio.float().cpu().clamp(-1, 1)
        for path, clip in zip(outputs, clips, strict=True):
            write_wav(path, clip, config.sample_rate)
        if request.spectrogram is not None:
            write_spectrogram_png(request.spectrogram, clips[0], config.sample_rate)
        nats = -float(log_q.mean())
        _note(f"generated {request.count} x {length / config.sample_rate:.3g} s in {elapsed:.2f} s "
              f"({request.count * length / elapsed:,.0f} samples/s, {config.flows} passes); the student's exact density of its own "
              f"samples{'' if temperature == 1 else ' (noise at temperature ' + format(temperature, 'g') + ')'}: "
              f"{nats:.3f} nats/sample, {nats / LN2 + 15:.3f} bits per 16-bit sample (density x bin width 2^-15)")

    # --- scoring ---------------------------------------------------------------------------------

    def score(self, loaded: Loaded, request: ScoreRequest) -> None:
        raise ArcliError(f"'{loaded.family.name}' cannot score given audio: an inverse autoregressive flow has the density only of "
                         "its own samples (inverting it takes one pass per sample and flow); `arcli sample parallel-wavenet` "
                         "reports that density, and the teacher scores any audio (`arcli score-likelihood wavenet-vocoder -c TEACHER`)")


@torch.no_grad()
def generate(model: ParallelWaveNet, frames: torch.Tensor, length: int, count: int, *, seed: int,
             temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` clips of `length` samples from log-mel frames (F, C): (audio (count, length), the
    student's exact log-density of each sample (count, length) in nats). Row r's noise comes from
    its own stream (seed, r) (arcli/decoding/continuous.py), so a row is the same alone or in a batch.
    The noise is scaled by `temperature`; the density is that of the audio drawn with it."""
    device = next(model.parameters()).device
    noise = RowNoise(seed, count, device).normal(length).to(next(model.parameters()).dtype) * temperature
    condition = LocalCondition(frames.to(device, noise.dtype).unsqueeze(0).expand(count, -1, -1))
    out = model(noise, condition)
    log_q = ParallelWaveNet.log_density(noise / temperature, out) - torch.log(torch.tensor(temperature, dtype=torch.float64))
    return out.audio, log_q


PARALLEL_WAVENET = ModelFamily(
    name="parallel-wavenet",
    modality="audio",
    summary="Parallel WaveNet: an IAF student distilled from a gaussian wavenet-vocoder; all samples at once",
    config_class=ParallelWaveNetConfig,
    model_class=ParallelWaveNet,
    task=ParallelWaveNetTask(),
    default_checkpoint="parallel-wavenet-speech.safetensors",
)
