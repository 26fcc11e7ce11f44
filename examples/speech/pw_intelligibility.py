"""Parallel WaveNet against its teacher by speech recognition: PocketSphinx WER on held-out clips,
their teacher resynthesis and their student resynthesis, and the teacher's NLL of each.

    python examples/speech/pw_intelligibility.py CORPUS --teacher T.safetensors --student S.safetensors
        [--clips 8] [--grammar] [--out DIR] [--seed 0]

The recogniser, the clips (the first --clips of the valid split, sorted by path), the WER and the
--grammar mode are those of intelligibility.py (read it for what the figures mean: PocketSphinx
hears espeak-ng badly, so compare the systems with each other, never as absolutes). Both models
resynthesise each clip from its own log-mel frames with `arcli sample ... --mel-from CLIP --seed`;
the teacher's NLL of every file (bits per 16-bit sample) is conditioned on the frames of the clip it
resynthesises (those both models generated from), as `benchmarks/parallel_wavenet.py` measures it.
(`arcli score-likelihood wavenet-vocoder` would condition each file on its own frames: for a
resynthesis that is another input than the one it was drawn for, and the figures mean little.)
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from intelligibility import edit_distance, held_out, recognise, words, write_grammar
from voicing import RATE, voicing

from arcli.audio.io import load_audio
from arcli.registry import get_family
from arcli.tasks.audio import Clip
from arcli.tasks.waveform import encode_samples


@torch.no_grad()
def teacher_nats(teacher, clip: Path, path: Path) -> tuple[float, int]:
    """The teacher's NLL of the audio in `path` given the log-mel frames of `clip`: (nats, samples),
    by the audio task's own scorer (every sample once, with its full past), as score-likelihood."""
    config, task = teacher.config, get_family("wavenet-vocoder").task
    frames = task.features.clip_frames(clip, load_audio(clip, config.sample_rate), config, {})
    codes = encode_samples(load_audio(path, config.sample_rate), config)
    return task._clip_nats(teacher, Clip(path, codes, None, frames), teacher.receptive_field, 16), len(codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--grammar", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("pw-resynthesis"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if shutil.which("pocketsphinx_continuous") is None:
        sys.exit("needs pocketsphinx: apt-get install pocketsphinx pocketsphinx-en-us")
    clips = held_out(args.corpus, "valid")[: args.clips]
    args.out.mkdir(parents=True, exist_ok=True)
    grammar = None
    if args.grammar:
        grammar = args.out / "held-out.gram"
        clips = write_grammar(clips, grammar)
    families = {"teacher": ("wavenet-vocoder", args.teacher), "student": ("parallel-wavenet", args.student)}
    teacher = get_family("wavenet-vocoder").load(Path(args.teacher), torch.device("cpu"))[0]

    def resynthesis(system: str, clip: dict) -> Path:
        out = args.out / f"{system}-{clip['path'].replace('/', '-')}"
        if not out.exists():
            family, checkpoint = families[system]
            subprocess.run(["arcli", "sample", family, "-c", checkpoint, "--mel-from", str(args.corpus / clip["path"]), "-o", str(out),
                            "--seed", str(args.seed), "--quiet"], check=True)
        return out

    systems = {"espeak-ng audio": lambda clip: args.corpus / clip["path"],
               "teacher resynthesis": lambda clip: resynthesis("teacher", clip),
               "student resynthesis": lambda clip: resynthesis("student", clip)}
    for name, source in systems.items():
        paths = [source(clip) for clip in clips]
        errors = total = exact = nats = samples = 0
        voiced = []
        for clip, path in zip(clips, paths, strict=True):
            reference, heard = words(clip["text"]), words(recognise(path, grammar))
            errors += edit_distance(reference, heard)
            total += len(reference)
            exact += reference == heard
            voiced.append(voicing(load_audio(path, RATE).numpy())["voiced"])
            clip_nats, clip_samples = teacher_nats(teacher, args.corpus / clip["path"], path)
            nats, samples = nats + clip_nats, samples + clip_samples
        print(f"{name}: WER {100 * errors / total:.1f}% ({errors} errors / {total} words, {len(clips)} clips, {exact} exactly right); "
              f"voiced frames {100 * sum(voiced) / len(voiced):.0f}%; teacher's NLL given the clip's frames "
              f"{nats / samples / math.log(2):.4f} bits per 16-bit sample")


if __name__ == "__main__":
    main()
