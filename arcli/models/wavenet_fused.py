"""The fused WaveNet step on the CPU: a whole sample (every layer, the head and the draw) in one C call.

`WaveNet.step` (arcli/models/wavenet.py) is the reference: about 3 PyTorch ops per layer, each a
microsecond or more of dispatch at batch 1, which is most of a step's time. `wavenet_fused.c` does
the same arithmetic in a C loop with vectorised matrix-vector products on the model's own matrices
(FusedWeights lays them out: float16 where every matrix is exactly a float16, as in the shipped
checkpoints, else float32), and draws the next sample there with the inverse-CDF lookup of arcli's
`Sample` strategy from the same per-row uniform streams, so for the same seed it gives the same
samples as the engine (unless a uniform falls within float rounding of a cumulative-probability
step). It is compiled on first use with the system's C compiler (`cc -O3 -march=native
-ffast-math`, a second or so) into ~/.cache/arcli/ (or $ARCLI_CACHE), keyed by the source, the
compiler and the CPU; without a compiler it is not used, and generation takes the reference path
with one line on stderr.

`ARCLI_NO_FUSED=1` turns it off (the reference path, e.g. to compare). Used for sampling (any
temperature, no top-k/top-p) and greedy search at float32 on the CPU, categorical output, for up to
FUSED_MAX_ROWS rows, in groups that share each weight load (wavenet_group(): 6 with AVX-512):
measured on a 2-core AMD EPYC (benchmarks/wavenet_generation.py and CPU-time checks), it runs
2.5-3 times as many samples per second as the batched reference step at 16 to 512 rows.
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
import time
import weakref
from pathlib import Path

import numpy as np
import torch

from arcli.decoding.processors import Temperature
from arcli.decoding.strategies import Greedy, Sample, _stream_seed

SOURCE = Path(__file__).with_name("wavenet_fused.c")
FUSED_MAX_ROWS = 512  # the fused groups beat the batched reference step up to here, as far as measured
CHUNK = 2048  # samples per C call, between progress updates

_F = ctypes.POINTER(ctypes.c_float)
_I64 = ctypes.POINTER(ctypes.c_int64)
_I32 = ctypes.POINTER(ctypes.c_int32)
_V = ctypes.c_void_p


class _Dims(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in ("layers", "residual", "dilation", "skip", "end", "vocab", "period", "queue_rows")]


class _Row(ctypes.Structure):  # wavenet_fused.c's Row: one row's state and conditioning
    _fields_ = [("bias", _F), ("proj", _F), ("frames", ctypes.c_int64), ("offset", ctypes.c_int64), ("queue", _F), ("position", _I64),
                ("previous", _I32), ("uniforms", _F), ("tokens", _I32), ("logits_out", _F), ("scratch", _F)]


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
    for name in ("wavenet_block", "wavenet_half", "wavenet_group"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = []
    lib.wavenet_scratch.restype = ctypes.c_int64
    lib.wavenet_scratch.argtypes = [ctypes.POINTER(_Dims)]
    lib.wavenet_generate.restype = ctypes.c_int
    lib.wavenet_generate.argtypes = [
        ctypes.POINTER(_Dims), ctypes.c_int32, _F, _V, _V, _V, _V, _V, ctypes.c_int32, _F, _F, _F, _I64,
        ctypes.POINTER(_Row), ctypes.c_int32, ctypes.c_int64, ctypes.c_float, ctypes.c_int32,
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


def _padded(m: int, block: int) -> int:
    return -(-m // block) * block


def _pad_columns(array: np.ndarray, width: int) -> np.ndarray:
    """(..., m) -> (..., width), zeros on the right."""
    return np.ascontiguousarray(np.pad(array, [(0, 0)] * (array.ndim - 1) + [(0, width - array.shape[-1])]))


class FusedWeights:
    """A model's matrices laid out for wavenet_fused.c, shared by the rows of one request: each
    (n, m) matrix packed in column blocks, (pad(m) / block, n, block), as float16 when every matrix
    is exactly a float16 (so the products are the same; the shipped checkpoints store float16) and
    the CPU converts float16 (F16C), else float32. half=False forces float32."""

    def __init__(self, model, half: bool | None = None):
        self.lib = library()
        if self.lib is None:
            raise OSError(f"the fused WaveNet step is unavailable: {_failure}")
        block = self.block = self.lib.wavenet_block()
        blocks, config = model.blocks, model.config
        L, R, D, S, E, V = len(blocks), config.residual_channels, config.dilation_channels, config.skip_channels, config.end_channels, model.vocab_size
        self.width = _padded(2 * D, block)  # a layer's padded [filter | gate]
        with torch.inference_mode():
            t = lambda conv: conv.weight[:, :, 0].detach().t()  # noqa: E731  (out, in, 1) -> (in, out)
            conv = [torch.cat([b.conv.weight[:, :, 1].detach().t(), b.conv.weight[:, :, 0].detach().t()]) for b in blocks]  # (2R, 2D)
            res = [torch.cat([t(b.residual), t(b.skip)], 1) for b in blocks[:-1]]  # (D, R+S)
            matrices = [conv, res, [t(blocks[-1].skip)], [t(model.head[1])], [t(model.head[3])]]
            matrices = [[m.float() for m in group] for group in matrices]
            exact = all(torch.equal(m.half().float(), m) for group in matrices for m in group)
            self.half = bool(self.lib.wavenet_half()) and exact and half is not False
            dtype = torch.float16 if self.half else torch.float32

            def pack(group: list[torch.Tensor]) -> np.ndarray:  # each (n, m) -> (pad(m) / block, n, block), stacked
                if not group:
                    return np.zeros(block, dtype=np.float16 if self.half else np.float32)
                padded = [torch.nn.functional.pad(m, (0, _padded(m.shape[1], block) - m.shape[1])) for m in group]
                return torch.stack([m.reshape(m.shape[0], -1, block).transpose(0, 1) for m in padded]).to(dtype).contiguous().numpy()

            self.conv, self.res, self.last, self.hidden, self.out = (pack(group) for group in matrices)
            self.embed = _numpy(model.embed.weight.float())
            self.bias = _numpy(torch.stack([b.conv.bias.detach() for b in blocks]).float())  # (L, 2D)
            self.speaker = (  # (speakers, L, 2D)
                _numpy(torch.stack([b.speaker.weight.detach() for b in blocks], 1).float()) if config.num_speakers else None
            )
            self.local = (  # (H, L, 2D): conditioning features -> every layer's pre-activations
                torch.stack([b.local.weight.detach().t() for b in blocks], 1).float() if config.cond_channels else None
            )
            self.skip_bias = _numpy(torch.stack([b.skip.bias.detach() for b in blocks]).sum(0).float())
            self.hidden_bias = _pad_columns(_numpy(model.head[1].bias.detach().float()), _padded(E, block))
            self.out_bias = _pad_columns(_numpy(model.head[3].bias.detach().float()), _padded(V, block))
        dilations = [b.dilation for b in blocks]
        offsets = np.cumsum([0] + dilations[:-1])  # each layer's first queue row
        # Dilations are powers of two, so ring positions repeat with period max(dilations): row p
        # holds the queue rows to read x_{t-dilation} from, then write x_t to, at t = p mod period.
        period = max(dilations)
        self.slots = np.ascontiguousarray((offsets[None, :] + np.arange(period)[:, None] % np.array(dilations)[None, :]).astype(np.int64))
        self.dims = _Dims(L, R, D, S, E, V, period, sum(dilations))


_laid_out: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its parameters' versions, FusedWeights)


def weights_of(model) -> FusedWeights:
    """The model's FusedWeights, laid out once (tens of milliseconds) and reused while its
    parameters are the same tensors, unchanged in place."""
    versions = tuple((p.data_ptr(), p._version) for p in model.parameters())
    cached = _laid_out.get(model)
    if cached is None or cached[0] != versions:
        cached = _laid_out[model] = (versions, FusedWeights(model))
    return cached[1]


class FusedRow:
    """The fused generator of one row: the (shared) weights, its conditioning, its queues and position."""

    def __init__(self, model, speaker: int | None = None, frames: torch.Tensor | None = None, offset: int = 0,
                 weights: FusedWeights | None = None):
        w = self.w = weights if weights is not None else FusedWeights(model)
        self.lib, self.dims = w.lib, w.dims
        bias = w.bias if speaker is None else w.bias + w.speaker[speaker]  # (L, 2D)
        self.bias = _pad_columns(bias, w.width)
        self.frames, self.offset, self.hop = 0, int(offset), int(model.config.cond_hop)
        self.proj = np.zeros(1, dtype=np.float32)
        if frames is not None:  # per-frame biases: static + the conditioning network's output projected
            with torch.inference_mode():
                hidden = model.cond_net(frames.to(model.embed.weight.dtype).t().unsqueeze(0))[0].t().float()  # (F, H)
                proj = torch.from_numpy(bias)[None] + torch.einsum("fh,hlc->flc", hidden, w.local)  # (F, L, 2D)
            self.proj = _pad_columns(_numpy(proj), w.width)
            self.frames = len(self.proj)
        self.queue = np.zeros((w.dims.queue_rows, w.dims.residual), dtype=np.float32)
        self.position = np.zeros(1, dtype=np.int64)
        self.previous = np.full(1, -1, dtype=np.int32)
        self.scratch = np.zeros(self.lib.wavenet_scratch(ctypes.byref(self.dims)), dtype=np.float32)

    def run(self, count: int, uniforms: np.ndarray | None = None, temperature: float = 1.0, greedy: bool = False,
            logits: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The next `count` samples (int32), and their logits (count, V) if asked for."""
        (tokens, out), = run_rows([self], count, [uniforms], temperature, greedy, logits)
        return tokens, out

    def _state(self, count: int, uniforms: np.ndarray, tokens: np.ndarray, logits: np.ndarray | None) -> _Row:
        return _Row(_pointer(self.bias), _pointer(self.proj), self.frames, self.offset, _pointer(self.queue), _pointer(self.position, _I64),
                    _pointer(self.previous, _I32), _pointer(uniforms), _pointer(tokens, _I32),
                    _pointer(logits) if logits is not None else None, _pointer(self.scratch))


def run_rows(rows: list[FusedRow], count: int, uniforms: list[np.ndarray | None], temperature: float = 1.0, greedy: bool = False,
             logits: bool = False) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The next `count` samples of several rows of one model's weights, at the same position, in
    one call: up to the library's wavenet_group() rows share each weight load (AVX-512: 6)."""
    w = rows[0].w
    if any(row.w is not w for row in rows) or len({int(row.position[0]) for row in rows}) != 1:
        raise ValueError("rows run together share their weights and their position")
    results, states = [], []
    for row, draws in zip(rows, uniforms, strict=True):
        draws = np.zeros(count, dtype=np.float32) if draws is None else np.ascontiguousarray(draws, dtype=np.float32)
        tokens = np.zeros(count, dtype=np.int32)
        out = np.zeros((count, w.dims.vocab), dtype=np.float32) if logits else None
        results.append((tokens, out, draws))  # the uniforms kept alive for the call
        states.append(row._state(count, draws, tokens, out))
    group = w.lib.wavenet_group()
    for begin in range(0, len(rows), group):
        part = states[begin : begin + group]
        code = w.lib.wavenet_generate(
            ctypes.byref(w.dims), int(w.half), _pointer(w.embed), w.conv.ctypes.data, w.res.ctypes.data, w.last.ctypes.data,
            w.hidden.ctypes.data, w.out.ctypes.data, rows[0].hop, _pointer(w.skip_bias), _pointer(w.hidden_bias), _pointer(w.out_bias),
            _pointer(w.slots, _I64), (_Row * len(part))(*part), len(part), count, 1.0 / temperature, int(greedy),
        )
        if code != 0:
            raise RuntimeError(f"wavenet_generate failed ({code})")
    return [(tokens, out) for tokens, out, _ in results]


def plan(model, strategy, rows: int, device: torch.device) -> tuple[float, bool] | None:
    """(temperature, greedy) when the fused path can generate this request exactly as `generate`
    would; None otherwise (top-k/top-p, beam search, several hypotheses, not float32 on the CPU,
    too many rows, a gaussian output head, or no compiler -- the last said once on stderr)."""
    if model.gaussian or os.environ.get("ARCLI_NO_FUSED") or device.type != "cpu" or model.embed.weight.dtype != torch.float32:
        return None
    if not 1 <= rows <= FUSED_MAX_ROWS:
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
             temperature: float, greedy: bool, progress=None, timings: dict | None = None) -> list[np.ndarray]:
    """Each row's samples (lengths[i] of them): rows in groups of wavenet_group() (AVX-512: 6; else
    1) run together while they last, `CHUNK` samples per call. timings, if given, receives "step":
    the seconds spent in the C calls (the rest of the call's time is this loop's: laying out the
    weights, the uniforms, progress)."""
    done, total, inside = 0, sum(lengths), 0.0
    weights = weights_of(model)
    group = weights.lib.wavenet_group()
    results: list[np.ndarray] = []
    for first in range(0, len(lengths), group):  # rows `group` at a time, together while they last
        members = range(first, min(first + group, len(lengths)))
        rows = [FusedRow(model, speakers[i], frames[i], weights=weights) for i in members]
        draws = [None if greedy else uniforms(strategy.seed, i, lengths[i]) for i in members]
        pieces: list[list[np.ndarray]] = [[] for _ in members]
        position = 0
        while True:
            active = [k for k, i in enumerate(members) if lengths[i] > position]
            if not active:
                break
            count = min(CHUNK, min(lengths[members[k]] for k in active) - position)
            began = time.perf_counter()
            out = run_rows([rows[k] for k in active], count,
                           [None if draws[k] is None else draws[k][position : position + count] for k in active], temperature, greedy)
            inside += time.perf_counter() - began
            for k, (tokens, _) in zip(active, out, strict=True):
                pieces[k].append(tokens)
            position += count
            done += count * len(active)
            if progress is not None:
                progress(done, total)
        results.extend(np.concatenate(piece) if piece else np.zeros(0, dtype=np.int32) for piece in pieces)
    if timings is not None:
        timings["step"] = inside
    return results
