"""One held-out clip three ways, as spectrograms one above the other: espeak-ng's audio, the vocoder's
resynthesis of it, and wavenet-tts speaking its text.

    python examples/speech/triple.py data/tts30/valid/en-us/0001.wav --vocoder VOC.safetensors \
        --tts TTS.safetensors -o docs/triple.png [--wav-dir DIR] [--seed 0]

The clip needs its phoneme sidecar (<clip>.json from make_tts_corpus.py), for the text and the voice.
Each panel is drawn by arcli's own `--spectrogram` code (time in seconds, frequency in kHz), with a
title line; the three clips are kept in --wav-dir (default: beside the PNG).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from arcli.audio.io import load_audio, write_spectrogram_png
from arcli.checkpoint import read_checkpoint

RATE = 16000
TITLE = 18  # pixels above each panel for its title


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--vocoder", required=True)
    parser.add_argument("--tts", required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--wav-dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sidecar = json.loads(args.clip.with_suffix(".json").read_text())
    wavs = args.wav_dir or args.output.parent
    wavs.mkdir(parents=True, exist_ok=True)
    stem = args.clip.parent.name + "-" + args.clip.stem
    resynthesis, spoken = wavs / f"{stem}-vocoder.wav", wavs / f"{stem}-tts.wav"
    common = ["--seed", str(args.seed), "--quiet", "--force"]
    subprocess.run(["arcli", "sample", "wavenet-vocoder", "-c", args.vocoder, "--mel-from", str(args.clip), "-o", str(resynthesis), *common],
                   check=True)
    speakers = list(read_checkpoint(args.tts).data.get("speakers") or [])
    voice = ["--speaker", str(speakers.index(args.clip.parent.name))] if args.clip.parent.name in speakers else []
    subprocess.run(["arcli", "sample", "wavenet-tts", "-c", args.tts, "--text", sidecar["text"], "-o", str(spoken), *voice, *common],
                   check=True)
    panels = [
        (f"espeak-ng ({sidecar['voice']}): \"{sidecar['text']}\"", args.clip),
        (f"wavenet-vocoder resynthesis from its log-mel ({Path(args.vocoder).name})", resynthesis),
        (f"wavenet-tts from the text: espeak-ng phonemes and pitch only ({Path(args.tts).name})", spoken),
    ]
    images = []
    with tempfile.TemporaryDirectory() as scratch:
        for i, (title, path) in enumerate(panels):
            png = Path(scratch) / f"{i}.png"
            write_spectrogram_png(png, load_audio(path, RATE), RATE)
            image = Image.open(png).convert("RGB")
            titled = Image.new("RGB", (max(image.width, 7 * len(title)), image.height + TITLE), "white")  # room for the title
            titled.paste(image, (0, TITLE))
            ImageDraw.Draw(titled).text((4, 3), title, fill="black")
            images.append(titled)
    width = max(image.width for image in images)
    sheet = Image.new("RGB", (width, sum(image.height for image in images)), "white")
    top = 0
    for image in images:
        sheet.paste(image, (0, top))
        top += image.height
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output)
    print(f"wrote {args.output} ({width}x{sheet.height}); clips in {wavs}", file=sys.stderr)


if __name__ == "__main__":
    main()
