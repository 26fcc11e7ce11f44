"""Word error rate of a speech recogniser nobody here trained, on held-out speech and on its resynthesis.

    python examples/speech/intelligibility.py data/speech30 [--split valid] [--clips 12]
                                             [--vocoder CHECKPOINT] [--out resynth/]

The recogniser is CMU PocketSphinx with its US-English model, fully offline (Debian `pocketsphinx`
and `pocketsphinx-en-us`; this script runs `pocketsphinx_continuous -infile CLIP.wav`). The
references are the corpus's own transcripts (corpus.json of examples/speech/make_corpus.py). For the
first --clips clips of the split (sorted by path) it reports the WER of (a) the espeak-ng audio
itself and, with --vocoder, (b) `arcli sample wavenet-vocoder --mel-from CLIP` resynthesis of it,
plus the share of voiced frames of both (examples/speech/voicing.py). WER = (substitutions +
deletions + insertions) / reference words, over all clips together, after lower-casing and removing
punctuation. PocketSphinx is a weak recogniser and espeak-ng an unnatural voice, so (a) is far from
0: what matters is how far (b) is from (a).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from voicing import RATE, voicing

from arcli.audio.io import load_audio


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]+", " ", text.lower().replace("’", "'")).split()


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp))
        previous = current
    return previous[-1]


def recognise(path: Path) -> str:
    result = subprocess.run(["pocketsphinx_continuous", "-infile", str(path), "-logfn", "/dev/null"],
                            capture_output=True, text=True, check=True)
    return " ".join(line.strip() for line in result.stdout.splitlines() if line.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--vocoder", help="a wavenet-vocoder checkpoint: also score its resynthesis")
    parser.add_argument("--out", type=Path, default=Path("resynthesis"), help="where the resynthesised clips go")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if shutil.which("pocketsphinx_continuous") is None:
        sys.exit("needs pocketsphinx: apt-get install pocketsphinx pocketsphinx-en-us")
    corpus = json.loads((args.corpus / "corpus.json").read_text())
    clips = sorted((c for c in corpus["clips"] if c["path"].startswith(args.split + "/")), key=lambda c: c["path"])[: args.clips]
    systems = {"espeak-ng audio": lambda clip: args.corpus / clip["path"]}
    if args.vocoder:
        args.out.mkdir(parents=True, exist_ok=True)

        def resynthesise(clip: dict) -> Path:
            out = args.out / clip["path"].replace("/", "-")
            if not out.exists():
                subprocess.run(["arcli", "sample", "wavenet-vocoder", "-c", args.vocoder, "--mel-from", str(args.corpus / clip["path"]),
                                "-o", str(out), "--seed", str(args.seed), "--quiet"], check=True)
            return out

        systems["wavenet-vocoder resynthesis"] = resynthesise
    for name, source in systems.items():
        errors = total = 0
        voiced = []
        for clip in clips:
            path = source(clip)
            reference, heard = words(clip["text"]), words(recognise(path))
            errors += edit_distance(reference, heard)
            total += len(reference)
            voiced.append(voicing(load_audio(path, RATE).numpy())["voiced"])
            print(f"  {name} | {clip['path']} | {' '.join(heard)}", file=sys.stderr)
        print(f"{name}: WER {100 * errors / total:.1f}% ({errors} errors / {total} words, {len(clips)} clips); "
              f"voiced frames {100 * sum(voiced) / len(voiced):.0f}% (mean over clips)")


if __name__ == "__main__":
    main()
