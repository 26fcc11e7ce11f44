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
from typing import NamedTuple

import torch
import torch.nn.functional as F

from arcli.decoding import DecodingOptions, Search, generate
from arcli.errors import DataError, OptionError
from arcli.models.rnn_attention import RNNAttention, RNNAttentionConfig
from arcli.models.transformer import Source, Transformer, TransformerConfig
from arcli.outputs import check_new, open_output
from arcli.registry import ModelFamily
from arcli.tasks import DECODING_OPTIONS, Loaded, ScoreRequest, Task, TrainingSetup, TrainRequest, TranslateRequest
from arcli.text.alignment import align, pharaoh, token_words
from arcli.text.batches import pad
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


class Translation(NamedTuple):
    """One translation of an input line (the joined translations of its pieces, for a long line)."""

    text: str
    score: float  # the search's score; for pieces, their scores averaged by length
    tokens: int  # target tokens, EOS included
    logprob: float = 0.0  # log p(translation | source) in nats: the pieces' sum
    token_logprobs: list[float] | None = None  # per target token (`token_scores=True`)
    alignment: list[tuple[int, int]] | None = None  # (source word, target word) pairs (`alignment=True`)


def translate_lines(model, tokenizer, lines: list[str], *, search: Search, batch_size: int,
                    max_length: int | None = None, max_length_ratio: float | None = 2.0, min_length: int = 0,
                    prefix: list[int] | None = None, token_scores: bool = False, alignment: bool = False,
                    progress=None, on_long=None) -> list[list[Translation]]:
    """Per line, the `search.strategy.nbest` translations best first (`model` in eval mode); an
    empty line gives nbest empty translations. Long lines are split into pieces; the k-th
    translations of the pieces are joined with spaces and their scores averaged (weighted by
    length). `prefix`: target tokens every translation starts with (forced, and counted).
    `token_scores`, `alignment`: also give per-token log-probabilities, word alignments."""
    pieces: list[tuple[int, str, list[int]]] = []  # (line index, text, source tokens)
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        parts = split_long(line, tokenizer)
        if len(parts) > 1 and on_long is not None:
            on_long(index, len(parts))
        pieces += [(index, part, tokenizer.encode(part)) for part in parts]
    first = {i for i in range(len(pieces)) if i == 0 or pieces[i - 1][0] != pieces[i][0]}  # a line's first piece takes the prefix
    nbest, prefix = search.strategy.nbest, prefix or []
    order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i][2]))  # similar lengths batch together
    results: list[list] = [[] for _ in pieces]  # per piece: Hypothesis objects, with alignments when asked
    done = 0
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        sources = [pieces[i][2] for i in chosen]
        forced = [len(prefix) if i in first else 0 for i in chosen]
        limits = [max(_max_target(len(s) + 1, max_length, max_length_ratio), min(n + 1, max_length or n + 1)) for s, n in zip(sources, forced, strict=True)]
        known = None
        if prefix and any(forced):
            values = torch.tensor([prefix] * len(chosen))
            known = (values, torch.tensor([[n > 0] * len(prefix) for n in forced]))
        condition = source_batch(sources, tokenizer.eos_id)
        rows = generate(
            model, search.strategy, processors=search.processors, max_length=max(limits), row_max_lengths=limits,
            min_length=min(min_length, min(limits)), batch_size=len(chosen), condition=condition, known=known,
            row_offset=start, token_scores=token_scores,
        )
        links = _alignments(model, tokenizer, [pieces[i][2] for i in chosen], rows) if alignment else [[None] * len(r) for r in rows]
        for i, hyps, found in zip(chosen, rows, links, strict=True):
            results[i] = list(zip(hyps, found, strict=True))
        done += len(chosen)
        if progress is not None:
            progress(done, len(order))
    out: list[list[Translation]] = [[Translation("", 0.0, 0, 0.0, [] if token_scores else None, [] if alignment else None)] * nbest for _ in lines]
    by_line: dict[int, list[int]] = {}
    for i, (index, _, _) in enumerate(pieces):
        by_line.setdefault(index, []).append(i)
    for index, members in by_line.items():
        ranked = []
        for k in range(nbest):
            parts = [results[i][min(k, len(results[i]) - 1)] for i in members]
            texts = [_one_line(tokenizer.decode(hyp.tokens)) for hyp, _ in parts]
            count = sum(len(hyp.tokens) for hyp, _ in parts)
            score = sum(hyp.score * len(hyp.tokens) for hyp, _ in parts) / max(1, count) if len(parts) > 1 else parts[0][0].score
            token_logprobs = [lp for hyp, _ in parts for lp in hyp.token_logprobs] if token_scores else None
            pairs = None
            if alignment:  # word indices of each piece, shifted past the words of the pieces before it
                pairs, source_words, target_words = [], 0, 0
                for (_, found), member, text in zip(parts, members, texts, strict=True):
                    pairs += [(i + source_words, j + target_words) for i, j in found]
                    source_words, target_words = source_words + len(pieces[member][1].split()), target_words + len(text.split())
            ranked.append(Translation(" ".join(texts), score, count, sum(hyp.logprob for hyp, _ in parts), token_logprobs, pairs))
        out[index] = ranked
    return out


def _alignments(model, tokenizer, sources: list[list[int]], rows) -> list[list[list[tuple[int, int]]]]:
    """Per row and hypothesis, its word alignment from the model's cross-attention."""
    flat = [(r, hyp) for r, hyps in enumerate(rows) for hyp in hyps]
    targets, _ = pad([hyp.tokens for _, hyp in flat])
    device = next(model.parameters()).device
    repeated = source_batch([sources[r] for r, _ in flat], tokenizer.eos_id)
    attention = model.cross_attention(targets.to(device), Source(repeated.tokens.to(device), repeated.lengths.to(device))).cpu()  # (N, T, S)
    source_words = [token_words(tokenizer, s) for s in sources]
    found = [align(attention[n], source_words[r], token_words(tokenizer, hyp.tokens)) for n, (r, hyp) in enumerate(flat)]
    out, position = [], 0
    for hyps in rows:
        out.append(found[position : position + len(hyps)])
        position += len(hyps)
    return out


def _output_line(index: int, translation: Translation, nbest: int, request: TranslateRequest) -> str:
    """One output line: the translation alone; with --nbest N > 1 `index, score, translation`; with
    --print-scores tokens `index, translation, log-probability, token log-probabilities`; with
    --alignment the Pharaoh pairs as a last column."""
    if request.print_scores == "tokens":
        scores = " ".join(f"{lp:.7f}" for lp in translation.token_logprobs)  # 7 decimals: 200 tokens still sum within 1e-5
        fields = [str(index), translation.text, f"{translation.logprob:.7f}", scores]
    elif nbest > 1:
        fields = [str(index), f"{translation.score:.4f}", translation.text]
    else:
        fields = [translation.text]
    if request.alignment:
        fields.append(pharaoh(translation.alignment))
    return "\t".join(fields)


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
    options = {"beam-translate": frozenset({*DECODING_OPTIONS, "--print-scores", "--alignment"})}

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
        if request.print_scores not in (None, "tokens"):
            raise OptionError(f"--print-scores takes 'tokens' (per-token log-probabilities), got {request.print_scores!r}")
        if request.alignment and getattr(loaded.model, "cross_attention", None) is None:
            raise OptionError(f"--alignment needs a model with cross-attention, and '{loaded.family.name}' has none")
        tokenizer = self._tokenizer(loaded)
        prefix = tokenizer.encode(decoding.prefix) if decoding.prefix else None
        if prefix is not None and decoding.max_length is not None and len(prefix) > decoding.max_length:
            raise OptionError(f"--prefix is {len(prefix)} tokens long, longer than --max-length {decoding.max_length}")
        check_new(request.output, request.force)
        lines = read_lines(request.input if request.input is not None else Path("-"))
        started = time.perf_counter()

        def on_long(index, parts):
            print(f"line {index + 1} is long: translated in {parts} pieces", file=sys.stderr)

        with torch.inference_mode():
            translations = translate_lines(
                loaded.model, tokenizer, lines, search=search, batch_size=request.batch_size, max_length=decoding.max_length,
                max_length_ratio=request.max_length_ratio, min_length=decoding.min_length, prefix=prefix,
                token_scores=request.print_scores == "tokens", alignment=request.alignment, progress=request.progress, on_long=on_long,
            )
        seconds = time.perf_counter() - started
        with open_output(request.output) as out:
            for index, ranked in enumerate(translations):
                for translation in ranked:
                    out.write(_output_line(index, translation, search.strategy.nbest, request) + "\n")
        sentences = sum(1 for line in lines if line.strip())
        tokens = sum(r[0].tokens for r in translations)
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
