"""Word alignment from attention: which source word each target word was translated from.

A subword translator attends over source tokens while it predicts target tokens; each target
token is aligned to the source token it attends to most (the "attention argmax" of fairseq's
`--print-alignment` and Marian's `--alignment hard`), and token pairs become word pairs. The result
is written the Pharaoh way: "i-j" pairs, source word i and target word j counted from 0.
"""

from __future__ import annotations

import torch


def token_words(tokenizer, tokens: list[int]) -> list[int | None]:
    """The index of the whitespace-separated word each token belongs to in `tokenizer.decode(tokens)`
    (None for a token that holds only whitespace, or none of the text)."""
    words: list[int | None] = []
    for k in range(len(tokens)):
        piece = tokenizer.decode(tokens[k : k + 1])
        count = len(tokenizer.decode(tokens[: k + 1]).split())
        words.append(count - 1 if piece.strip() and count else None)
    return words


def align(attention: torch.Tensor, source_words: list[int | None], target_words: list[int | None]) -> list[tuple[int, int]]:
    """Pharaoh pairs (source word, target word) from `attention` (T, S) of target tokens over source
    tokens: each target token that is part of a word goes with the source word of the token it
    attends to most, among source tokens that are part of a word. Sorted by target, then source."""
    usable = torch.tensor([w is not None for w in source_words], dtype=torch.bool)
    pairs = set()
    if not bool(usable.any()):
        return []
    scores = attention[: len(target_words), : len(source_words)].float().masked_fill(~usable, -1.0)
    best = scores.argmax(dim=-1).tolist()
    for t, j in enumerate(target_words):
        if j is not None:
            pairs.add((source_words[best[t]], j))
    return sorted(pairs, key=lambda pair: (pair[1], pair[0]))


def pharaoh(pairs: list[tuple[int, int]]) -> str:
    return " ".join(f"{i}-{j}" for i, j in pairs)
