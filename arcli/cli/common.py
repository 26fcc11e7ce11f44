"""What every subcommand does the same way: errors, devices, loading models, progress bars."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import typer
from tqdm import tqdm

from arcli.errors import ArcliError, OptionError
from arcli.registry import get_family
from arcli.tasks import Loaded


def user_errors(command: Callable) -> Callable:
    """Turn an ArcliError into one line on stderr and exit code 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ArcliError as error:
            typer.echo(f"arcli: error: {error}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("arcli: interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:  # e.g. `arcli ... | head`: the reader left, nothing to report
            sys.stderr.close()
            raise typer.Exit(0) from None

    return wrapper


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ArcliError("--device cuda: no CUDA device is available here (try --device cpu)")
    if choice == "mps" and not torch.backends.mps.is_available():
        raise ArcliError("--device mps: no Apple MPS device is available here (try --device cpu)")
    return torch.device(choice)


def load(model_name: str, checkpoint: Path | None, device: str, threads: int | None = None, stepwise: bool = False) -> Loaded:
    """The model on its device. `stepwise`: generation one small step at a time, where one CPU
    thread is fastest (measured: a busy 2-core machine ran WaveNet steps 40x slower on 2 threads)."""
    family = get_family(model_name)
    where = resolve_device(device)
    if threads is not None:
        if threads < 1:
            raise OptionError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    elif stepwise and where.type == "cpu":
        torch.set_num_threads(1)
    model, stored = family.load(checkpoint, where)
    return Loaded(family, model, stored, where)


def progress_bar(unit: str, quiet: bool, **extra) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar on stderr driven by the engine's progress callback (done, total)."""
    bars: list[tqdm] = []  # made at the first update, so that an early error prints no empty bar
    if quiet:
        return (lambda done, total: None), (lambda: None)

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit=unit, unit_scale=True, dynamic_ncols=True, file=sys.stderr, leave=False, **extra))
        bar = bars[0]
        if bar.total != total:
            bar.total = total
        elif done - bar.n < total // 1000 and done < total:
            return  # at most ~1000 redraws: a WaveNet step is cheaper than a tqdm update
        bar.update(done - bar.n)

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close
