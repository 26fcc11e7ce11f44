"""Where a speech WaveNet's bits go: held-out bits/sample split by the kind of 20 ms frame.

    python examples/speech/breakdown.py VALID_DIR [--checkpoint FILE]

Each file of VALID_DIR (speaker sub-folders, as `examples/speech/make_corpus.py` writes them) is
scored by the model (the shipped one by default) as the speaker its folder names, and each 20 ms
frame (320 samples at 16 kHz) is put in one class by its own audio:
  silent  RMS < 0.005 (about -46 dBFS);
  noisy   otherwise, zero-crossing rate > 0.25 per sample (fricatives, aspiration: noise-like);
  voiced  the rest (vowels, nasals ...: periodic, in principle predictable from the past).
Printed per class: share of samples, bits/sample, share of all bits. The thresholds are rough, and
the split is a diagnostic, not a metric: it shows which kind of sound a better model must win on.
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from arcli.audio.io import find_audio_files, load_audio
from arcli.audio.mulaw import mu_law_encode
from arcli.registry import get_family

FRAME = 320  # samples: 20 ms at 16 kHz
SILENT_RMS, NOISY_ZCR = 0.005, 0.25


def frame_kind(frame: np.ndarray) -> str:
    if np.sqrt(np.mean(frame**2)) < SILENT_RMS:
        return "silent"
    return "noisy" if np.mean(np.diff(np.sign(frame)) != 0) > NOISY_ZCR else "voiced"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("valid", type=Path, help="folder of held-out clips in speaker sub-folders")
    parser.add_argument("--checkpoint", type=Path, help="a WaveNet checkpoint (default: the shipped one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, checkpoint = get_family("wavenet").load(args.checkpoint, torch.device("cpu"))
    model.float().eval()
    speakers, rate = checkpoint.data.get("speakers", []), checkpoint.data["sample_rate"]
    totals: dict[str, list[float]] = {}  # kind -> [bits, samples]
    for path, label in find_audio_files([args.valid]):
        audio = load_audio(path, rate)
        codes = mu_law_encode(audio, model.vocab_size - 1).long()
        condition = torch.tensor([speakers.index(label)]) if speakers else None
        with torch.no_grad():
            logp = torch.log_softmax(model(codes[None], condition)[0].double(), -1)
        bits = (-logp.gather(1, codes[:, None])[:, 0] / math.log(2)).numpy()
        audio = audio.numpy()
        for start in range(0, len(audio) - FRAME + 1, FRAME):
            total = totals.setdefault(frame_kind(audio[start : start + FRAME]), [0.0, 0])
            total[0] += bits[start : start + FRAME].sum()
            total[1] += FRAME
    all_bits, all_samples = sum(b for b, _ in totals.values()), sum(n for _, n in totals.values())
    print("kind\tshare of samples\tbits/sample\tshare of bits")
    for kind in ("silent", "voiced", "noisy"):
        bits, samples = totals.get(kind, [0.0, 0])
        if samples:
            print(f"{kind}\t{samples / all_samples:.1%}\t{bits / samples:.2f}\t{bits / all_bits:.1%}")
    print(f"all\t100.0%\t{all_bits / all_samples:.3f}\t100.0%  (whole 20 ms frames only)")


if __name__ == "__main__":
    main()
