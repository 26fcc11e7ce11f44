"""Parallel WaveNet against its teacher on the same clip: generation speed and the teacher's likelihood.

    python benchmarks/parallel_wavenet.py --teacher T.safetensors --student S.safetensors CLIP.wav
        [--seconds 2] [--device cpu|cuda] [--threads N] [--repeats 3] [--seed 0]

Both models resynthesise the first --seconds of CLIP.wav from its log-mel frames:
  - the teacher (a gaussian wavenet-vocoder) by its incremental Fast WaveNet step, batch 1, one
    sample at a time as `arcli sample wavenet-vocoder` draws it (arcli/decoding/continuous.py);
  - the student (parallel-wavenet) by one forward pass per flow over the whole clip, batch 1.
It prints samples/s for each (best of --repeats; "x real time" is samples/s over the sample rate),
their ratio, and the teacher's negative log-likelihood, in bits per 16-bit sample (its own
discretisation), of the student's samples and of its own samples, and of the clip itself.

Threads: the teacher steps on one thread on the CPU, as `arcli sample` runs it (one thread is its
fastest on a busy machine); the student runs on --threads (default: torch's, i.e. all cores).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from arcli.audio.features import log_mel
from arcli.audio.io import load_audio
from arcli.decoding.continuous import GaussianSteps, sample_frames
from arcli.models.wavenet import LocalCondition
from arcli.registry import get_family
from arcli.tasks.audio import Clip
from arcli.tasks.conditioning import MelFrames
from arcli.tasks.parallel_wavenet import generate
from arcli.tasks.waveform import encode_samples


def best(repeats: int, run) -> tuple[float, object]:
    """(fewest seconds over `repeats` calls of run(), the last result)."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times), result


@torch.no_grad()
def teacher_bits(teacher, audio: torch.Tensor, frames: torch.Tensor) -> float:
    """The teacher's NLL of audio (T,) in [-1, 1] as 16-bit samples given frames, bits per sample,
    by the audio task's own scorer (as score-likelihood)."""
    codes = encode_samples(audio.cpu(), teacher.config)
    clip = Clip(Path("benchmark"), codes, None, frames.cpu())
    nats = get_family("wavenet-vocoder").task._clip_nats(teacher, clip, teacher.receptive_field, 16)
    return nats / len(codes) / math.log(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    teacher, _ = get_family("wavenet-vocoder").load(args.teacher, device)
    student, _ = get_family("parallel-wavenet").load(args.student, device)
    config = student.config
    audio = load_audio(args.clip, config.sample_rate)[: round(args.seconds * config.sample_rate)]
    frames = log_mel(audio, MelFrames().spec(config)).to(device)  # the clip's own frames, as --mel-from makes them
    length = len(audio)
    cores = torch.get_num_threads()
    print(f"clip {args.clip}: {length} samples ({length / config.sample_rate:.2f} s); device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {cores} threads available"))

    if device.type == "cpu":
        torch.set_num_threads(1)
    seconds, drawn = best(args.repeats, lambda: sample_frames(GaussianSteps(teacher), length, 1, condition=LocalCondition(frames[None]),
                                                              seed=args.seed)[0, :, 0])
    teacher_rate = length / seconds
    print(f"teacher, incremental steps, batch 1{', 1 thread' if device.type == 'cpu' else ''}: {teacher_rate:,.0f} samples/s "
          f"({teacher_rate / config.sample_rate:.3g}x real time)")

    if device.type == "cpu":
        torch.set_num_threads(args.threads or cores)
    generate(student, frames, length, 1, seed=args.seed)  # warm-up
    seconds, (student_audio, log_q) = best(args.repeats, lambda: generate(student, frames, length, 1, seed=args.seed))
    student_rate = length / seconds
    print(f"student, {config.flows} flows, one pass each, batch 1"
          f"{f', {torch.get_num_threads()} threads' if device.type == 'cpu' else ''}: {student_rate:,.0f} samples/s "
          f"({student_rate / config.sample_rate:.3g}x real time)")
    print(f"student / teacher: {student_rate / teacher_rate:.1f}x")

    student_audio = student_audio[0].float().clamp(-1, 1)
    own_bits = -float(log_q.mean()) / float(torch.log(torch.tensor(2.0))) + 15
    print("teacher's NLL, bits per 16-bit sample: "
          f"of the student's samples {teacher_bits(teacher, student_audio, frames):.3f}, "
          f"of its own samples {teacher_bits(teacher, drawn.float(), frames):.3f}, "
          f"of the clip {teacher_bits(teacher, audio.to(device), frames):.3f}; "
          f"the student's exact density of its own samples {own_bits:.3f} (density x 2^-15)")


if __name__ == "__main__":
    main()
