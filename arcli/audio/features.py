"""Log-mel spectrogram frames: the local conditioning of the WaveNet vocoder.

The STFT is PyTorch's (`torch.stft`, centred frames with reflect padding, a Hann window); the mel
filter bank is built here (triangles on the HTK mel scale, mel(f) = 2595 log10(1 + f / 700), each
normalised to unit area, "Slaney" style), which takes a dozen lines and no extra dependency.

Frame f is centred on sample f * hop, so a clip of T samples has T // hop + 1 frames, and sample t
sits between frames t // hop and t // hop + 1 at the fraction (t mod hop) / hop: that is how the
vocoder interpolates its conditioning (arcli/models/wavenet.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MelSpec:
    sample_rate: int = 16000
    n_mels: int = 80
    hop: int = 200  # 12.5 ms at 16 kHz
    window: int = 800  # 50 ms
    n_fft: int = 1024
    fmin: float = 40.0
    fmax: float = 8000.0


def hz_to_mel(f: Tensor | float) -> Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filters(spec: MelSpec) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, each of unit area over frequency."""
    bins = torch.linspace(0.0, spec.sample_rate / 2, spec.n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(spec.fmin)), float(hz_to_mel(spec.fmax)), spec.n_mels + 2, dtype=torch.float64))
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - low) / (centre - low)
    falling = (high - bins) / (high - centre)
    triangles = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return (triangles * (2.0 / (high - low))).float()


def log_mel(audio: Tensor, spec: MelSpec = MelSpec()) -> Tensor:
    """Audio (T,) float in [-1, 1] -> normalised log-mel frames (T // hop + 1, n_mels):
    (ln(max(mel power, 1e-5)) + 4) / 4, roughly zero-mean and unit-scale on speech."""
    if audio.dim() != 1:
        raise ValueError(f"log_mel takes mono audio (T,), got shape {tuple(audio.shape)}")
    if len(audio) <= spec.n_fft // 2:
        audio = torch.nn.functional.pad(audio, (0, spec.n_fft // 2 + 1 - len(audio)))  # reflect padding needs this much
    window = torch.hann_window(spec.window, dtype=torch.float32, device=audio.device)
    stft = torch.stft(audio.float(), spec.n_fft, hop_length=spec.hop, win_length=spec.window, window=window,
                      center=True, pad_mode="reflect", return_complex=True)  # (n_fft/2+1, frames)
    power = stft.abs() ** 2
    mel = mel_filters(spec).to(audio.device) @ power  # (n_mels, frames)
    return ((torch.log(torch.clamp(mel, min=1e-5)) + 4.0) / 4.0).t().contiguous()


def frames_for(samples: int, hop: int) -> int:
    """Frames of a clip of `samples` samples: centred frames every `hop` samples."""
    return samples // hop + 1


def samples_for(frames: int, hop: int) -> int:
    """Samples that `frames` centred frames describe: up to the last frame's centre."""
    return max(1, (frames - 1) * hop)


def interpolation(positions: Tensor, hop: int, frames: int) -> tuple[Tensor, Tensor, Tensor]:
    """For sample positions (any shape): (frame below, frame above, fraction), clamped to the last frame."""
    below = torch.clamp(positions // hop, max=frames - 1)
    above = torch.clamp(below + 1, max=frames - 1)
    fraction = (positions - (positions // hop) * hop).float() / hop
    fraction = torch.where(positions // hop >= frames - 1, torch.zeros_like(fraction), fraction)
    return below, above, fraction


__all__ = ["MelSpec", "log_mel", "mel_filters", "frames_for", "samples_for", "interpolation"]
