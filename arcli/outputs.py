"""Writing results: stdout for '-', otherwise atomically, and never over a file by surprise."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tqdm import tqdm

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
    """A temporary path beside `path` for the caller to write; when the block succeeds the data is
    flushed to disk and renamed onto `path` (atomic on POSIX and Windows), on any exception the
    temporary file is deleted and `path` is left as it was. The file gets the usual permissions
    (0666 less the umask), whatever the writer used."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ArcliError(f"cannot write '{path}': folder '{path.parent}' does not exist")
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield temp
        if not temp.exists():
            raise RuntimeError(f"nothing was written to the temporary file of '{path}'")
        with open(temp, "rb") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def write_bytes(path: str | Path, data: bytes) -> None:
    """`data` to stdout for "-", else to `path` through a temp file and a rename."""
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        with atomic_path(path) as temporary:
            temporary.write_bytes(data)
    except OSError as error:
        raise ArcliError(f"cannot write '{path}': {error.strerror or error}") from None


def note(message: str) -> None:
    """A line on stderr that does not tear a progress bar that may be on screen."""
    tqdm.write(message, file=sys.stderr)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the hidden temporary files that `atomic_path` left beside `path` when its process was
    killed mid-write (SIGKILL gives no chance to clean up); returns those deleted. Call it before
    writing `path` again, from the one process that writes it."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        token = temp.name[len(path.name) + 2 : -len(".tmp")]
        if len(token) == 12 and all(c in "0123456789abcdef" for c in token):  # secrets.token_hex(6)
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed
