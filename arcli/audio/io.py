"""Audio files in and out: reading, finding, writing WAV, drawing spectrograms.

Audio inside arcli is a float tensor of shape (T,) in [-1, 1] at the model's sample rate. Reading
downmixes to mono and resamples (soxr); writing is 16-bit PCM WAV, to a file or to stdout (`-`).
File writes are atomic: a temp file in the target's folder, then `os.replace`, so an interrupted
run never leaves a half-written file.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from PIL import Image, ImageDraw, ImageFont

from arcli.errors import DataError
from arcli.outputs import write_bytes
from arcli.palette import palette

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def load_audio(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Read a wav/flac/ogg file as mono float audio at `sample_rate`.

    Returns: (T,) float32 in [-1, 1]. Raises DataError for a missing, unreadable or empty file.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not Path(path).is_file():
        raise DataError(f"no such audio file: '{path}'")
    try:
        audio, file_rate = sf.read(path, dtype="float32", always_2d=True)  # (T, channels)
    except sf.LibsndfileError as error:
        raise DataError(f"cannot read audio file '{path}': {error.error_string}") from None
    except (sf.SoundFileError, RuntimeError, OSError) as error:
        raise DataError(f"cannot read audio file '{path}': {error}") from None
    if audio.shape[0] == 0:
        raise DataError(f"audio file '{path}' contains no samples")
    if not np.isfinite(audio).all():
        raise DataError(f"audio file '{path}' contains NaN or infinite samples")
    mono = audio.mean(axis=1)  # (T,)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ")
    # float files may exceed full scale, and resampling overshoots near it
    return torch.from_numpy(np.ascontiguousarray(mono)).clamp_(-1.0, 1.0)


def find_audio_files(paths: list[str | Path]) -> list[tuple[Path, str | None]]:
    """Expand files and folders into (audio file, speaker label) pairs.

    A folder is searched recursively for .wav/.flac/.ogg files (hidden files and folders skipped).
    When it has sub-folders, a file's label is the name of the first-level sub-folder it lies in
    (`data/alice/x.wav` -> "alice"); files directly in the folder, and files given by name, get
    None. Folders are expanded in sorted order; the order of `paths` is kept.
    """
    if not paths:
        raise DataError("no audio files or folders given")
    found: list[tuple[Path, str | None]] = []
    for given in paths:
        path = Path(given)
        if path.is_file():
            found.append((path, None))
            continue
        if not path.is_dir():
            raise DataError(f"no such file or folder: '{path}'")
        files = []
        for folder, subfolders, names in os.walk(path):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            files += [
                Path(folder, name).relative_to(path)
                for name in names
                if not name.startswith(".") and name.lower().endswith(AUDIO_SUFFIXES)
            ]
        if not files:
            raise DataError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under '{path}'")
        for relative in sorted(files, key=lambda p: p.parts):
            label = relative.parts[0] if len(relative.parts) > 1 else None
            found.append((path / relative, label))
    return found


def _pcm16_wav_bytes(audio: torch.Tensor, sample_rate: int) -> bytes:
    if audio.dim() != 1:
        raise ValueError(f"audio must have shape (T,), got {tuple(audio.shape)}")
    samples = audio.detach().to("cpu", torch.float32).clamp(-1.0, 1.0).numpy()
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_wav(path: str | Path, audio: torch.Tensor, sample_rate: int) -> None:
    """Write audio (T,) in [-1, 1] as 16-bit PCM WAV; `path` "-" writes it to stdout."""
    write_bytes(path, _pcm16_wav_bytes(audio, sample_rate))


_DYNAMIC_RANGE_DB = 80.0
_MAX_WIDTH = 4000  # pixels; longer audio gets a larger hop rather than a huge image


SPECTROGRAM_MARGINS = (44, 18, 8, 22)  # left, top, right, bottom: where the axes and their labels go


def _with_axes(plot: Image.Image, sample_rate: int, hop: int) -> Image.Image:
    """The spectrogram on a white canvas with a frequency axis (kHz, left) and a time axis (seconds,
    bottom), ticks at round values: pixel x of the plot is frame x, centred at x * hop samples."""
    left, top, right, bottom = SPECTROGRAM_MARGINS
    width, height = plot.size
    canvas = Image.new("RGB", (left + width + right, top + height + bottom), "white")
    canvas.paste(plot, (left, top))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    nyquist_khz = sample_rate / 2000
    khz_step = next(step for step in (0.5, 1, 2, 4, 5, 10, 20, 50) if nyquist_khz / step <= 8)
    k = 0.0
    while k <= nyquist_khz + 1e-9:
        y = top + round((height - 1) * (1 - k / nyquist_khz))
        draw.line([(left - 4, y), (left - 1, y)], fill="black")
        draw.text((2, y - 5), f"{k:g}", fill="black", font=font)
        k += khz_step
    draw.text((2, 0), "kHz", fill="black", font=font)
    seconds = (width - 1) * hop / sample_rate
    time_step = next((step for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120) if seconds / step <= 10), 300)
    t = 0.0
    while t <= seconds + 1e-9:
        x = left + round(t * sample_rate / hop)
        draw.line([(x, top + height), (x, top + height + 3)], fill="black")
        draw.text((x - 6, top + height + 5), f"{t:g}", fill="black", font=font)
        t += time_step
    draw.text((left + width - 4, top + height + 5), "s", fill="black", font=font)
    return canvas


def write_spectrogram_png(path: str | Path, audio: torch.Tensor, sample_rate: int) -> None:
    """Draw a log-magnitude spectrogram of audio (T,) as a PNG: time left to right, frequency
    (0 to sample_rate / 2) bottom to top, the top 80 dB mapped from dark to bright, with a frequency
    axis in kHz and a time axis in seconds around it (SPECTROGRAM_MARGINS)."""
    if audio.dim() != 1 or audio.numel() == 0:
        raise ValueError(f"audio must have shape (T,) with T > 0, got {tuple(audio.shape)}")
    n_fft = 2 ** math.ceil(math.log2(0.032 * sample_rate))  # ~32 ms windows: 512 at 16 kHz
    hop = max(n_fft // 4, math.ceil(audio.numel() / _MAX_WIDTH))
    signal = audio.detach().to("cpu", torch.float32)
    if signal.numel() < n_fft:
        signal = torch.nn.functional.pad(signal, (0, n_fft - signal.numel()))
    spectrum = torch.stft(
        signal, n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True
    )  # (n_fft // 2 + 1, frames)
    decibels = 20 * torch.log10(spectrum.abs() + 1e-8)
    floor = decibels.max() - _DYNAMIC_RANGE_DB
    level = ((decibels - floor) / _DYNAMIC_RANGE_DB).clamp(0, 1)
    indices = (level * 255).round().to(torch.uint8).flip(0).numpy()  # row 0 = highest frequency
    image = _with_axes(Image.fromarray(palette(np.linspace(0.0, 1.0, 256))[indices]), sample_rate, hop)  # RGB from (H, W, 3) uint8
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())
