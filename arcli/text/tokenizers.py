"""Tokenizers stored inside checkpoints as JSON."""

from __future__ import annotations

from arcli.errors import CheckpointError


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, and 256 for end-of-sequence: no training, no unknowns."""

    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        return {"type": "bytes"}


def tokenizer_from_json(meta: dict | None) -> ByteTokenizer:
    kind = (meta or {}).get("type")
    if kind == "bytes":
        return ByteTokenizer()
    raise CheckpointError(f"the checkpoint's tokenizer {kind!r} is not known to this arcli version")
