"""Writing results: stdout for '-', otherwise atomically, and never over a file by surprise."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from arcli.errors import ArcliError


def check_new(path: str | Path, force: bool) -> None:
    """Refuse to overwrite an existing file unless `force`; refuse a missing parent folder."""
    if str(path) == "-":
        return
    path = Path(path)
    if path.is_dir():
        raise ArcliError(f"output '{path}' is a folder: give a file name")
    if path.exists() and not force:
        raise ArcliError(f"output '{path}' already exists: pass --force to overwrite it")
    if not path.parent.is_dir():
        raise ArcliError(f"cannot write '{path}': folder '{path.parent}' does not exist")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path`; renamed onto it only if the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def open_output(path: str | Path, binary: bool = False) -> Iterator[IO]:
    """stdout for '-', else a file that appears only once everything is written."""
    if str(path) == "-":
        stream = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
        yield f
