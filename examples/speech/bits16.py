"""Held-out likelihood of WaveNet vocoders in one unit, bits per 16-bit sample, whatever their head.

    python examples/speech/bits16.py data/speech30/valid CHECKPOINT [CHECKPOINT ...]

A gaussian-head model (`--set output=gaussian`) gives the probability of each 16-bit sample
directly (the mass of its bin of width 1/32768, arcli/models/wavenet.py). A categorical model gives
the probability of the sample's 8-bit mu-law code; it becomes a distribution over 16-bit samples
by sharing that probability equally among the 16-bit values that fall in the code's bin, so

    bits per 16-bit sample = bits per mu-law code + log2(number of 16-bit values in the code's bin)

averaged over the samples (the second term depends on the audio alone: 1 bit for the bins nearest
zero, up to 10 for the loudest). Both figures are exact likelihoods of the same 16-bit files.
The scoring is `arcli score-likelihood`'s (every sample once, with its full past).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from arcli.audio.io import find_audio_files, load_audio
from arcli.audio.mulaw import mu_law_encode
from arcli.registry import get_family
from arcli.tasks.audio import _load_clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    family = get_family("wavenet-vocoder")
    found = [(path, None) for path, _ in find_audio_files([args.folder])]
    for checkpoint in args.checkpoints:
        model, stored = family.load(checkpoint, torch.device("cpu"))
        config, features = model.config, stored.data.get("features") or {}
        frames_of = lambda path, audio, config=config, features=features: family.task.features.clip_frames(path, audio, config, features)  # noqa: E731
        clips = _load_clips(found, config.sample_rate, config, frames_of)
        nats, samples, spread_bits = 0.0, 0, 0.0
        for clip in clips:
            nats += family.task._clip_nats(model, clip, model.receptive_field, 16)
            samples += len(clip.codes)
            if config.output == "categorical":
                mu = config.quantization_channels - 1
                table = mu_law_encode(torch.arange(-32768, 32768) / 32768, mu)  # the code of every 16-bit value
                widths = torch.bincount(table, minlength=mu + 1).double()
                audio16 = torch.round(load_audio(clip.path, config.sample_rate) * 32768).clamp(-32768, 32767) / 32768
                spread_bits += float(torch.log2(widths[mu_law_encode(audio16, mu)]).sum())
        native = nats / samples / math.log(2)
        if config.output == "categorical":
            print(f"{checkpoint}: categorical, {native:.4f} bits per mu-law code + {spread_bits / samples:.4f} "
                  f"= {native + spread_bits / samples:.4f} bits per 16-bit sample ({len(clips)} files, {samples} samples)")
        else:
            print(f"{checkpoint}: gaussian, {native:.4f} bits per 16-bit sample ({len(clips)} files, {samples} samples)")


if __name__ == "__main__":
    main()
