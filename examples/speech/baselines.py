"""Bits per sample of simple baselines on a folder of speech, for comparing with a WaveNet.

    python examples/speech/baselines.py /work/data/speech/valid

Every audio file (.wav .flac .ogg, recursively) is read and downmixed to mono; all files must share
one sample rate. The baselines, over all files together:

- mu-law unigram entropy: the entropy of the histogram of 8-bit mu-law codes (mu = 255), i.e. the
  best a model that ignores context can do on the same 256-way target a WaveNet predicts;
- FLAC: the 16-bit audio (all files concatenated) encoded losslessly by libsndfile's FLAC encoder;
  its bits per sample includes the file header, and it codes 16-bit samples, not 8-bit codes;
- FLAC on the codes: the same encoder on the 8-bit mu-law codes stored as 8-bit PCM (lossless on
  exactly what a WaveNet predicts, though FLAC's linear prediction suits the companded codes less);
- xz: LZMA (preset 9 | extreme) on the stream of 8-bit mu-law codes, one byte per sample.

A model's bits/sample on the mu-law codes is comparable with the unigram entropy, FLAC on the
codes and xz; FLAC on the 16-bit audio codes a finer signal (it is there as the familiar number).
"""

from __future__ import annotations

import argparse
import io
import lzma
import math
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

MU = 255
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def mu_law_encode(audio: np.ndarray, mu: int = MU) -> np.ndarray:
    """Float audio in [-1, 1] -> integer codes 0..mu: F(x) = sign(x) ln(1 + mu|x|) / ln(1 + mu)
    cut into mu + 1 equal-width bins on [-1, 1], as arcli.audio.mulaw does (F(1) -> top bin)."""
    audio = np.clip(audio, -1.0, 1.0)
    companded = np.sign(audio) * np.log1p(mu * np.abs(audio)) / math.log1p(mu)
    return np.clip(np.floor((companded + 1) * (mu + 1) / 2), 0, mu).astype(np.uint8)


def unigram_entropy_bits(codes: np.ndarray) -> float:
    counts = np.bincount(codes, minlength=MU + 1)
    p = counts[counts > 0] / len(codes)
    return float(-(p * np.log2(p)).sum())


def flac_bits_per_sample(pcm16: np.ndarray, sample_rate: int) -> float:
    buffer = io.BytesIO()
    sf.write(buffer, pcm16, sample_rate, format="FLAC", subtype="PCM_16")
    return 8 * len(buffer.getvalue()) / len(pcm16)


def flac_codes_bits_per_sample(codes: np.ndarray, sample_rate: int) -> float:
    # libsndfile takes int16 in and keeps the top byte for 8-bit PCM: exact for (code - 128) << 8
    pcm8 = ((codes.astype(np.int16) - 128) * 256).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm8, sample_rate, format="FLAC", subtype="PCM_S8")
    return 8 * len(buffer.getvalue()) / len(codes)


def xz_bits_per_sample(codes: np.ndarray) -> float:
    compressed = lzma.compress(codes.tobytes(), preset=9 | lzma.PRESET_EXTREME)
    return 8 * len(compressed) / len(codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of audio files (searched recursively)")
    args = parser.parse_args()
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        print(f"error: no audio files (.wav, .flac, .ogg) under '{args.folder}'", file=sys.stderr)
        sys.exit(1)

    pieces, rates = [], set()
    for path in files:
        audio, sample_rate = sf.read(path, dtype="int16", always_2d=True)
        pieces.append(audio.mean(axis=1).round().astype(np.int16))
        rates.add(sample_rate)
    if len(rates) > 1:
        print(f"error: files have different sample rates {sorted(rates)}", file=sys.stderr)
        sys.exit(1)
    sample_rate = rates.pop()
    pcm16 = np.concatenate(pieces)
    codes = mu_law_encode(pcm16.astype(np.float64) / 32768)

    print(
        f"{args.folder}: {len(files)} files, {len(pcm16)} samples "
        f"({len(pcm16) / sample_rate / 60:.2f} min at {sample_rate} Hz)"
    )
    results = [
        ("mu-law unigram entropy", unigram_entropy_bits(codes)),
        ("FLAC (16-bit audio)", flac_bits_per_sample(pcm16, sample_rate)),
        ("FLAC (8-bit mu-law codes)", flac_codes_bits_per_sample(codes, sample_rate)),
        ("xz (8-bit mu-law bytes)", xz_bits_per_sample(codes)),
    ]
    for name, bits in results:
        print(f"{name:<26} {bits:.3f} bits/sample")


if __name__ == "__main__":
    main()
