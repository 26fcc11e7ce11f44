"""RNN encoder-decoder with additive attention, for translation.

The encoder is a bidirectional LSTM or GRU over the embedded source ("Neural Machine Translation by
Jointly Learning to Align and Translate", Bahdanau et al. 2015). It runs on packed sequences, so
right padding changes nothing, and its per-direction hidden size is `hidden`: the memory the
decoder attends to has 2 * hidden features per source position.

The decoder is an LSTM arranged as in Luong et al. 2015 ("Effective Approaches to Attention-based
Neural Machine Translation"), with Bahdanau's additive score:

    x_t     = [embed(y_{t-1}); o_{t-1}]                    input feeding of the last attentional output
    h_t     = LSTMCell(x_t, h_{t-1})
    e_ts    = v^T tanh(W_h h_t + W_s m_s)                 padded source positions get -inf
    c_t     = sum_s softmax(e_t)_s m_s                     the context
    o_t     = tanh(W_c [h_t; c_t])                         the attentional output (hidden features)
    logits  = E (P o_t) + b                                output weights tied to the embedding E

`W_s m_s` is computed once per source (in `forward`, or in `start` for incremental decoding). The
decoder's first state is a learned map of the encoder's final forward and backward states.

As in the Transformer, the decoder reads its own previous tokens with an implicit start: position 0
sees `eos_id`, so `forward(tokens)[:, t]` is the distribution of `tokens[:, t]` given
`tokens[:, :t]` and the source. `forward` (teacher forcing) and `step` run the same per-step
function `_recur`, so the two agree; the readout is position-wise and applied to all steps at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from arcli.models.transformer import Source

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class AdditiveAttention(nn.Module):
    """Bahdanau's score v^T tanh(W_h h + W_s m_s); the keys W_s m are precomputed by `keys`."""

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int):
        super().__init__()
        self.key = nn.Linear(memory_dim, attention_dim, bias=False)
        self.query = nn.Linear(query_dim, attention_dim)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key(memory)  # (B, S, A)

    def weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """softmax_s(e_ts) (B, S) for query (B, Q), keys (B, S, A), mask (B, S) True = real token."""
        scores = self.v(torch.tanh(keys + self.query(query).unsqueeze(1))).squeeze(-1)  # (B, S)
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Context (B, M) for query (B, Q), keys (B, S, A), memory (B, S, M), mask (B, S) True = real token."""
        weights = self.weights(query, keys, mask)
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, 1, S) @ (B, S, M) -> (B, M)


@dataclass
class RNNAttentionConfig:
    vocab_size: int = 8000  # set from the trained tokenizer (one joint source/target vocabulary)
    embed_dim: int = 256  # shared by source, target and (tied) output embeddings
    hidden: int = 256  # encoder size per direction (memory = 2 * hidden), decoder LSTM and attention size
    encoder_layers: int = 1  # bidirectional layers; one suits a corpus of tens of thousands of pairs
    cell: str = "lstm"  # encoder cell, "lstm" or "gru"; the decoder is always an LSTM
    dropout: float = 0.2  # on embeddings, between encoder layers and on the attentional output
    label_smoothing: float = 0.1  # training objective only; scores are plain log-likelihoods
    pad_id: int = 0
    eos_id: int = 1

    def __post_init__(self):
        for name in ("vocab_size", "embed_dim", "hidden", "encoder_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("dropout and label_smoothing must be in [0, 1)")
        for name in ("pad_id", "eos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name} {getattr(self, name)} is not a token id of a vocabulary of {self.vocab_size}")


class DecoderState(NamedTuple):
    """Incremental decoding state; every tensor has one row per hypothesis (dim 0)."""

    h: torch.Tensor  # (B, H) decoder LSTM hidden state
    c: torch.Tensor  # (B, H) decoder LSTM cell state
    feed: torch.Tensor  # (B, H) last attentional output o_{t-1}
    memory: torch.Tensor  # (B, S, 2H) encoder outputs
    keys: torch.Tensor  # (B, S, A) attention keys W_s memory
    mask: torch.Tensor  # (B, S) True = a real source token
    position: int  # steps taken


class RNNAttention(nn.Module):
    """Bidirectional RNN encoder, attentive LSTM decoder."""

    is_seq2seq = True

    def __init__(self, config: RNNAttentionConfig):
        super().__init__()
        c = self.config = config
        self.vocab_size, self.eos_id, self.pad_id = c.vocab_size, c.eos_id, c.pad_id
        memory_dim = 2 * c.hidden
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        nn.init.normal_(self.embed.weight, std=c.embed_dim**-0.5)  # logits are dot products with these rows
        self.encoder = CELLS[c.cell](
            c.embed_dim, c.hidden, num_layers=c.encoder_layers, bidirectional=True, batch_first=True,
            dropout=c.dropout if c.encoder_layers > 1 else 0.0,  # only acts between layers
        )
        self.bridge = nn.Linear(memory_dim, 2 * c.hidden)  # final encoder states -> decoder (h_0, c_0)
        self.decoder = nn.LSTMCell(c.embed_dim + c.hidden, c.hidden)
        self.attention = AdditiveAttention(c.hidden, memory_dim, c.hidden)
        self.combine = nn.Linear(c.hidden + memory_dim, c.hidden)  # W_c
        self.readout = nn.Linear(c.hidden, c.embed_dim, bias=False)  # P: to the tied embedding space
        self.out_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.drop = nn.Dropout(c.dropout)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def encode(self, source: Source) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Memory (B, S, 2H), its mask (B, S) (True = a real token), and the decoder's initial h, c (B, H)."""
        tokens, lengths = source.tokens.to(self.device), source.lengths.to("cpu", torch.long)  # packing wants CPU lengths
        if tokens.dim() != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError(f"source tokens {tuple(tokens.shape)} and lengths {tuple(lengths.shape)} must be (B, S) and (B,)")
        width = tokens.shape[1]
        if lengths.numel() and (lengths.min() < 1 or lengths.max() > width):
            raise ValueError(f"source lengths must be in [1, {width}], got {lengths.tolist()}")
        packed = pack_padded_sequence(self.drop(self.embed(tokens)), lengths, batch_first=True, enforce_sorted=False)
        outputs, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=width)  # (B, S, 2H), zeros past the end
        final_h = final[0] if isinstance(final, tuple) else final  # LSTM: (h_n, c_n); GRU: h_n (2 * layers, B, H)
        last = torch.cat([final_h[-2], final_h[-1]], dim=-1)  # top layer's forward and backward states (B, 2H)
        h0, c0 = self.bridge(last).chunk(2, dim=-1)
        mask = torch.arange(width, device=self.device) < lengths.to(self.device).unsqueeze(1)
        return memory, mask, torch.tanh(h0), c0

    def _recur(self, embedded: torch.Tensor, h, c, feed, memory, keys, mask, attention: list | None = None):
        """One decoder step from the embedded previous token (B, E): the new h, c and attentional output (B, H).
        `attention`: a list that collects the step's attention weights (B, S)."""
        h, c = self.decoder(torch.cat([embedded, feed], dim=-1), (h, c))
        weights = self.attention.weights(h, keys, mask)  # (B, S)
        if attention is not None:
            attention.append(weights)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, 1, S) @ (B, S, 2H) -> (B, 2H)
        output = self.drop(torch.tanh(self.combine(torch.cat([h, context], dim=-1))))
        return h, c, output

    def _logits(self, output: torch.Tensor) -> torch.Tensor:
        return F.linear(self.readout(output), self.embed.weight, self.out_bias)

    def forward(self, tokens: torch.Tensor, condition: Source | None = None) -> torch.Tensor:
        """Logits (B, T, V): [:, t] is the distribution of tokens[:, t] given tokens[:, :t] and the source."""
        return self._logits(self._teacher_forced(tokens, condition))

    def cross_attention(self, tokens: torch.Tensor, condition: Source) -> torch.Tensor:
        """(B, T, S): the attention softmax(e_t) of the step that predicts tokens[:, t]; rows sum to 1."""
        found: list[torch.Tensor] = []
        self._teacher_forced(tokens, condition, found)
        return torch.stack(found, dim=1)

    def _teacher_forced(self, tokens: torch.Tensor, condition: Source | None, attention: list | None = None) -> torch.Tensor:
        """The attentional outputs (B, T, H) of every step, reading the true previous tokens."""
        if condition is None:
            raise ValueError("RNNAttention needs a Source(tokens, lengths) condition")
        memory, mask, h, c = self.encode(condition)
        if memory.shape[0] != tokens.shape[0]:
            raise ValueError(f"the source has {memory.shape[0]} rows, the targets {tokens.shape[0]}")
        keys = self.attention.keys(memory)
        tokens = tokens.to(self.device)
        inputs = torch.cat([torch.full_like(tokens[:, :1], self.eos_id), tokens[:, :-1]], dim=1)
        embedded = self.drop(self.embed(inputs))  # (B, T, E)
        feed = memory.new_zeros(h.shape)
        outputs = []
        for t in range(tokens.shape[1]):
            h, c, feed = self._recur(embedded[:, t], h, c, feed, memory, keys, mask, attention)
            outputs.append(feed)
        return torch.stack(outputs, dim=1) if outputs else memory.new_zeros(tokens.shape[0], 0, h.shape[1])  # (B, T, H)

    # --- incremental decoding ---------------------------------------------------------------

    def start(self, batch_size: int, condition: Source | None = None) -> DecoderState:
        if condition is None:
            raise ValueError("RNNAttention needs a Source(tokens, lengths) condition")
        if condition.tokens.shape[0] != batch_size:
            raise ValueError(f"the source has {condition.tokens.shape[0]} rows, not batch_size {batch_size}")
        memory, mask, h, c = self.encode(condition)
        return DecoderState(h, c, memory.new_zeros(h.shape), memory, self.attention.keys(memory), mask, 0)

    def step(self, state: DecoderState, tokens: torch.Tensor | None) -> tuple[torch.Tensor, DecoderState]:
        """Logits (B, V) of the next token, given the previous tokens (B,) (None at the first step only)."""
        if tokens is None:
            if state.position:
                raise ValueError("step(state, None) is only for the first step")
            tokens = torch.full((state.h.shape[0],), self.eos_id, dtype=torch.long, device=self.device)
        embedded = self.drop(self.embed(tokens.view(-1).to(self.device)))  # (B, E)
        h, c, output = self._recur(embedded, state.h, state.c, state.feed, state.memory, state.keys, state.mask)
        return self._logits(output), state._replace(h=h, c=c, feed=output, position=state.position + 1)

    def reorder(self, state: DecoderState, index: torch.Tensor) -> DecoderState:
        """Row i of the new state is row index[i] of `state` (rows may be dropped or repeated)."""
        index = index.to(self.device)
        return DecoderState(*(x.index_select(0, index) for x in state[:-1]), state.position)
