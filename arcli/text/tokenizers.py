"""Tokenizers stored inside checkpoints as JSON.

- `ByteTokenizer`: UTF-8 bytes, nothing to train, nothing unknown.
- `SubwordTokenizer`: byte-level BPE from the `tokenizers` library, trained by `arcli train` on the
  training text and stored whole (its own JSON) in the checkpoint, so a checkpoint is all a user
  needs. Byte-level: every string encodes, and decoding gives the text back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from arcli.errors import CheckpointError

PAD, EOS = "<pad>", "</s>"


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, and 256 for end-of-sequence: no training, no unknowns."""

    vocab_size = 257
    eos_id = 256
    pad_id = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        return {"type": "bytes"}


class SubwordTokenizer:
    """Byte-level BPE (`tokenizers`): id 0 is padding, id 1 ends a sequence."""

    pad_id = 0
    eos_id = 1

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        if tokenizer.token_to_id(PAD) != self.pad_id or tokenizer.token_to_id(EOS) != self.eos_id:
            raise CheckpointError(f"the subword tokenizer must have {PAD} = 0 and {EOS} = 1")

    @classmethod
    def train(cls, lines: Iterable[str], vocab_size: int) -> SubwordTokenizer:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tokenizer.train_from_iterator(lines, trainer=trainer)
        return cls(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([i for i in ids if i > self.eos_id], skip_special_tokens=True).strip()

    def to_json(self) -> dict:
        return {"type": "bpe", "tokenizer": json.loads(self._tok.to_str())}


def tokenizer_from_json(meta: dict | None) -> ByteTokenizer | SubwordTokenizer:
    kind = (meta or {}).get("type")
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "bpe":
        from tokenizers import Tokenizer

        try:
            return SubwordTokenizer(Tokenizer.from_str(json.dumps(meta["tokenizer"])))
        except (KeyError, Exception) as error:  # the library raises plain Exceptions on bad JSON
            raise CheckpointError(f"the checkpoint's subword tokenizer cannot be read: {error}") from None
    raise CheckpointError(f"the checkpoint's tokenizer {kind!r} is not known to this arcli version")
