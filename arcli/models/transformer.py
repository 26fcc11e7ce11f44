"""Transformer: an encoder-decoder for translation and a decoder-only language model.

Both follow "Attention Is All You Need": scaled dot-product multi-head attention, a causal mask in
the decoder, sinusoidal positions added to sqrt(d)-scaled embeddings, residual connections with
layer norm (applied before each sub-layer, the pre-norm arrangement that trains more stably at
small sizes, with a final norm), position-wise feed-forward layers. Embeddings are shared between
source, target and the output projection (one joint subword vocabulary).

The decoder reads its own previous tokens with an implicit start: position 0 sees `eos_id` (as in
fairseq), so `forward(tokens)[:, t]` is the distribution of `tokens[:, t]` given `tokens[:, :t]`.
Incremental decoding keeps, per layer, the keys and values of every earlier position (the KV cache)
and, for the encoder-decoder, the cross-attention keys/values of the source, computed once in
`start`.

The source of the encoder-decoder is a `Source(tokens, lengths)`: right-padded token ids (B, S) and
the true lengths (B,); padded positions are masked out of every attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    vocab_size: int = 8000  # set from the trained tokenizer
    d_model: int = 256
    heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 3
    ff_dim: int = 1024
    dropout: float = 0.1
    label_smoothing: float = 0.1  # training objective only; scores are plain log-likelihoods
    pad_id: int = 0
    eos_id: int = 1

    def __post_init__(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        for name in ("vocab_size", "d_model", "heads", "decoder_layers", "ff_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.encoder_layers < 0:
            raise ValueError(f"encoder_layers must be >= 0, got {self.encoder_layers}")
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("dropout and label_smoothing must be in [0, 1)")


@dataclass
class TransformerLMConfig(TransformerConfig):
    """The decoder-only language model: no encoder, no cross-attention."""

    vocab_size: int = 4000
    encoder_layers: int = 0
    decoder_layers: int = 4
    tokenizer: str = "bpe"  # "bpe" (trained on the data, vocab_size entries) or "bytes" (UTF-8, lossless on any text)

    def __post_init__(self):
        super().__post_init__()
        if self.tokenizer not in ("bytes", "bpe"):
            raise ValueError(f"tokenizer must be 'bytes' or 'bpe', got {self.tokenizer!r}")


class Source(NamedTuple):
    tokens: torch.Tensor  # (B, S) token ids, right-padded
    lengths: torch.Tensor  # (B,)


def sinusoids(length: int, dim: int, device=None, offset: int = 0) -> torch.Tensor:
    """(length, dim) sinusoidal position encodings of positions offset .. offset+length-1."""
    position = torch.arange(offset, offset + length, device=device, dtype=torch.float32).unsqueeze(1)
    rate = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return table


class Attention(nn.Module):
    """Multi-head scaled dot-product attention; `kv` projects keys and values in one matmul."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, H, T, D/H)
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def weights(self, x: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention probabilities (B, H, T, S) of x (B, T, D) over keys k (B, H, S, D/H), as `attend` uses them."""
        q = self.split(self.q(x))  # (B, H, T, D/H)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores.float(), dim=-1)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """x (B, T, D) attends to k, v (B, H, S, D/H); mask (B, 1, T or 1, S) True = may attend."""
        q = self.split(self.q(x))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal and mask is None)
        b, h, t, e = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * e))


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ff_dim: int, dropout: float):
        super().__init__(nn.Linear(d_model, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))


class EncoderLayer(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(c.d_model), Attention(c.d_model, c.heads, c.dropout)
        self.norm2, self.ff = nn.LayerNorm(c.d_model), FeedForward(c.d_model, c.ff_dim, c.dropout)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn.attend(h, *self.attn.keys_values(h), mask=mask))
        return x + self.drop(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, c: TransformerConfig, cross: bool):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(c.d_model), Attention(c.d_model, c.heads, c.dropout)
        self.cross = Attention(c.d_model, c.heads, c.dropout) if cross else None
        self.norm_cross = nn.LayerNorm(c.d_model) if cross else None
        self.norm2, self.ff = nn.LayerNorm(c.d_model), FeedForward(c.d_model, c.ff_dim, c.dropout)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, memory_kv=None, memory_mask=None, past=None):
        """x (B, T, D) -> (x, (keys, values) of every position so far). Without `past` the layer sees
        all of x under a causal mask (training, scoring); with `past` (the cached keys/values of the
        earlier positions) x is the next position alone (incremental decoding)."""
        h = self.norm1(x)
        k, v = self.attn.keys_values(h)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        x = x + self.drop(self.attn.attend(h, k, v, causal=past is None))
        if self.cross is not None:
            x = x + self.drop(self.cross.attend(self.norm_cross(x), *memory_kv, mask=memory_mask))
        return x + self.drop(self.ff(self.norm2(x))), (k, v)

    def cross_weights(self, x: torch.Tensor, memory_kv, memory_mask) -> torch.Tensor:
        """(B, H, T, S): what each position of x (the layer's input, all of it, causal) attends to in the source."""
        h = self.norm1(x)
        x = x + self.attn.attend(h, *self.attn.keys_values(h), causal=True)
        return self.cross.weights(self.norm_cross(x), memory_kv[0], memory_mask)


class Transformer(nn.Module):
    """Encoder-decoder (encoder_layers > 0) or decoder-only (encoder_layers == 0) Transformer."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c = self.config = config
        self.vocab_size, self.eos_id, self.pad_id = c.vocab_size, c.eos_id, c.pad_id
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        nn.init.normal_(self.embed.weight, std=c.d_model**-0.5)
        self.encoder = nn.ModuleList(EncoderLayer(c) for _ in range(c.encoder_layers))
        self.encoder_norm = nn.LayerNorm(c.d_model) if c.encoder_layers else None
        self.decoder = nn.ModuleList(DecoderLayer(c, cross=c.encoder_layers > 0) for _ in range(c.decoder_layers))
        self.decoder_norm = nn.LayerNorm(c.d_model)
        self.drop = nn.Dropout(c.dropout)

    @property
    def is_seq2seq(self) -> bool:
        return self.encoder_norm is not None

    def _embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = self.embed(tokens) * math.sqrt(self.config.d_model)
        return self.drop(x + sinusoids(tokens.shape[1], self.config.d_model, tokens.device, offset).to(x.dtype))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.decoder_norm(x), self.embed.weight)

    def encode(self, source: Source) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (B, S, D) and its key mask (B, 1, 1, S) (True = a real token)."""
        tokens, lengths = source
        mask = (torch.arange(tokens.shape[1], device=tokens.device) < lengths.to(tokens.device).unsqueeze(1))[:, None, None, :]
        x = self._embed(tokens)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.encoder_norm(x), mask

    def _check_condition(self, condition) -> Source | None:
        if self.is_seq2seq and condition is None:
            raise ValueError("this encoder-decoder Transformer needs a Source(tokens, lengths) condition")
        if not self.is_seq2seq and condition is not None:
            raise ValueError("a decoder-only Transformer takes no condition")
        return condition

    def forward(self, tokens: torch.Tensor, condition: Source | None = None) -> torch.Tensor:
        """Logits (B, T, V): [:, t] is the distribution of tokens[:, t] given tokens[:, :t] (and the source)."""
        source = self._check_condition(condition)
        inputs = torch.cat([torch.full_like(tokens[:, :1], self.eos_id), tokens[:, :-1]], dim=1)
        memory, memory_mask = self.encode(source) if source is not None else (None, None)
        x = self._embed(inputs)
        for layer in self.decoder:
            memory_kv = layer.cross.keys_values(memory) if layer.cross is not None else None
            x, _ = layer(x, memory_kv, memory_mask)
        return self._logits(x)

    def cross_attention(self, tokens: torch.Tensor, condition: Source) -> torch.Tensor:
        """(B, T, S): how much the prediction of tokens[:, t] attends to each source position, the
        heads of the last decoder layer averaged (fairseq's alignment layer); the rows sum to 1."""
        if not self.is_seq2seq:
            raise ValueError("a decoder-only Transformer has no cross-attention")
        inputs = torch.cat([torch.full_like(tokens[:, :1], self.eos_id), tokens[:, :-1]], dim=1)
        memory, memory_mask = self.encode(condition)
        x = self._embed(inputs)
        for layer in self.decoder[:-1]:
            x, _ = layer(x, layer.cross.keys_values(memory), memory_mask)
        last = self.decoder[-1]
        return last.cross_weights(x, last.cross.keys_values(memory), memory_mask).mean(dim=1)

    # --- incremental decoding ---------------------------------------------------------------

    def start(self, batch_size: int, condition: Source | None = None) -> dict:
        source = self._check_condition(condition)
        c, device = self.config, self.embed.weight.device
        empty = torch.zeros(batch_size, c.heads, 0, c.d_model // c.heads, device=device, dtype=self.embed.weight.dtype)
        state: dict = {"t": 0, "self": [(empty, empty)] * len(self.decoder), "batch": batch_size}
        if source is not None:
            if source.tokens.shape[0] != batch_size:
                raise ValueError(f"the source has {source.tokens.shape[0]} rows, not batch_size {batch_size}")
            memory, mask = self.encode(Source(source.tokens.to(device), source.lengths.to(device)))
            state["cross"] = [layer.cross.keys_values(memory) for layer in self.decoder]
            state["mask"] = mask
        return state

    def step(self, state: dict, tokens: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        t = state["t"]
        if tokens is None:
            if t:
                raise ValueError("step(state, None) is only for the first step")
            tokens = torch.full((state["batch"],), self.eos_id, dtype=torch.long, device=self.embed.weight.device)
        x = self._embed(tokens.view(-1, 1).to(self.embed.weight.device), offset=t)
        caches = []
        for i, layer in enumerate(self.decoder):
            memory_kv = state["cross"][i] if layer.cross is not None else None
            x, kv = layer(x, memory_kv, state.get("mask"), past=state["self"][i])
            caches.append(kv)
        new = {**state, "t": t + 1, "self": caches, "batch": x.shape[0]}
        return self._logits(x[:, 0]), new

    def reorder(self, state: dict, index: torch.Tensor) -> dict:
        index = index.to(self.embed.weight.device)
        pick = lambda pair: (pair[0].index_select(0, index), pair[1].index_select(0, index))  # noqa: E731
        new = {**state, "self": [pick(p) for p in state["self"]], "batch": index.numel()}
        if "cross" in state:
            new["cross"] = [pick(p) for p in state["cross"]]
            new["mask"] = state["mask"].index_select(0, index)
        return new
