"""Reading UTF-8 text, one sentence per line, with clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

from arcli.errors import DataError


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, without line endings; '-' reads stdin."""
    try:
        raw = sys.stdin.buffer.read() if str(path) == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"'{path}' does not exist") from None
    except IsADirectoryError:
        raise DataError(f"'{path}' is a folder, not a text file") from None
    except OSError as error:
        raise DataError(f"cannot read '{path}': {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"'{path}' is not UTF-8 text (invalid bytes on line {line})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another one
    return [line.rstrip("\r") for line in lines]
