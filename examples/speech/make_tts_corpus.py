"""Render a speech corpus's transcripts again through libespeak-ng, keeping the phoneme timing: wavenet-tts data.

    python examples/speech/make_tts_corpus.py SOURCE OUTDIR [--splits train valid]

SOURCE is a corpus from make_corpus.py (its corpus.json lists every clip's text, voice, pitch and
speed). Each clip is rendered once more by libespeak-ng (arcli/audio/espeak.py), which also reports
where each phoneme starts; the audio is resampled to 16 kHz (soxr) and written unedited -- no
silence trimming, which would move the phonemes -- as OUTDIR/<split>/<speaker>/<n>.wav beside
<n>.json: {"text", "voice", "pitch", "speed", "phones": [[name, start seconds], ...]}. Same texts,
voices and train/valid split as SOURCE, so held-out sentences stay out of training.

    arcli train wavenet-tts --data OUTDIR/train --valid OUTDIR/valid -o tts.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from arcli.audio.espeak import render

RATE = 16000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--splits", nargs="+", default=["train", "valid"])
    args = parser.parse_args()
    listing = args.source / "corpus.json"
    if not listing.is_file():
        sys.exit(f"error: {listing} not found: SOURCE must be a corpus made by examples/speech/make_corpus.py")
    if args.outdir.exists() and any(args.outdir.iterdir()):
        sys.exit(f"error: {args.outdir} exists and is not empty; give a new folder")
    corpus = json.loads(listing.read_text())
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    written = []
    for clip in corpus["clips"]:
        split = clip["path"].split("/")[0]
        if split not in args.splits:
            continue
        rendering = render(clip["text"], clip["voice"], clip["pitch"], clip["speed"])
        audio = soxr.resample(rendering.audio, rendering.rate, RATE, quality="HQ").clip(-1.0, 1.0)
        path = args.outdir / clip["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (audio * 32767).round().astype(np.int16), RATE, subtype="PCM_16")
        phones = [[phone.name, round(phone.start, 6)] for phone in rendering.phones]
        sidecar = {k: clip[k] for k in ("text", "voice", "pitch", "speed")} | {"phones": phones}
        path.with_suffix(".json").write_text(json.dumps(sidecar, ensure_ascii=False) + "\n")
        seconds[split] = seconds.get(split, 0.0) + len(audio) / RATE
        written.append(clip["path"])
    summary = {
        "description": "espeak-ng renderings with phoneme timing (libespeak-ng phoneme events), for wavenet-tts",
        "source": str(args.source),
        "command": " ".join(sys.argv),
        "sample_rate": RATE,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "clips": len(written),
    }
    (args.outdir / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    took = time.perf_counter() - started
    print(f"wrote {len(written)} clips ({', '.join(f'{k}: {v / 60:.1f} min' for k, v in seconds.items())}) in {took:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
