"""Word error rate of a speech recogniser nobody here trained: on held-out speech, its resynthesis, and TTS.

    python examples/speech/intelligibility.py CORPUS [--split valid] [--clips 12] [--grammar]
                                             [--vocoder CHECKPOINT] [--tts CHECKPOINT] [--out DIR]

The recogniser is CMU PocketSphinx with its US-English model, fully offline (Debian `pocketsphinx`
and `pocketsphinx-en-us`; this script runs `pocketsphinx_continuous -infile CLIP.wav`). CORPUS is one
from make_corpus.py (transcripts in its corpus.json) or make_tts_corpus.py (a <clip>.json beside
every clip). For the first --clips clips of the split (sorted by path) it reports the WER of
(a) the espeak-ng audio itself, with --vocoder (b) `arcli sample wavenet-vocoder --mel-from CLIP`
resynthesis of it, and with --tts (c) `arcli sample wavenet-tts --text-file` speaking the clip's text
in the clip's voice (one run per speaker), plus the share of voiced frames of each (voicing.py).
WER = (substitutions + deletions + insertions) / reference words, over all clips together, after
lower-casing and removing punctuation.

PocketSphinx's general English language model hears little in espeak-ng's unnatural voice (WER near
90% on (a)). With --grammar the recogniser instead chooses among the held-out sentences themselves
(a JSGF grammar of the clips' transcripts whose every word is in its dictionary; the others are left
out and counted): still an acoustic decision, but a far easier one -- a forced-choice test of which
sentence was said, reported as WER and as the share of clips recognised exactly.
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


def recognise(path: Path, grammar: Path | None = None) -> str:
    command = ["pocketsphinx_continuous", "-infile", str(path), "-logfn", "/dev/null"]
    if grammar is not None:
        command += ["-jsgf", str(grammar)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return " ".join(line.strip() for line in result.stdout.splitlines() if line.strip())


def held_out(corpus: Path, split: str) -> list[dict]:
    """Every clip of the split as {path, text, speaker, voice}, sorted by path."""
    sidecars = sorted((corpus / split).glob("*/*.json"))
    if sidecars:
        return [{"path": str(p.with_suffix(".wav").relative_to(corpus)), "speaker": p.parent.name, **json.loads(p.read_text())}
                for p in sidecars]
    clips = json.loads((corpus / "corpus.json").read_text())["clips"]
    return sorted((c for c in clips if c["path"].startswith(split + "/")), key=lambda c: c["path"])


def write_grammar(clips: list[dict], path: Path) -> list[dict]:
    """A JSGF grammar of the clips' transcripts; returns the clips it covers (every word in the dictionary)."""
    dictionary = Path("/usr/share/pocketsphinx/model/en-us/cmudict-en-us.dict")
    known = {line.split()[0] for line in dictionary.read_text(errors="replace").splitlines() if line.strip()}
    covered = [clip for clip in clips if all(word in known for word in words(clip["text"]))]
    sentences = sorted({" ".join(words(clip["text"])) for clip in covered})
    path.write_text("#JSGF V1.0;\ngrammar held;\npublic <sentence> = " + " | ".join(f"( {s} )" for s in sentences) + ";\n")
    return covered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--vocoder", help="a wavenet-vocoder checkpoint: also score its resynthesis")
    parser.add_argument("--tts", help="a wavenet-tts checkpoint: also score it speaking the clips' texts")
    parser.add_argument("--grammar", action="store_true", help="recognise with a grammar of the held-out sentences")
    parser.add_argument("--out", type=Path, default=Path("resynthesis"), help="where the generated clips go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, help="sampling temperature of the vocoder and TTS runs (default: the checkpoint's)")
    args = parser.parse_args()
    sampling = ["--seed", str(args.seed)] + ([] if args.temperature is None else ["--temperature", str(args.temperature)])
    if shutil.which("pocketsphinx_continuous") is None:
        sys.exit("needs pocketsphinx: apt-get install pocketsphinx pocketsphinx-en-us")
    clips = held_out(args.corpus, args.split)[: args.clips]
    args.out.mkdir(parents=True, exist_ok=True)
    grammar = None
    if args.grammar:
        grammar = args.out / "held-out.gram"
        covered = write_grammar(clips, grammar)
        print(f"grammar: {len(covered)} of {len(clips)} clips have every word in PocketSphinx's dictionary; scoring those", file=sys.stderr)
        clips = covered
    systems = {"espeak-ng audio": lambda clip: args.corpus / clip["path"]}
    if args.vocoder:

        def resynthesise(clip: dict) -> Path:
            out = args.out / ("vocoder-" + clip["path"].replace("/", "-"))
            if not out.exists():
                subprocess.run(["arcli", "sample", "wavenet-vocoder", "-c", args.vocoder, "--mel-from", str(args.corpus / clip["path"]),
                                "-o", str(out), *sampling, "--quiet"], check=True)
            return out

        systems["wavenet-vocoder resynthesis"] = resynthesise
    if args.tts:
        spoken = speak_all(clips, args.tts, args.out, sampling)
        systems["wavenet-tts from text"] = lambda clip: spoken[clip["path"]]
    for name, source in systems.items():
        errors = total = exact = 0
        voiced = []
        for clip in clips:
            path = source(clip)
            reference, heard = words(clip["text"]), words(recognise(path, grammar))
            errors += edit_distance(reference, heard)
            total += len(reference)
            exact += reference == heard
            voiced.append(voicing(load_audio(path, RATE).numpy())["voiced"])
            print(f"  {name} | {clip['path']} | {' '.join(heard)}", file=sys.stderr)
        print(f"{name}: WER {100 * errors / total:.1f}% ({errors} errors / {total} words, {len(clips)} clips, {exact} exactly right); "
              f"voiced frames {100 * sum(voiced) / len(voiced):.0f}% (mean over clips)")


def speak_all(clips: list[dict], checkpoint: str, out: Path, sampling: list[str]) -> dict[str, Path]:
    """Each clip's text spoken by wavenet-tts as the clip's speaker: one --text-file run per speaker."""
    from arcli.checkpoint import read_checkpoint

    speakers = list(read_checkpoint(checkpoint).data.get("speakers") or [])
    spoken: dict[str, Path] = {}
    by_speaker: dict[str, list[dict]] = {}
    for clip in clips:
        by_speaker.setdefault(clip.get("speaker") or clip["path"].split("/")[1], []).append(clip)
    for speaker, group in by_speaker.items():
        stem = out / f"tts-{speaker}"
        names = [stem.with_name(f"{stem.name}-{i}.wav") if len(group) > 1 else stem.with_suffix(".wav") for i in range(1, len(group) + 1)]
        if not all(name.exists() for name in names):
            lines = stem.with_suffix(".txt")
            lines.write_text("".join(" ".join(clip["text"].split()) + "\n" for clip in group))
            command = ["arcli", "sample", "wavenet-tts", "-c", checkpoint, "--text-file", str(lines), "-o", str(stem.with_suffix(".wav")),
                       *sampling, "--quiet", "--force"]
            if speaker in speakers:
                command += ["--speaker", str(speakers.index(speaker))]
            subprocess.run(command, check=True)
        spoken.update({clip["path"]: name for clip, name in zip(group, names, strict=True)})
    return spoken


if __name__ == "__main__":
    main()
