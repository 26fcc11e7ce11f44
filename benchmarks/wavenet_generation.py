"""WaveNet generation speed: naive recompute vs Fast WaveNet steps vs the fused C step vs the `wavenet_vocoder` peer.

    python benchmarks/wavenet_generation.py [--checkpoint FILE] [--samples 4000] [--threads 1]

For the shipped architecture -- the config and weights of checkpoints/wavenet-speech.safetensors,
or WaveNetConfig() with random weights when it is missing (speed does not depend on the weights'
values) -- this prints samples/s side by side for
  (a) naive generation: for each new sample, `forward` over the last receptive-field window;
  (b) arcli's incremental `step` (per-layer ring buffers), driven by a bare loop that samples from
      the softmax, at batch 1 and 16; and the same through `arcli.decoding.generate` when present;
  (c) the fused C step (arcli/models/wavenet_fused.c) that `arcli sample` uses for up to
      FUSED_MAX_ROWS rows, in groups that share each weight load: the bare C calls, and `wavenet_fused.generate` as
      `arcli sample` runs it, with the share of its time inside the C calls (the model's step, the
      draw included) against its Python loop; at batch 1 also with float32 weights instead of the
      (exact) float16 ones;
  (d) the peer, PyPI `wavenet-vocoder==0.1.1` (r9y9), with its `incremental_forward` on the same
      architecture (same layers, stacks and channel widths), at batch 1 (its sampler draws one row);
  (e) with the shipped checkpoint, `arcli sample wavenet --seconds 2` itself, as its own
      "generated ... in X s" line reports it (the issue's goal: under 2 s, i.e. real time).
Every figure is the best of --repeats runs, since a shared machine is noisy; "x real time" is
samples per second (all rows together) over the sample rate, 16 kHz, and "RTF" its inverse as
`arcli sample` prints it: seconds of compute per second of audio (under 1: faster than real time).
Each figure also comes as samples per CPU-second of the benchmark's thread (time.thread_time, the
best of the runs too): on a machine that other jobs keep busy, the wall-clock figures swing with
their load, the CPU-time ones much less. The engine's and the fused loop's shares of the time are
measured inside the runs (model.step and the C calls timed where they are called).

The peer is for this benchmark only, never an arcli dependency:
    pip install --no-deps wavenet-vocoder==0.1.1 scipy
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from arcli.models.wavenet import WaveNet, WaveNetConfig

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "wavenet-speech.safetensors"


def now() -> tuple[float, float]:
    """(wall-clock, this thread's CPU time) in seconds."""
    return time.perf_counter(), time.thread_time()


def since(begin: tuple[float, float]) -> tuple[float, float]:
    """(wall, CPU) seconds since `begin` (from now())."""
    wall, cpu = now()
    return wall - begin[0], cpu - begin[1]


def best_rate(repeats: int, run) -> tuple[float, float]:
    """Best samples/s of wall-clock time, and best samples per CPU-second of this thread, over
    `repeats` calls of run() -> (samples made, (wall, CPU) seconds)."""
    walls, cpus = [], []
    for _ in range(repeats):
        samples, (wall, cpu) = run()
        walls.append(samples / wall)
        cpus.append(samples / max(cpu, 1e-9))
    return max(walls), max(cpus)


class Draw:
    """Samples from softmax(logits) by the Gumbel-max trick, argmax(logits + Gumbel noise), with the
    noise drawn 1024 steps at a time: an exact sampler that costs ~3 us a step where
    multinomial(softmax(.)) costs ~16 us."""

    def __init__(self, batch: int, vocab_size: int, chunk: int = 1024):
        self.shape, self.noise, self.used = (chunk, batch, vocab_size), None, chunk

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B,)
        if self.used == self.shape[0]:
            self.noise = -torch.empty(self.shape).exponential_().log()  # Gumbel(0, 1)
            self.used = 0
        self.used += 1
        return (logits + self.noise[self.used - 1]).argmax(-1)


def speakers(model: WaveNet, batch: int) -> torch.Tensor | None:
    """Speaker 0 for every row of a conditional model, None for an unconditional one."""
    return torch.zeros(batch, dtype=torch.long) if model.config.num_speakers else None


def naive(model: WaveNet, batch: int, samples: int):
    """Each new sample: forward over the last receptive-field window (plus a slot for the new one)."""
    rf, condition, draw = model.receptive_field, speakers(model, batch), Draw(batch, model.vocab_size)
    with torch.inference_mode():
        window = torch.randint(0, model.vocab_size, (batch, rf + 1))  # steady state: a full past
        draw(model(window, condition)[:, -1])  # warm-up
        begin = now()
        for _ in range(samples):
            token = draw(model(window, condition)[:, -1])  # logits of the slot after the last rf samples
            window = torch.cat([window[:, 1:-1], token[:, None], window[:, -1:]], dim=1)
        return batch * samples, since(begin)


def incremental(model: WaveNet, batch: int, samples: int):
    draw = Draw(batch, model.vocab_size)
    with torch.inference_mode():
        state, tokens = model.start(batch, speakers(model, batch)), None
        for _ in range(50):  # warm-up (and the ring buffers fill with something)
            logits, state = model.step(state, tokens)
            tokens = draw(logits)
        begin = now()
        for _ in range(samples):
            logits, state = model.step(state, tokens)
            tokens = draw(logits)
        return batch * samples, since(begin)


def step_only(model: WaveNet, batch: int, samples: int):
    """The model's share: steps fed fixed tokens, no softmax or sampling."""
    with torch.inference_mode():
        state = model.start(batch, speakers(model, batch))
        tokens = torch.randint(0, model.vocab_size, (batch,))
        for _ in range(50):
            _, state = model.step(state, tokens)
        begin = now()
        for _ in range(samples):
            _, state = model.step(state, tokens)
        return batch * samples, since(begin)


ENGINE_SHARE: dict[int, float] = {}  # batch -> share of generate's time inside model.step (in its best run)
_ENGINE_BEST: dict[int, float] = {}


def engine(model: WaveNet, batch: int, samples: int):
    """arcli.decoding.generate on the reference step; records the share of its time in model.step."""
    from arcli.decoding import generate

    condition = speakers(model, batch)
    generate(model, "sample", max_length=50, batch_size=batch, condition=condition, seed=0)  # warm-up
    inside, step = [0.0], model.step

    def timed(*args, **kwargs):
        began = time.perf_counter()
        result = step(*args, **kwargs)
        inside[0] += time.perf_counter() - began
        return result

    model.step = timed
    try:
        begin = now()
        generate(model, "sample", max_length=samples, batch_size=batch, condition=condition, seed=0)
        seconds = since(begin)
    finally:
        del model.step
    if seconds[0] < _ENGINE_BEST.get(batch, float("inf")):
        ENGINE_SHARE[batch], _ENGINE_BEST[batch] = inside[0] / seconds[0], seconds[0]
    return batch * samples, seconds


def fused_step(model: WaveNet, batch: int, samples: int, half: bool | None = None):
    """The bare fused C step (arcli/models/wavenet_fused.c): `samples` samples of every row in one
    call of run_rows (rows in groups of wavenet_group() that share each weight load), the draw from
    the softmax included; half=False: float32 weights."""
    import numpy as np

    from arcli.models import wavenet_fused

    speaker = 0 if model.config.num_speakers else None
    weights = wavenet_fused.FusedWeights(model, half=half)
    uniforms = np.random.default_rng(0).random(samples).astype(np.float32)
    rows = [wavenet_fused.FusedRow(model, speaker, weights=weights) for _ in range(batch)]
    wavenet_fused.run_rows(rows, 50, [uniforms[:50]] * batch)  # warm-up (and the queues fill with something)
    begin = now()
    wavenet_fused.run_rows(rows, samples, [uniforms] * batch)
    return batch * samples, since(begin)


FUSED_SHARE: dict[int, float] = {}  # batch -> share of wavenet_fused.generate's time inside the C calls (in its best run)
_FUSED_BEST: dict[int, float] = {}  # batch -> seconds of that run


def fused(model: WaveNet, batch: int, samples: int):
    """wavenet_fused.generate as `arcli sample` runs it: the weights laid out, each row's uniform
    stream, rows in groups in calls of CHUNK samples; records the C calls' share."""
    from arcli.decoding import Sample
    from arcli.models import wavenet_fused

    speaker = 0 if model.config.num_speakers else None
    strategy = Sample(seed=0)
    wavenet_fused.generate(model, strategy, [50] * batch, [speaker] * batch, [None] * batch, 1.0, False)  # warm-up, compile
    timings: dict = {}
    begin = now()
    wavenet_fused.generate(model, strategy, [samples] * batch, [speaker] * batch, [None] * batch, 1.0, False, timings=timings)
    seconds = since(begin)
    if seconds[0] < _FUSED_BEST.get(batch, float("inf")):
        FUSED_SHARE[batch], _FUSED_BEST[batch] = timings["step"] / seconds[0], seconds[0]
    return batch * samples, seconds


def cli_seconds(repeats: int) -> tuple[float, str]:
    """`arcli sample wavenet --seconds 2` (one thread): the best of its seconds of generation (from the
    real-time factor it prints, else its "generated ... in X s"), and that line."""
    import re
    import subprocess
    import sys
    import tempfile

    best, line = float("inf"), ""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):
            result = subprocess.run(
                [sys.executable, "-m", "arcli", "sample", "wavenet", "--seconds", "2", "--seed", "0", "--speaker", "0",
                 "-o", str(Path(scratch) / "out.wav"), "--force"],
                capture_output=True, text=True, env=env, timeout=600,
            )
            found = re.search(r"generated .*? in ([0-9.]+) s[^\n\r]*", result.stdout + result.stderr)
            if found is None:
                raise RuntimeError((result.stderr or result.stdout).strip().splitlines()[-1:] or [f"exit status {result.returncode}"])
            factor = re.search(r"real-time factor ([0-9.]+)", found.group(0))  # 3 digits where the seconds have 1
            seconds = 2 * float(factor.group(1)) if factor else float(found.group(1))
            if seconds < best:
                best, line = seconds, found.group(0)
    return best, line


def peer_model(config: WaveNetConfig):
    """r9y9's WaveNet with arcli's architecture: kernel 2, same layers, stacks and widths, and a
    speaker embedding feeding every layer's gate when arcli's model is conditional."""
    import warnings

    from wavenet_vocoder import WaveNet as PeerWaveNet

    if config.end_channels != config.skip_channels:
        print(f"  note: the peer's head is skip -> skip -> out; it uses {config.skip_channels} hidden channels")
    speakers = config.num_speakers
    with warnings.catch_warnings():  # its use of torch.nn.utils.weight_norm is deprecated
        warnings.simplefilter("ignore", FutureWarning)
        model = PeerWaveNet(
            out_channels=config.quantization_channels, layers=config.stacks * config.layers_per_stack, stacks=config.stacks,
            residual_channels=config.residual_channels, gate_channels=2 * config.dilation_channels,
            skip_out_channels=config.skip_channels, kernel_size=2, dropout=0.0, weight_normalization=False,
            gin_channels=16 if speakers else -1, n_speakers=speakers or None,
        )
    return model.eval()


def peer(model, samples: int):
    g = torch.zeros(1, 1, dtype=torch.long) if model.has_speaker_embedding() else None
    with torch.no_grad():
        model.incremental_forward(g=g, T=20, softmax=True, quantize=True)  # warm-up
        begin = now()
        model.incremental_forward(g=g, T=samples, softmax=True, quantize=True)
        return samples, since(begin)


def load_model(checkpoint: Path) -> tuple[WaveNet, str]:
    """The checkpoint's model, or WaveNetConfig() with random weights when it cannot be read."""
    try:
        from arcli.checkpoint import read_checkpoint

        stored = read_checkpoint(checkpoint, expected_model="wavenet")
        model = WaveNet(WaveNetConfig(**stored.config))
        model.load_state_dict(stored.tensors)
        return model.eval(), str(checkpoint)
    except Exception as error:  # a benchmark still runs without the shipped checkpoint
        return WaveNet(WaveNetConfig()).eval(), f"WaveNetConfig() defaults, random weights ({checkpoint}: {type(error).__name__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED, help="take the architecture (and weights) from this checkpoint")
    parser.add_argument("--samples", type=int, default=4000, help="samples per row for incremental generation")
    parser.add_argument("--naive-samples", type=int, default=200, help="samples per row for naive generation at batch 1")
    parser.add_argument("--peer-samples", type=int, default=1000, help="samples for the peer's incremental_forward")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the best is printed")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: the goal is one core)")
    parser.add_argument("--no-cli", action="store_true", help="skip (e), timing `arcli sample wavenet --seconds 2`")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, source = load_model(args.checkpoint)
    config = model.config
    rate = config.sample_rate
    print(f"WaveNet from {source}:\n  {config}")
    print(f"receptive field {model.receptive_field} samples; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"best of {args.repeats} runs; 'x real time' = samples/s / {rate} Hz; RTF = seconds of compute per second of audio;\n"
          f"'per CPU-s': samples per second of this thread's CPU time (time.thread_time), which leaves out waiting for a busy core\n")

    def report(name: str, batch: int, value: tuple[float, float]) -> float:
        wall, cpu = value
        print(f"  {name:50s} batch {batch:3d}  {wall:8.0f} samples/s  {wall / rate:6.3f} x real time  RTF {rate / wall:8.3f}"
              f"  | {cpu:8.0f} per CPU-s", flush=True)
        return wall

    from arcli.models import wavenet_fused

    results = {}
    for batch in (1, 16):
        n_naive = max(args.naive_samples // batch, 5)
        results["naive", batch] = report("(a) naive: forward over the last window", batch,
                                         best_rate(args.repeats, lambda b=batch, n=n_naive: naive(model, b, n)))
        n = args.samples if batch == 1 else max(args.samples // 4, 100)
        results["step", batch] = report("(b) reference step + sampling (Gumbel-max)", batch,
                                        best_rate(args.repeats, lambda b=batch, n=n: incremental(model, b, n)))
        results["alone", batch] = report("    reference step alone (fixed tokens)", batch,
                                         best_rate(args.repeats, lambda b=batch, n=n: step_only(model, b, n)))
        try:
            results["engine", batch] = report("    arcli.decoding.generate (reference step)", batch,
                                              best_rate(args.repeats, lambda b=batch, n=n: engine(model, b, n)))
            print(f"    generate's time: {ENGINE_SHARE[batch]:.1%} in the model's step, {1 - ENGINE_SHARE[batch]:.1%} in the engine's "
                  f"loop (sampling included)")
        except ImportError as error:
            print(f"    arcli.decoding.generate not available: {error}")
        try:
            half = wavenet_fused.FusedWeights(model).half
            group = wavenet_fused.library().wavenet_group()
            results["fused step", batch] = report(f"(c) fused C step + sampling ({'float16' if half else 'float32'} weights)", batch,
                                                  best_rate(args.repeats, lambda b=batch, n=n: fused_step(model, b, n)))
            if batch == 1 and half:
                report("    fused C step + sampling, float32 weights", batch,
                       best_rate(args.repeats, lambda b=batch, n=n: fused_step(model, b, n, half=False)))
            results["fused", batch] = report("    wavenet_fused.generate (as arcli sample)", batch,
                                             best_rate(args.repeats, lambda b=batch, n=n: fused(model, b, n)))
            print(f"    wavenet_fused.generate's time: {FUSED_SHARE[batch]:.1%} in the C step, {1 - FUSED_SHARE[batch]:.1%} in its "
                  f"Python loop; fused / reference generate: {results['fused', batch] / results['engine', batch]:.1f}x"
                  + (f"; rows in groups of {group}" if batch > 1 else ""))
        except OSError as error:
            print(f"    fused step unavailable: {error}")
        path = "fused" if batch <= wavenet_fused.FUSED_MAX_ROWS and ("fused", batch) in results else "engine"
        print(f"    arcli sample at batch {batch} takes the {'fused' if path == 'fused' else 'reference'} path "
              f"(FUSED_MAX_ROWS = {wavenet_fused.FUSED_MAX_ROWS}); incremental / naive: {results['step', batch] / results['naive', batch]:.0f}x\n")

    try:
        peer_net = peer_model(config)
        results["peer", 1] = report("(d) peer wavenet_vocoder incremental_forward", 1,
                                    best_rate(args.repeats, lambda: peer(peer_net, args.peer_samples)))
        for key, name in (("step", "reference step + sampling"), ("engine", "reference generate"), ("fused step", "fused C step"),
                          ("fused", "wavenet_fused.generate")):
            if (key, 1) in results:
                print(f"    {name} / peer, batch 1: {results[key, 1] / results['peer', 1]:.1f}x")
    except Exception as error:  # any failure of the peer: say why and keep arcli's figures
        print(f"(d) peer wavenet_vocoder unavailable: {type(error).__name__}: {error}")

    if args.checkpoint == SHIPPED and SHIPPED.is_file() and not args.no_cli:
        try:
            seconds, line = cli_seconds(args.repeats)
            print(f"\n(e) arcli sample wavenet --seconds 2 (best of {args.repeats}): {line}")
            print(f"    {2 * rate / seconds:.0f} samples/s, {2 / seconds:.2f} x real time, RTF {seconds / 2:.3f}")
        except Exception as error:
            print(f"\n(e) arcli sample wavenet failed: {type(error).__name__}: {error}")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
