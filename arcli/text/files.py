"""Reading text, one sentence per line, with clear errors: UTF-8 for subword models, any bytes for
byte-level ones."""

from __future__ import annotations

import sys
from pathlib import Path

from arcli.errors import DataError


def read_bytes(path: Path) -> bytes:
    """The whole file; '-' reads stdin."""
    try:
        return sys.stdin.buffer.read() if str(path) == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"'{path}' does not exist") from None
    except IsADirectoryError:
        raise DataError(f"'{path}' is a folder, not a text file") from None
    except OSError as error:
        raise DataError(f"cannot read '{path}': {error.strerror}") from None


def split_lines(raw: bytes) -> list[bytes]:
    """Lines without the b'\\n' that ends each (the newline after the last line starts no other)."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def decode_utf8(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"'{path}' is not UTF-8 text (invalid bytes on line {line})") from None


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, without line endings; '-' reads stdin."""
    text = decode_utf8(read_bytes(path), path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another one
    return [line.rstrip("\r") for line in lines]


def read_byte_lines(path: Path) -> list[bytes]:
    """The lines of any file as raw bytes (a byte-level model takes any bytes); '-' reads stdin."""
    return split_lines(read_bytes(path))
