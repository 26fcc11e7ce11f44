"""Translation: encoder-decoder models over one joint subword vocabulary, one sentence per line.

`arcli train` reads parallel text (--src/--tgt, the same number of lines), trains a byte-level BPE
tokenizer on both sides and stores it in the checkpoint; held-out loss, perplexity and BLEU (greedy)
are reported as training goes. `beam-translate` writes exactly one line per input line, in input
order (an empty line gives an empty line; a very long line is translated in sentence-sized pieces
whose translations are joined). `score-likelihood --src --tgt` gives log p(target | source) in nats
per pair, the same number the engine reports as a hypothesis' `logprob`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from arcli.decoding import DecodingOptions, Search, generate
from arcli.errors import DataError, OptionError
from arcli.models.rnn_attention import RNNAttention, RNNAttentionConfig
from arcli.models.transformer import Source, Transformer, TransformerConfig
from arcli.outputs import check_new, open_output
from arcli.registry import ModelFamily
from arcli.tasks import DECODING_OPTIONS, Loaded, ScoreRequest, Task, TrainingSetup, TrainRequest, TranslateRequest
from arcli.tasks.text import pad
from arcli.text.files import read_lines
from arcli.text.tokenizers import SubwordTokenizer, tokenizer_from_json
from arcli.training import LossOutput

MAX_TRAIN_TOKENS = 256  # longer training sentences are cut
MAX_PIECE_TOKENS = 200  # longer input lines are translated in pieces of at most this many tokens
DEFAULT_MAX_LENGTH = 512  # target tokens, when neither --max-length nor a ratio is given
BLEU_LINES = 500  # held-out lines decoded for the BLEU reported during training


def source_batch(pieces: list[list[int]], eos_id: int) -> Source:
    """Source token ids, each ended with EOS (so no source is empty), padded."""
    return Source(*pad([p + [eos_id] for p in pieces]))


def pair_logprobs(model: torch.nn.Module, src: Source, tgt: torch.Tensor, tgt_lengths: torch.Tensor) -> torch.Tensor:
    """log p(tgt_t | tgt_<t, src) in nats, (B, T), zero past each row's length."""
    logits = model(tgt, src)
    lp = -F.cross_entropy(logits.transpose(1, 2).float(), tgt, reduction="none")
    inside = torch.arange(tgt.shape[1], device=tgt.device) < tgt_lengths.to(tgt.device).unsqueeze(1)
    return lp * inside


class PairData:
    """Tokenised sentence pairs. Training batches are runs of neighbours in length order (little
    padding), starting at a random place; held-out batches go in order."""

    def __init__(self, train: list[tuple[list[int], list[int]]], valid: list[tuple[list[int], list[int]]],
                 valid_text: list[tuple[str, str]], tokenizer: SubwordTokenizer):
        self.train = sorted(train, key=lambda p: (len(p[0]) + len(p[1]), len(p[1])))
        self.valid, self.valid_text, self.tokenizer = valid, valid_text, tokenizer

    def _batch(self, pairs):
        eos = self.tokenizer.eos_id
        src = source_batch([s[: MAX_TRAIN_TOKENS - 1] for s, _ in pairs], eos)
        tgt, tgt_lengths = pad([t[: MAX_TRAIN_TOKENS - 1] + [eos] for _, t in pairs])
        return src.tokens, src.lengths, tgt, tgt_lengths

    def sample_batch(self, batch_size: int, generator: torch.Generator):
        start = int(torch.randint(max(1, len(self.train) - batch_size + 1), (1,), generator=generator))
        return self._batch(self.train[start : start + batch_size])

    def valid_batches(self, batch_size: int):
        for start in range(0, len(self.valid), batch_size):
            yield self._batch(self.valid[start : start + batch_size])

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """BLEU of greedy translations of (up to BLEU_LINES) held-out sources."""
        import sacrebleu

        text = self.valid_text[:BLEU_LINES]
        hyps = translate_lines(model, self.tokenizer, [s for s, _ in text], search=DecodingOptions().build("greedy"), batch_size=64)
        return {"bleu": round(sacrebleu.corpus_bleu([h[0][0] for h in hyps], [[t for _, t in text]]).score, 2)}


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?;:])\s+", text) if s]


def split_long(text: str, tokenizer, limit: int = MAX_PIECE_TOKENS) -> list[str]:
    """A line in pieces of at most `limit` tokens: whole sentences where they fit, else word runs."""
    if len(tokenizer.encode(text)) <= limit:
        return [text]
    pieces, current = [], ""
    units = []
    for sentence in _sentences(text):
        if len(tokenizer.encode(sentence)) <= limit:
            units.append(sentence)
        else:  # a single overlong sentence: runs of words
            words, run = sentence.split(), []
            for word in words:
                if run and len(tokenizer.encode(" ".join(run + [word]))) > limit:
                    units.append(" ".join(run))
                    run = []
                run.append(word)
            if run:
                units.append(" ".join(run))
    for unit in units:
        joined = f"{current} {unit}" if current else unit
        if current and len(tokenizer.encode(joined)) > limit:
            pieces.append(current)
            joined = unit
        current = joined
    if current:
        pieces.append(current)
    return pieces


def translate_lines(model, tokenizer, lines: list[str], *, search: Search, batch_size: int,
                    max_length: int | None = None, max_length_ratio: float | None = 2.0, min_length: int = 0,
                    progress=None, on_long=None) -> list[list[tuple[str, float, int]]]:
    """Per line, the `search.strategy.nbest` translations as (text, score, tokens) best first (`model` in eval mode);
    an empty line gives [("", 0.0, 0)] * nbest. Long lines are split into pieces; the k-th translations of the pieces
    are joined with spaces and their scores averaged (weighted by length)."""
    pieces: list[tuple[int, list[int]]] = []  # (line index, source tokens)
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        parts = split_long(line, tokenizer)
        if len(parts) > 1 and on_long is not None:
            on_long(index, len(parts))
        pieces += [(index, tokenizer.encode(part)) for part in parts]
    nbest = search.strategy.nbest
    order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i][1]))  # similar lengths batch together
    results: list[list[tuple[list[int], float]]] = [[] for _ in pieces]
    done = 0
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        sources = [pieces[i][1] for i in chosen]
        limits = [_max_target(len(s) + 1, max_length, max_length_ratio) for s in sources]
        rows = generate(
            model, search.strategy, processors=search.processors, max_length=max(limits), row_max_lengths=limits,
            min_length=min(min_length, min(limits)), batch_size=len(chosen), condition=source_batch(sources, tokenizer.eos_id),
            row_offset=start,
        )
        for i, hyps in zip(chosen, rows, strict=True):
            results[i] = [(h.tokens, h.score) for h in hyps]
        done += len(chosen)
        if progress is not None:
            progress(done, len(order))
    out: list[list[tuple[str, float, int]]] = [[("", 0.0, 0)] * nbest for _ in lines]
    by_line: dict[int, list[int]] = {}
    for i, (index, _) in enumerate(pieces):
        by_line.setdefault(index, []).append(i)
    for index, members in by_line.items():
        ranked = []
        for k in range(nbest):
            parts = [results[i][min(k, len(results[i]) - 1)] for i in members]
            text = " ".join(_one_line(tokenizer.decode(tokens)) for tokens, _ in parts)
            count = sum(len(tokens) for tokens, _ in parts)
            score = sum(s * len(t) for t, s in parts) / max(1, count) if len(parts) > 1 else parts[0][1]
            ranked.append((text, score, count))
        out[index] = ranked
    return out


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _max_target(source_tokens: int, max_length: int | None, ratio: float | None) -> int:
    limit = DEFAULT_MAX_LENGTH if ratio is None else int(ratio * source_tokens) + 10
    return max(1, min(limit, max_length) if max_length is not None else limit)


def _read_pairs(src: Path, tgt: Path) -> list[tuple[str, str]]:
    sources, targets = read_lines(src), read_lines(tgt)
    if len(sources) != len(targets):
        raise DataError(f"'{src}' has {len(sources)} lines but '{tgt}' has {len(targets)}: parallel files need one sentence per line on both sides")
    return list(zip(sources, targets, strict=True))


class TranslationTask(Task):
    modality = "translation"
    unit = "nats/token"
    default_strategy = "beam"
    progress_unit = "sent"
    options = {"beam-translate": frozenset(DECODING_OPTIONS)}

    def _tokenizer(self, loaded: Loaded) -> SubwordTokenizer:
        return tokenizer_from_json(loaded.checkpoint.tokenizer)

    def info(self, family, model) -> dict[str, str]:
        return {"vocabulary": f"{model.vocab_size} subword tokens (byte-level BPE, shared by source and target)"}

    def prepare_training(self, family, config, request: TrainRequest) -> TrainingSetup:
        if request.src is None or request.tgt is None or request.data:
            raise OptionError(f"'{family.name}' is a translation model: train it with --src FILE --tgt FILE (not --data)")
        if (request.valid_src is None) != (request.valid_tgt is None):
            raise OptionError("--valid-src and --valid-tgt go together")
        pairs = [(s, t) for s, t in _read_pairs(request.src, request.tgt) if s.strip() and t.strip()]
        if request.valid_src is not None:
            valid = [(s, t) for s, t in _read_pairs(request.valid_src, request.valid_tgt) if s.strip() and t.strip()]
        else:  # every 20th pair is held out
            step = max(2, round(1 / request.valid_fraction))
            valid, pairs = pairs[::step], [p for i, p in enumerate(pairs) if i % step]
        if len(pairs) < 2 or not valid:
            raise DataError("not enough parallel text: need non-empty sentence pairs for both training and held-out data")
        tokenizer = SubwordTokenizer.train((line for pair in pairs for line in pair), config.vocab_size)
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)

        def encode(items):
            src = tokenizer.encode_batch([s for s, _ in items])
            tgt = tokenizer.encode_batch([t for _, t in items])
            return list(zip(src, tgt, strict=True))

        data = PairData(encode(pairs), encode(valid), valid, tokenizer)
        meta = {
            "pairs": len(pairs), "valid_pairs": len(valid),
            "source_tokens": sum(len(s) for s, _ in data.train), "target_tokens": sum(len(t) for _, t in data.train),
            "src": str(request.src), "tgt": str(request.tgt),
        }
        return TrainingSetup(config=config, data=data, data_meta=meta, tokenizer=tokenizer.to_json())

    def loss(self, model, batch) -> LossOutput:
        src_tokens, src_lengths, tgt, tgt_lengths = batch
        logprobs = torch.log_softmax(model(tgt, Source(src_tokens, src_lengths)).float(), dim=-1)  # (B, T, V)
        inside = torch.arange(tgt.shape[1], device=tgt.device) < tgt_lengths.unsqueeze(1)
        count = int(inside.sum())
        nll = -(logprobs.gather(2, tgt.unsqueeze(-1)).squeeze(-1) * inside).sum()
        objective = nll
        smoothing = model.config.label_smoothing if model.training else 0.0
        if smoothing:  # as F.cross_entropy(label_smoothing=e): (1 - e) * nll + e * mean over the vocabulary of -log p
            objective = (1 - smoothing) * nll - smoothing * (logprobs.mean(dim=-1) * inside).sum()
        objective = objective / count
        return LossOutput(objective=objective, nll=nll.detach(), count=count)

    def translate(self, loaded: Loaded, request: TranslateRequest) -> None:
        decoding = request.decoding
        self.check_options(loaded.family, "beam-translate", request)
        search = decoding.build(self.default_strategy)
        check_new(request.output, request.force)
        lines = read_lines(request.input if request.input is not None else Path("-"))
        tokenizer = self._tokenizer(loaded)
        started = time.perf_counter()

        def on_long(index, parts):
            print(f"line {index + 1} is long: translated in {parts} pieces", file=sys.stderr)

        with torch.inference_mode():
            translations = translate_lines(
                loaded.model, tokenizer, lines, search=search, batch_size=request.batch_size, max_length=decoding.max_length,
                max_length_ratio=request.max_length_ratio, min_length=decoding.min_length, progress=request.progress, on_long=on_long,
            )
        seconds = time.perf_counter() - started
        with open_output(request.output) as out:
            for index, ranked in enumerate(translations):
                if search.strategy.nbest == 1:
                    out.write(ranked[0][0] + "\n")
                else:
                    for text, score, _ in ranked:
                        out.write(f"{index}\t{score:.4f}\t{text}\n")
        sentences = sum(1 for line in lines if line.strip())
        tokens = sum(r[0][2] for r in translations)
        print(
            f"translated {sentences} sentences ({len(lines) - sentences} empty lines kept empty) into {tokens} tokens "
            f"in {seconds:.1f} s: {sentences / max(seconds, 1e-9):.1f} sentences/s, {tokens / max(seconds, 1e-9):.0f} tokens/s",
            file=sys.stderr,
        )

    def score(self, loaded: Loaded, request: ScoreRequest) -> None:
        if request.inputs or request.heatmap is not None:
            raise OptionError(f"'{loaded.family.name}' scores sentence pairs: use --src FILE --tgt FILE (no file arguments, no --heatmap)")
        if request.src is None or request.tgt is None:
            raise OptionError(f"'{loaded.family.name}' needs both --src and --tgt")
        check_new(request.output, request.force)
        pairs = _read_pairs(request.src, request.tgt)
        tokenizer = self._tokenizer(loaded)
        total_nats, total_tokens = 0.0, 0
        with open_output(request.output) as out:
            for start in range(0, len(pairs), request.batch_size):
                chunk = pairs[start : start + request.batch_size]
                src = source_batch(tokenizer.encode_batch([s for s, _ in chunk]), tokenizer.eos_id)
                tgt, lengths = pad([t + [tokenizer.eos_id] for t in tokenizer.encode_batch([t for _, t in chunk])])
                with torch.inference_mode():
                    device = loaded.device
                    logp = pair_logprobs(loaded.model, Source(src.tokens.to(device), src.lengths.to(device)), tgt.to(device), lengths).sum(dim=1)
                for offset, (value, length) in enumerate(zip(logp.tolist(), lengths.tolist(), strict=True)):
                    out.write(f"{start + offset + 1}\t{value:.4f}\t{length}\t{math.exp(min(-value / length, 700)):.3f}\n")
                    total_nats, total_tokens = total_nats - value, total_tokens + length
        if total_tokens:
            per_token = total_nats / total_tokens
            print(
                f"columns: line, log p(target | source) in nats, target tokens (with end-of-sentence), perplexity; "
                f"{len(pairs)} pairs, {total_tokens} tokens: {per_token:.4f} nats/token, perplexity {math.exp(min(per_token, 700)):.3f}",
                file=sys.stderr,
            )


TRANSLATION = TranslationTask()

TRANSFORMER = ModelFamily(
    name="transformer",
    modality="translation",
    summary="Transformer encoder-decoder translation (English->Spanish Bible model shipped)",
    config_class=TransformerConfig,
    model_class=Transformer,
    task=TRANSLATION,
    default_checkpoint="transformer-en-es.safetensors",
)

RNN_ATTENTION = ModelFamily(
    name="rnn-attention",
    modality="translation",
    summary="bidirectional-LSTM encoder, attentive LSTM decoder (Bahdanau) translation",
    config_class=RNNAttentionConfig,
    model_class=RNNAttention,
    task=TRANSLATION,
    default_checkpoint="rnn-attention-en-es.safetensors",
)
