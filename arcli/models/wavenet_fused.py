"""The fused WaveNet step on the CPU: a whole sample (every layer, the head and the draw) in one C call.

`WaveNet.step` (arcli/models/wavenet.py) is the reference: about 3 PyTorch ops per layer, each a
microsecond or more of dispatch at batch 1, which is most of a step's time. `wavenet_fused.c` does
the same arithmetic on the same re-laid-out weights in a plain C loop, and draws the next sample
there with the inverse-CDF lookup of arcli's `Sample` strategy from the same per-row uniform
streams, so for the same seed it gives the same samples as the engine (unless a uniform falls
within float rounding of a cumulative-probability step). It is compiled on first use with the
system's C compiler (`cc -O3 -march=native -ffast-math`, a second or so) into
~/.cache/arcli/ (or $ARCLI_CACHE), keyed by the source, the compiler and the CPU; without a
compiler it is not used, and generation takes the reference path with one line on stderr.

`ARCLI_NO_FUSED=1` turns it off (the reference path, e.g. to compare). Used for sampling (any temperature, no top-k/top-p) and greedy search at float32 on the CPU, for
up to FUSED_MAX_ROWS rows, one after another (a batched step through BLAS is faster beyond that).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from arcli.decoding.processors import Temperature
from arcli.decoding.strategies import Greedy, Sample, _stream_seed

SOURCE = Path(__file__).with_name("wavenet_fused.c")
FUSED_MAX_ROWS = 4  # more rows: the batched reference step is faster per sample (benchmarks/wavenet_generation.py)
CHUNK = 2048  # samples per C call, between progress updates

_F = ctypes.POINTER(ctypes.c_float)
_I64 = ctypes.POINTER(ctypes.c_int64)
_I32 = ctypes.POINTER(ctypes.c_int32)


class _Dims(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in ("layers", "residual", "dilation", "skip", "end", "vocab", "period", "queue_rows")]


_library: ctypes.CDLL | None = None
_failure: str | None = None


def library() -> ctypes.CDLL | None:
    """The compiled fused step, built on first use; None (and `failure()` says why) without a compiler."""
    global _library, _failure
    if _library is not None or _failure is not None:
        return _library
    try:
        _library = _load()
    except (OSError, subprocess.SubprocessError) as error:
        _failure = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return _library


def failure() -> str | None:
    return _failure


def _load() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler (cc or gcc) found")
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, timeout=30).stdout[:200]
    cpu = _cpu_description()
    key = hashlib.sha256(source + version + cpu.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("ARCLI_CACHE") or Path.home() / ".cache" / "arcli")
    target = cache / f"wavenet_fused-{key}.so"
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            built = Path(scratch) / target.name
            result = subprocess.run(
                [compiler, "-O3", "-march=native", "-ffast-math", "-shared", "-fPIC", str(SOURCE), "-o", str(built), "-lm"],
                capture_output=True, text=True, timeout=120,
            )
            if result.returncode != 0:
                raise OSError(f"compiling {SOURCE.name} failed: {result.stderr.strip() or result.returncode}")
            os.replace(built, target)  # atomic: another process may be building the same file
    lib = ctypes.CDLL(str(target))
    lib.wavenet_scratch.restype = ctypes.c_int64
    lib.wavenet_scratch.argtypes = [ctypes.POINTER(_Dims)]
    lib.wavenet_generate.restype = ctypes.c_int
    lib.wavenet_generate.argtypes = [
        ctypes.POINTER(_Dims), _F, _F, _F, _F, _F, ctypes.c_int32, ctypes.c_int64, ctypes.c_int32, _F, _F, _F, _F, _F, _F,
        _I64, _F, _I64, _I32, ctypes.c_int64, _F, ctypes.c_float, ctypes.c_int32, _I32, _F, _F,
    ]
    return lib


def _cpu_description() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
        name = next((line for line in info.splitlines() if line.startswith("model name")), "")
        return platform.machine() + name + flags
    except OSError:
        return platform.machine() + platform.processor()


def _pointer(array: np.ndarray, kind=_F):
    return array.ctypes.data_as(kind)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())


class FusedRow:
    """The fused generator of one row: its weights, its conditioning, its queues and position."""

    def __init__(self, model, speaker: int | None = None, frames: torch.Tensor | None = None, offset: int = 0):
        from arcli.models.wavenet import _StepWeights

        self.lib = library()
        if self.lib is None:
            raise OSError(f"the fused WaveNet step is unavailable: {_failure}")
        with torch.inference_mode():
            w = _StepWeights(model)
            L, R, D, S, E = w.sizes
            V = w.out.shape[1]
            self.dims = _Dims(L, R, D, S, E, V, w.period, w.queue_length)
            bias = w.bias if speaker is None else w.bias + w.speaker[:, speaker]  # (L, W2)
            self.weights = [_numpy(t) for t in (
                w.first, w.first_past, torch.stack(w.fused) if w.fused else w.first.new_zeros(1), bias,
            )]
            self.frames, self.offset, self.hop = 0, int(offset), int(model.config.cond_hop)
            proj = np.zeros(1, dtype=np.float32)
            if frames is not None:  # per-frame biases: static + the conditioning network's output projected
                hidden = model.cond_net(frames.to(w.first.dtype).t().unsqueeze(0))[0].t()  # (F, H)
                proj = _numpy(bias.reshape(1, -1) + hidden @ w.local)  # (F, L*W2)
                self.frames = len(proj)
            self.proj = proj
            self.head = [_numpy(t) for t in (w.skip, w.skip_bias, w.hidden, w.hidden_bias, w.out, w.out_bias)]
            self.slots = _numpy(w.slots.to(torch.int64))
        self.queue = np.zeros((w.queue_length, R), dtype=np.float32)
        self.position = np.zeros(1, dtype=np.int64)
        self.previous = np.full(1, -1, dtype=np.int32)
        self.scratch = np.zeros(self.lib.wavenet_scratch(ctypes.byref(self.dims)), dtype=np.float32)

    def run(self, count: int, uniforms: np.ndarray | None = None, temperature: float = 1.0, greedy: bool = False,
            logits: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The next `count` samples (int32), and their logits (count, V) if asked for."""
        tokens = np.zeros(count, dtype=np.int32)
        uniforms = np.zeros(count, dtype=np.float32) if uniforms is None else np.ascontiguousarray(uniforms, dtype=np.float32)
        out = np.zeros((count, self.dims.vocab), dtype=np.float32) if logits else None
        first, first_past, fused, bias = self.weights
        skip, skip_b, hidden, hidden_b, out_w, out_b = self.head
        self.lib.wavenet_generate(
            ctypes.byref(self.dims), _pointer(first), _pointer(first_past), _pointer(fused), _pointer(bias), _pointer(self.proj),
            self.frames, self.offset, self.hop, _pointer(skip), _pointer(skip_b), _pointer(hidden), _pointer(hidden_b),
            _pointer(out_w), _pointer(out_b), _pointer(self.slots, _I64), _pointer(self.queue), _pointer(self.position, _I64),
            _pointer(self.previous, _I32), count, _pointer(uniforms), 1.0 / temperature, int(greedy), _pointer(tokens, _I32),
            _pointer(out) if out is not None else None, _pointer(self.scratch),
        )
        return tokens, out


def plan(model, strategy, rows: int, device: torch.device) -> tuple[float, bool] | None:
    """(temperature, greedy) when the fused path can generate this request exactly as `generate`
    would; None otherwise (top-k/top-p, beam search, several hypotheses, not float32 on the CPU,
    too many rows, or no compiler -- the last said once on stderr)."""
    if os.environ.get("ARCLI_NO_FUSED") or device.type != "cpu" or model.embed.weight.dtype != torch.float32 or not 1 <= rows <= FUSED_MAX_ROWS:
        return None
    if isinstance(strategy, Greedy):
        choice = (1.0, True)
    elif isinstance(strategy, Sample) and strategy.nbest == 1 and all(isinstance(p, Temperature) for p in strategy.processors):
        temperature = 1.0
        for processor in strategy.processors:
            temperature *= processor.temperature
        choice = (temperature, False)
    else:
        return None
    if library() is None:
        print(f"arcli: note: generating without the fused WaveNet step ({_failure})", file=sys.stderr)
        return None
    return choice


def uniforms(seed: int, row: int, count: int) -> np.ndarray:
    """Row `row`'s uniforms, as `Sample` draws them (chunks of its stream's torch.rand)."""
    generator = torch.Generator().manual_seed(_stream_seed(seed, row, 0))
    chunks = [torch.rand(Sample._chunk, generator=generator) for _ in range(-(-count // Sample._chunk))]
    return torch.cat(chunks)[:count].numpy()


def generate(model, strategy, lengths: list[int], speakers: list[int | None], frames: list[torch.Tensor | None],
             temperature: float, greedy: bool, progress=None) -> list[np.ndarray]:
    """Each row's samples (lengths[i] of them), one row after another, `CHUNK` samples per call."""
    results = []
    done, total = 0, sum(lengths)
    for row, (length, speaker, row_frames) in enumerate(zip(lengths, speakers, frames, strict=True)):
        fused = FusedRow(model, speaker, row_frames)
        draws = None if greedy else uniforms(strategy.seed, row, length)
        pieces = []
        for begin in range(0, length, CHUNK):
            count = min(CHUNK, length - begin)
            tokens, _ = fused.run(count, None if draws is None else draws[begin : begin + count], temperature, greedy)
            pieces.append(tokens)
            done += count
            if progress is not None:
                progress(done, total)
        results.append(np.concatenate(pieces))
    return results
