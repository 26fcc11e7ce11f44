"""The VRNN table: held-out log-likelihood of rnn-gauss and vrnn (ELBO and importance-sampled), the
voiced-frame share of their samples beside real speech, and spectrograms of samples next to real speech.

    python examples/speech/vrnn_table.py data/speech30/valid --vrnn VRNN.safetensors --rnn-gauss RG.safetensors \
        -o figures/vrnn-spectrograms.png [--samples 100] [--count 4] [--seconds 2] [--seed 1] [--temperature 1] [--wav-dir DIR]

Scores come from `arcli score-likelihood` (its summary line on stderr), samples from `arcli sample`
(--seed SEED+i, speaker i mod the model's speakers, --temperature: the spread of each frame), voicing from voicing.py (the share of non-silent
32 ms frames with a pitch). The PNG holds, one above the other, a real held-out clip's first
--seconds, then one sample of each model as the same speaker. A markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from voicing import voicing

from arcli.audio.io import find_audio_files, load_audio, write_spectrogram_png
from arcli.checkpoint import read_checkpoint

TITLE = 18  # pixels above each panel for its title


def arcli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arcli", *args], check=True, capture_output=True, text=True)


def summary(model: str, checkpoint: Path, valid: Path, samples: int) -> dict[str, float]:
    """The per-frame figures of score-likelihood's summary line: {'elbo': .., 'is': ..} or {'exact': ..}."""
    extra = ["--samples", str(samples)] if model == "vrnn" else []
    line = arcli("score-likelihood", model, "-c", str(checkpoint), str(valid), *extra, "--device", "cpu").stderr.strip().splitlines()[-1]
    numbers = [float(x) for x in re.findall(r"(-?[\d.]+) nats/frame", line)]
    return {"elbo": numbers[0], "is": numbers[1]} if model == "vrnn" else {"exact": numbers[0]}


def titled(path: Path, title: str, rate: int, seconds: float) -> Image.Image:
    with tempfile.TemporaryDirectory() as scratch:
        png = Path(scratch) / "s.png"
        write_spectrogram_png(png, load_audio(path, rate)[: round(seconds * rate)], rate)
        image = Image.open(png).convert("RGB")
    canvas = Image.new("RGB", (max(image.width, 7 * len(title)), image.height + TITLE), "white")
    canvas.paste(image, (0, TITLE))
    ImageDraw.Draw(canvas).text((4, 3), title, fill="black")
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("valid", type=Path)
    parser.add_argument("--vrnn", type=Path, required=True)
    parser.add_argument("--rnn-gauss", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--wav-dir", type=Path)
    args = parser.parse_args()
    wavs = args.wav_dir or args.output.parent
    wavs.mkdir(parents=True, exist_ok=True)
    stored = read_checkpoint(args.vrnn)
    rate, speakers = int(stored.config["sample_rate"]), list(stored.data.get("speakers") or [])
    per_second = rate / int(stored.config["frame_size"])

    scores = {name: summary(name, path, args.valid, args.samples) for name, path in (("rnn-gauss", args.rnn_gauss), ("vrnn", args.vrnn))}
    made: dict[str, list[Path]] = {}
    for name, checkpoint in (("rnn-gauss", args.rnn_gauss), ("vrnn", args.vrnn)):
        made[name] = []
        for i in range(args.count):
            out = wavs / f"{name}-sample-{i + 1}.wav"
            who = ["--speaker", str(i % len(speakers))] if speakers else []
            arcli("sample", name, "-c", str(checkpoint), "--seconds", str(args.seconds), "--seed", str(args.seed + i), *who,
                  "--temperature", str(args.temperature),
                  "-o", str(out), "--force", "--quiet", "--device", "cpu")
            made[name].append(out)
    real = [path for path, _ in find_audio_files([args.valid])][: args.count]

    def voiced(paths: list[Path]) -> str:
        shares = [100 * voicing(load_audio(p, rate).numpy(), rate)["voiced"] for p in paths]
        return f"{min(shares):.0f}-{max(shares):.0f}% (mean {np.mean(shares):.0f}%)"

    print(f"| model | held-out log-likelihood, nats/frame (nats/s) | voiced frames of {args.count} samples, temperature {args.temperature:g} |")
    print("|---|---|---|")
    exact = scores["rnn-gauss"]["exact"]
    print(f"| rnn-gauss | {exact:.1f} ({exact * per_second:.0f}), exact | {voiced(made['rnn-gauss'])} |")
    elbo, estimate = scores["vrnn"]["elbo"], scores["vrnn"]["is"]
    print(f"| vrnn | ELBO {elbo:.1f} ({elbo * per_second:.0f}); IS, K={args.samples}: {estimate:.1f} ({estimate * per_second:.0f}) "
          f"| {voiced(made['vrnn'])} |")
    print(f"| held-out espeak-ng speech ({len(real)} clips) | - | {voiced(real)} |")

    speaker = speakers[0] if speakers else None
    clip = next((p for p, label in find_audio_files([args.valid]) if label == speaker), real[0])
    panels = [titled(clip, f"held-out speech: {clip.parent.name}/{clip.name}", rate, args.seconds),
              titled(made["vrnn"][0], f"vrnn sample (speaker 0 = {speaker}, seed {args.seed}, temperature {args.temperature:g})", rate, args.seconds),
              titled(made["rnn-gauss"][0], f"rnn-gauss sample (speaker 0 = {speaker}, seed {args.seed}, temperature {args.temperature:g})", rate, args.seconds)]
    sheet = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels)), "white")
    top = 0
    for panel in panels:
        sheet.paste(panel, (0, top))
        top += panel.height
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output)
    print(f"wrote {args.output}; samples in {wavs}", file=sys.stderr)


if __name__ == "__main__":
    main()
