"""Linguistic feature frames for `wavenet-tts`: phoneme identities and timing, plus a pitch contour.

Frame f describes the instant f * hop (in samples of the model's rate), as log-mel frames do
(arcli/audio/features.py), so the WaveNet's local conditioning reads both the same way. Per frame:

- one-hot of the phoneme sounding at that instant, of the one before it and of the one after it
  (`Inventory.size` each: the phonemes seen in training, then `<sil>` outside the utterance and
  `<unk>` for a phoneme the model never saw);
- where the instant sits in its phoneme (0 at its start, 1 at its end) and the phoneme's length
  (seconds x 10);
- voicing (1 or 0) and log2(f0 / 150 Hz) where voiced (0 where not).

Phonemes and their timing come from espeak-ng's front end (arcli/audio/espeak.py). The pitch
contour is measured on espeak-ng's rendering of the same text (`pitch_contour`): that feature is
espeak-ng's prosody, not the network's.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from arcli.audio.espeak import Phone

SILENCE, UNKNOWN = "<sil>", "<unk>"
F0_MIN, F0_MAX = 60.0, 500.0  # Hz: the pitch tracker's search range
VOICING = 0.5  # normalised autocorrelation peak that counts as voiced
PITCH_WINDOW = 0.032  # seconds: the pitch tracker's frame


@dataclass(frozen=True)
class Inventory:
    phonemes: tuple[str, ...]  # index -> name; `<sil>` and `<unk>` last

    @classmethod
    def fit(cls, utterances: Iterable[list[Phone]]) -> Inventory:
        seen = sorted({phone.name for phones in utterances for phone in phones} - {SILENCE, UNKNOWN})
        return cls((*seen, SILENCE, UNKNOWN))

    @property
    def size(self) -> int:
        return len(self.phonemes)

    @property
    def channels(self) -> int:
        """Features per frame: three one-hots, position and length, voicing and pitch."""
        return 3 * self.size + 4

    def index(self, name: str) -> int:
        try:
            return self.phonemes.index(name)
        except ValueError:
            return self.size - 1

    def frames(self, phones: list[Phone], f0: Tensor, seconds: float, hop: int, rate: int) -> Tensor:
        """(F, channels) features for an utterance of `seconds` whose pitch contour `f0` has F frames."""
        count = len(f0)
        times = [f * hop / rate for f in range(count)]
        starts = [phone.start for phone in phones]
        ends = starts[1:] + [seconds]
        ids = [self.index(phone.name) for phone in phones]
        silence = self.size - 2
        out = torch.zeros(count, self.channels)
        P = self.size
        for f, t in enumerate(times):
            k = bisect.bisect_right(starts, t) - 1  # the phone that started last at or before t
            if k < 0 or t >= seconds:
                current, before, after, position, length = silence, silence, ids[0] if k < 0 and ids else silence, 0.0, 0.0
            else:
                current = ids[k]
                before = ids[k - 1] if k > 0 else silence
                after = ids[k + 1] if k + 1 < len(ids) else silence
                length = max(ends[k] - starts[k], 1e-6)
                position = min(1.0, (t - starts[k]) / length)
            out[f, current] = 1.0
            out[f, P + before] = 1.0
            out[f, 2 * P + after] = 1.0
            out[f, 3 * P] = position
            out[f, 3 * P + 1] = 10.0 * length
        voiced = f0 > 0
        out[:, 3 * P + 2] = voiced.float()
        out[:, 3 * P + 3] = torch.where(voiced, torch.log2(f0.clamp(min=1.0) / 150.0), torch.zeros_like(f0))
        return out


def pitch_contour(audio: Tensor, rate: int, hop: int) -> Tensor:
    """f0 in Hz at every hop-th sample (frames centred on f * hop, T // hop + 1 of them), 0 where
    unvoiced: the lag of the normalised autocorrelation's highest peak between 1/F0_MAX and
    1/F0_MIN, over a 32 ms frame, voiced when that peak exceeds VOICING and the frame's RMS exceeds
    a twentieth of the loudest frame's."""
    audio = audio.float()
    window = int(PITCH_WINDOW * rate)
    half = window // 2
    count = len(audio) // hop + 1
    padded = torch.nn.functional.pad(audio, (half, half + hop))
    frames = padded.unfold(0, window, hop)[:count]  # (F, window): frame f centred on f * hop
    frames = frames - frames.mean(dim=1, keepdim=True)
    size = 1 << math.ceil(math.log2(2 * window))
    spectrum = torch.fft.rfft(frames, n=size)
    ac = torch.fft.irfft(spectrum.abs() ** 2, n=size)[:, :window]  # (F, window) autocorrelation, biased (as voicing.py)
    norm = ac / ac[:, :1].clamp(min=1e-9)
    low, high = max(1, int(rate / F0_MAX)), min(window - 1, int(rate / F0_MIN))
    peak, where = norm[:, low : high + 1].max(dim=1)
    rms = frames.pow(2).mean(dim=1).sqrt()
    voiced = (peak > VOICING) & (rms > rms.max() / 20)
    lag = (where + low).float()
    # parabolic interpolation of the peak for sub-sample lags
    inner = (where > 0) & (where < high - low)
    index = (where + low).clamp(1, window - 2)
    left, mid, right = (norm.gather(1, (index + d)[:, None]).squeeze(1) for d in (-1, 0, 1))
    bend = left - 2 * mid + right
    shift = torch.where(inner & (bend < 0), 0.5 * (left - right) / bend.clamp(max=-1e-9), torch.zeros_like(mid))
    f0 = rate / (lag + shift)
    return torch.where(voiced, f0, torch.zeros_like(f0))


__all__ = ["Inventory", "pitch_contour", "SILENCE", "UNKNOWN"]
