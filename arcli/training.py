"""One training loop for every model: AdamW, warm-up + cosine schedule, clipping, mixed precision
on CUDA, held-out evaluation in the model's unit, atomic checkpoints, exact resume, clean Ctrl-C.

The loop knows nothing of audio, pixels or words. A model family brings a `loss_fn(model, batch)`
that returns a `LossOutput` (objective to minimise, summed NLL in nats, number of units) and a
`TrainData` (random training batches drawn only from the generator it is given; fixed held-out
batches). The caller writes the model checkpoint through `save(metrics)`, since it knows the
family, the config and the data description; the loop writes the training state itself.

Resume is exact: the training state holds the weights, AdamW's state, the step (which fixes the
learning rate), the global torch RNG (dropout) and the data generator, and evaluation and saving
run with the RNG forked, so they never move the training's random streams. A run resumed at step k
takes, on the CPU, bit for bit the steps an uninterrupted run takes after step k.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from arcli.checkpoint import load_training_state, save_training_state
from arcli.distributed import SINGLE, PeerLost, World, check_batch, is_peer_failure, lost_peer, shard, sum_over_ranks, wrap
from arcli.errors import ArcliError, CheckpointError, OptionError
from arcli.metrics_log import MetricsLog
from arcli.units import UNITS, format_nll, nll_metrics  # noqa: F401  (nll_metrics: re-exported)


@dataclass
class LossOutput:
    """What a family's loss function returns for one batch."""

    objective: torch.Tensor  # scalar to minimise (may include label smoothing, auxiliary terms ...)
    nll: torch.Tensor  # sum of negative log-likelihoods in nats over `count` units (may be detached)
    count: int  # number of predicted units (samples, sub-pixels, tokens)


class TrainData(Protocol):
    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Any:
        """A random training batch, drawn only with `generator` (so that resume is exact)."""

    def valid_batches(self, batch_size: int) -> Iterable[Any]:
        """The held-out batches, the same ones every time."""


@dataclass
class TrainOptions:
    steps: int = 10_000  # enough for the small shipped models to converge on a CPU-sized corpus
    batch_size: int = 16  # fits the default models on a laptop; larger batches need a larger lr
    learning_rate: float = 1e-3  # peak lr: AdamW's usual value for small models
    weight_decay: float = 0.0  # off by default: the small models under-fit rather than over-fit
    warmup_steps: int = 500  # linear warm-up keeps Adam's early, noisy steps small
    clip_norm: float | None = 1.0  # clip the gradient's global L2 norm; None = no clipping
    eval_every: int = 500  # held-out evaluation cadence: often enough to see a curve, cheap enough
    save_every: int = 1000  # checkpoint cadence: at most this many steps are lost to a crash
    log_every: int = 10  # metrics-log cadence: a smooth training curve, a few lines per minute
    seed: int = 0  # seed of the data generator (batches); the caller seeds the model's init
    amp: bool | None = None  # mixed precision; None = on for CUDA (bf16, else fp16), off elsewhere


@dataclass
class TrainResult:
    steps: int  # steps done in all (those of the run this one resumed included)
    valid_nll_per_unit: float | None  # last held-out NLL in nats per unit; None without held-out data
    wall_seconds: float  # training time in all, resumed runs included
    interrupted: bool  # stopped by SIGINT/SIGTERM before `options.steps`
    history: list[dict] = field(default_factory=list)  # per evaluation: step, train_nll, valid_nll (nats/unit)
    losses: list[float] = field(default_factory=list)  # the objective of each step this call took
    start_step: int = 0  # the step this call started from (0, or the resumed state's step)


def learning_rate_at(step: int, options: TrainOptions) -> float:
    """The learning rate of the update made at `step` (0-based), for peak lr η, W warm-up steps and
    N steps in all:

        step < W:  η * (step + 1) / W
        else:      η * (0.1 + 0.9 * (1 + cos(π * p)) / 2),   p = min(1, (step - W) / max(1, N - W))

    a linear warm-up to η, then a cosine decay that reaches 10% of η at step N.
    """
    peak, warmup = options.learning_rate, options.warmup_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, options.steps - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def describe_hardware(device: torch.device | str) -> str:
    """One line for a checkpoint's provenance, e.g. 'cpu (2 cores), torch 2.13.0'."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = f"cpu ({os.cpu_count()} cores)"
    else:
        name = device.type
    return f"{name}, torch {torch.__version__}"


# -------------------------------------------------------------------------------------------------
# the loop


def _log_to_stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # above the progress bar, not through it


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], LossOutput],
    data: TrainData,
    options: TrainOptions,
    *,
    unit: str,
    save: Callable[[dict], None],
    state_path: str | os.PathLike,
    device: torch.device | str,
    resume_path: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = _log_to_stderr,
    world: World = SINGLE,
    metrics_path: str | os.PathLike | None = None,
    tensorboard: Any = None,
    state_info: dict | None = None,
) -> TrainResult:
    """Train `model` for `options.steps` AdamW steps; returns what happened.

    Each step draws `data.sample_batch(batch_size, generator)` from a CPU `torch.Generator` seeded
    with `options.seed`, keeps this process's rows of it (all of them in a single process; see
    `arcli.distributed` for data-parallel training under torchrun), moves its tensors to `device`
    (tensors, and tensors inside tuples, lists and dicts), and minimises `loss_fn(model,
    batch).objective` with the learning rate of `learning_rate_at` and the gradient's norm clipped
    to `options.clip_norm`.

    Every `eval_every` steps, every `save_every` steps and at the end, the held-out NLL (sum of
    `nll` / sum of `count` over all of `data.valid_batches`, in eval mode without gradients) is
    logged in `unit` ("bits/sample", "bits/dim" or "nats/token"). Every `save_every` steps and at
    the end, `save(metrics)` is called to write the model checkpoint, with metrics
    {"step", "wall_seconds", "valid_nll" (nats/unit), "valid_<unit>", ["valid_perplexity"]}
    (no "valid_*" keys when there is no held-out data), then the training state goes to
    `state_path` (with `state_info`, the caller's own JSON, in its extra state). `resume_path`
    continues from such a state. With `metrics_path`, a JSON-lines metrics log is written there
    every `log_every` steps and at each evaluation (`arcli.metrics_log`), its numbers also going to
    a TensorBoard `tensorboard` writer when one is given. Only rank 0 of `world` saves, logs and
    shows progress.

    SIGINT (Ctrl-C) or SIGTERM stops training after the current step (every process at the same
    step: the request travels with the step's statistics), evaluates, saves both files and returns
    with `interrupted=True`; a second signal raises KeyboardInterrupt at once. The previous signal
    handlers are restored on return.
    """
    _check_options(options)
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    device, state_path = torch.device(device), Path(state_path)
    if world.main and not state_path.parent.is_dir():
        raise ArcliError(f"cannot write the training state '{state_path}': directory '{state_path.parent}' does not exist")
    check_batch(world, options.batch_size)
    if not world.main:
        progress, log = False, _silent
    amp_dtype = _amp_dtype(options.amp, device)
    model.to(device)
    optimizer = _make_optimizer(model, options)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)  # bf16 needs no scaling
    generator = torch.Generator().manual_seed(options.seed)

    step, history, earlier_seconds, step_seconds = 0, [], 0.0, 0.0
    if resume_path is not None:
        step, history, earlier_seconds, step_seconds = _resume(Path(resume_path), model, optimizer, scaler, generator, options, log, world)
    if world.rank > 0:
        # Every rank starts from the same weights; dropout draws its own masks on each rank.
        torch.manual_seed((options.seed + 1) * 1_000_003 + step * 7_919 + world.rank)
    net = wrap(model, world, device)
    metrics_log = MetricsLog(metrics_path, resume_step=step if resume_path is not None else None, tensorboard=tensorboard) \
        if metrics_path is not None and world.main else None
    start_step = step
    valid_nll = history[-1]["valid_nll"] if history else None
    losses: list[float] = []
    recent: deque[tuple[float, float]] = deque(maxlen=100)  # (nll, count) of the last steps, for the bar
    since_eval = [0.0, 0.0]  # training nll and count since the last evaluation
    since_log = [0.0, 0.0, 0.0]  # objective x count, nll and count since the last metrics line
    saved_step: int | None = None
    started = time.perf_counter()

    bar = tqdm(total=options.steps, initial=step, desc="train", unit="step", file=sys.stderr,
               dynamic_ncols=True, disable=not progress)
    try:
        with _StopOnSignal() as stop:
            while step < options.steps:
                lr = learning_rate_at(step, options)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_started = time.perf_counter()
                batch = _to_device(shard(data.sample_batch(options.batch_size, generator), world, options.batch_size), device)
                try:
                    objective, nll, count, stop_votes = _train_step(
                        net, loss_fn, batch, optimizer, scaler, options.clip_norm, device, amp_dtype, step, world, stop.requested is not None
                    )
                except RuntimeError as error:  # DDP's all-reduce inside backward meets a vanished process
                    if world.parallel and is_peer_failure(error):
                        raise lost_peer(error) from None
                    raise
                step += 1
                step_seconds += time.perf_counter() - step_started
                losses.append(objective)
                recent.append((nll, count))
                since_eval = [since_eval[0] + nll, since_eval[1] + count]
                since_log = [since_log[0] + objective * count, since_log[1] + nll, since_log[2] + count]
                bar.update(1)
                bar.set_postfix_str(
                    "loss " + format_nll(sum(n for n, _ in recent) / sum(c for _, c in recent), unit), refresh=False
                )

                # Held-out evaluation can take minutes: only every eval_every steps and at the end,
                # not at every save, nor on an interruption (which should stop promptly).
                stopping = stop_votes > 0 if world.parallel else stop.requested is not None
                saving = stopping or step == options.steps or step % options.save_every == 0
                seconds = earlier_seconds + time.perf_counter() - started
                if metrics_log is not None and (step % options.log_every == 0 or saving):
                    metrics_log.write({"kind": "train", "step": step, **_train_record(since_log, unit), "lr": lr,
                                       "wall_seconds": round(seconds, 3)})
                    since_log = [0.0, 0.0, 0.0]
                if step == options.steps or step % options.eval_every == 0:
                    with _rng_unchanged(device):
                        valid_nll = _evaluate(model, loss_fn, data, options.batch_size, device, amp_dtype, progress, world)
                        scores = _extra_scores(model, data) if world.main else {}
                    train_nll = since_eval[0] / since_eval[1] if since_eval[1] else None
                    since_eval = [0.0, 0.0]
                    history.append({"step": step, "train_nll": train_nll, "valid_nll": valid_nll, **scores})
                    log(_eval_line(step, options.steps, train_nll, valid_nll, unit) + "".join(f", valid {k} {v}" for k, v in scores.items()))
                    if metrics_log is not None and (valid_nll is not None or scores):
                        figures = {} if valid_nll is None else {"valid_nll": valid_nll, **{f"valid_{k}": v for k, v in nll_metrics(valid_nll, unit).items()}}
                        metrics_log.write({"kind": "valid", "step": step, **figures, **{f"valid_{k}": v for k, v in scores.items()},
                                           "wall_seconds": round(earlier_seconds + time.perf_counter() - started, 3)})
                if saving and world.main:
                    seconds = earlier_seconds + time.perf_counter() - started
                    # step_seconds: the optimisation steps alone (batches, forward, backward, update), without
                    # held-out evaluation and saving; steps / step_seconds is the training throughput.
                    metrics: dict[str, Any] = {"step": step, "wall_seconds": round(seconds, 1), "step_seconds": round(step_seconds, 2)}
                    if valid_nll is not None:
                        metrics["valid_step"] = history[-1]["step"]  # when valid_nll was measured
                        metrics["valid_nll"] = valid_nll
                        metrics.update({f"valid_{k}": v for k, v in nll_metrics(valid_nll, unit).items()})
                        metrics.update({f"valid_{k}": v for k, v in history[-1].items() if k not in ("step", "train_nll", "valid_nll")})
                    with _rng_unchanged(device):
                        save(metrics)
                    extra = {
                        **(state_info or {}),
                        "history": history, "wall_seconds": seconds, "step_seconds": step_seconds, "unit": unit,
                        "options": dataclasses.asdict(options), "world_size": world.size,
                        "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    }
                    save_training_state(state_path, model_state=model.state_dict(), optimizer=optimizer,
                                        step=step, generators={"data": generator}, extra=extra)
                    saved_step = step
                if stopping and step < options.steps:
                    log(f"interrupted at step {step}; resume with --resume {state_path}")
                    break
    except PeerLost as error:
        where = f"the checkpoint of step {saved_step} is intact" if saved_step is not None else "no checkpoint was saved in this run"
        raise PeerLost(f"{error}; {where}: resume with --resume {state_path}" if saved_step is not None or resume_path
                       else f"{error}; {where}") from None
    finally:
        bar.close()
        if metrics_log is not None:
            metrics_log.close()
    return TrainResult(
        steps=step, valid_nll_per_unit=valid_nll, wall_seconds=earlier_seconds + time.perf_counter() - started,
        interrupted=step < options.steps, history=history, losses=losses, start_step=start_step,
    )


def _silent(message: str) -> None:
    """The log of ranks other than 0: rank 0 speaks for all."""


def _train_record(since_log: list[float], unit: str) -> dict[str, float]:
    objective_sum, nll, count = since_log
    if not count:
        return {}
    return {"loss": objective_sum / count, "train_nll": nll / count,
            **{f"train_{k}": v for k, v in nll_metrics(nll / count, unit).items() if k != "perplexity"}}


def _train_step(net, loss_fn, batch, optimizer, scaler, clip_norm, device, amp_dtype, step, world, stop_requested):
    """One update; returns (objective, nll, count, stop votes) of the whole batch, over every rank.

    The objective is the mean per unit of the whole batch: each rank weighs its own mean by its share
    of the batch's units (see `arcli.distributed`), and one reduction carries those sums and the
    processes' stop requests, so that every rank takes the same decisions at the same step."""
    net.train()
    with _autocast(device, amp_dtype):
        out = loss_fn(net, batch)
    if not isinstance(out, LossOutput):
        raise TypeError(f"loss_fn must return a LossOutput, got {type(out).__name__}")
    own_objective, own_count = float(out.objective.detach()), int(out.count)
    objective_sum, nll, count, stop_votes = sum_over_ranks(
        [own_objective * own_count, float(out.nll), own_count, 1.0 if stop_requested else 0.0], world, device
    )
    if count <= 0:
        raise ValueError(f"loss_fn counted {int(count)} units in a training batch; a batch must predict at least one")
    objective = objective_sum / count if world.parallel else own_objective
    if not math.isfinite(objective) or not math.isfinite(nll):
        raise ArcliError(
            f"training diverged at step {step + 1} (the loss is {objective}); lower the learning rate "
            "or resume from the last saved training state"
        )
    loss = out.objective
    if world.parallel:  # DDP averages over ranks: weigh this rank's mean by its share of the units
        loss = loss * (own_count * world.size / count)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_norm is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(net.parameters(), clip_norm)
    scaler.step(optimizer)  # skipped by the fp16 scaler when the gradient overflowed
    scaler.update()
    return objective, nll, count, stop_votes


def _evaluate(model, loss_fn, data, batch_size, device, amp_dtype, progress, world=SINGLE) -> float | None:
    """Held-out NLL in nats per unit: sum of nll over sum of count, over every held-out batch (each
    rank scores every N-th batch, and the sums are added over the ranks)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad(), _autocast(device, amp_dtype):
            batches = tqdm(data.valid_batches(batch_size), desc="valid", unit="batch", file=sys.stderr,
                           leave=False, dynamic_ncols=True, disable=not progress)
            for index, batch in enumerate(batches):
                if index % world.size != world.rank:
                    continue
                out = loss_fn(model, _to_device(batch, device))
                total += float(out.nll)
                count += int(out.count)
    finally:
        model.train(was_training)
    total, count = sum_over_ranks([total, count], world, device)
    return total / count if count else None


def _extra_scores(model, data) -> dict[str, float]:
    """Held-out scores beyond the likelihood, from `data.evaluate(model)` when the data has it
    (translation: BLEU of greedy translations)."""
    evaluate = getattr(data, "evaluate", None)
    if evaluate is None:
        return {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return dict(evaluate(model))
    finally:
        model.train(was_training)


def _eval_line(step, steps, train_nll, valid_nll, unit) -> str:
    train = format_nll(train_nll, unit) if train_nll is not None else "-"
    valid = format_nll(valid_nll, unit) if valid_nll is not None else "- (no held-out data)"
    return f"step {step}/{steps}: train {train}, valid {valid}"


def _resume(path: Path, model, optimizer, scaler, generator, options: TrainOptions, log, world: World):
    state = load_training_state(path, optimizer)
    try:
        model.load_state_dict(state.model_state)
    except RuntimeError as e:
        raise CheckpointError(
            f"'{path}' does not fit this model ({str(e).splitlines()[0]}); "
            "resume with the same model options the training started with"
        ) from None
    state.restore_rng({"data": generator})
    if state.extra.get("grad_scaler") and scaler.is_enabled():
        scaler.load_state_dict(state.extra["grad_scaler"])
    if state.step >= options.steps:
        raise OptionError(
            f"the training state '{path}' is already at step {state.step}; ask for more steps than that to train further"
        )
    before = state.extra.get("options", {})
    changed = [f"{k} {before[k]} -> {v}" for k, v in dataclasses.asdict(options).items()
               if k in before and before[k] != v and k not in ("eval_every", "save_every", "log_every")]
    if changed:
        log(f"note: resuming with other options ({', '.join(changed)}); the run will differ from an uninterrupted one")
    processes = int(state.extra.get("world_size", 1))
    if processes != world.size:
        # Every rank draws the whole batch from the one data generator and keeps its rows: the batches
        # do not depend on the number of processes. What does is how each rank's dropout is drawn.
        log(f"note: resuming with {_processes(world.size)} where the state was written by {_processes(processes)}: the same "
            "batches, each process keeping batch-size / processes rows of each; dropout masks (if any) are drawn differently "
            "and sums are added in another order, so the run will differ slightly from an uninterrupted one")
    log(f"resuming from '{path}' at step {state.step}")
    extra = state.extra
    return state.step, list(extra.get("history", [])), float(extra.get("wall_seconds", 0.0)), float(extra.get("step_seconds", 0.0))


def _processes(count: int) -> str:
    return "1 process" if count == 1 else f"{count} processes"


def _make_optimizer(model: nn.Module, options: TrainOptions) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and kernels only (dim >= 2), not on biases and gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": options.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=options.learning_rate)


def _check_options(options: TrainOptions) -> None:
    whole = (("steps", 1), ("batch_size", 1), ("warmup_steps", 0), ("eval_every", 1), ("save_every", 1), ("log_every", 1), ("seed", 0))
    for name, low in whole:
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise OptionError(f"{name.replace('_', ' ')} must be a whole number >= {low}, got {value!r}")
    if not math.isfinite(options.learning_rate) or options.learning_rate <= 0:
        raise OptionError(f"learning rate must be a positive number, got {options.learning_rate!r}")
    if not math.isfinite(options.weight_decay) or options.weight_decay < 0:
        raise OptionError(f"weight decay must be a number >= 0, got {options.weight_decay!r}")
    if options.clip_norm is not None and not (math.isfinite(options.clip_norm) and options.clip_norm > 0):
        raise OptionError(f"clip norm must be a positive number (or off), got {options.clip_norm!r}")


def _amp_dtype(amp: bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type != "cuda":
        raise OptionError(f"mixed precision needs a CUDA device; turn it off on {device.type}")
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _rng_unchanged(device: torch.device):
    """Fork the global (and CUDA) RNG, so evaluation and saving leave the training's streams as they were."""
    if device.type == "cuda":
        return torch.random.fork_rng(devices=[device], device_type="cuda")
    return torch.random.fork_rng(devices=[])  # the CPU generator is always forked


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class _StopOnSignal:
    """While active, SIGINT and SIGTERM only set `requested` (the signal number): the loop stops
    at a safe point. A second signal raises KeyboardInterrupt. Outside the main thread (where
    Python cannot install handlers) nothing is installed."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum  # no logging here: a handler must not write to a stream mid-write

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
