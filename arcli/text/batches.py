"""Batches of token sequences."""

from __future__ import annotations

import torch


def pad(sequences: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B, T) right-padded with `pad_id`, lengths (B,))."""
    lengths = torch.tensor([len(s) for s in sequences])
    tokens = torch.full((len(sequences), max(1, int(lengths.max()))), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return tokens, lengths
