"""Language models of text: one sentence per line, trained, sampled and scored line by line."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from arcli.decoding import Known, generate
from arcli.errors import DataError, OptionError
from arcli.models.transformer import Transformer, TransformerLMConfig
from arcli.outputs import check_new, open_output
from arcli.registry import ModelFamily
from arcli.tasks import Loaded, SampleRequest, ScoreRequest, Task, TrainingSetup, TrainRequest
from arcli.text.files import read_lines
from arcli.text.tokenizers import ByteTokenizer, SubwordTokenizer, tokenizer_from_json
from arcli.training import LossOutput

MAX_TOKENS = 512  # longer lines are cut for training (scoring takes them whole)


class LineData:
    """Tokenised lines (each ending in EOS); random lines for training, fixed slices for held-out."""

    def __init__(self, train: list[list[int]], valid: list[list[int]]):
        self.train, self.valid = train, valid

    def sample_batch(self, batch_size: int, generator: torch.Generator):
        picks = torch.randint(len(self.train), (batch_size,), generator=generator).tolist()
        return pad([self.train[i][:MAX_TOKENS] for i in picks])

    def valid_batches(self, batch_size: int):
        for start in range(0, len(self.valid), batch_size):
            yield pad([seq[:MAX_TOKENS] for seq in self.valid[start : start + batch_size]])


def pad(sequences: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B, T) right-padded with `pad_id`, lengths (B,))."""
    lengths = torch.tensor([len(s) for s in sequences])
    tokens = torch.full((len(sequences), max(1, int(lengths.max()))), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return tokens, lengths


def token_logprobs(model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """log p(token_t | tokens_<t) in nats, (B, T), zero past each row's length."""
    logits = model(tokens)  # (B, T, V)
    lp = -F.cross_entropy(logits.transpose(1, 2).float(), tokens, reduction="none")  # (B, T)
    inside = torch.arange(tokens.shape[1], device=tokens.device) < lengths.unsqueeze(1).to(tokens.device)
    return lp * inside


class TextTask(Task):
    """Line-by-line language modelling; `subword=True` trains a BPE tokenizer of the config's
    `vocab_size` on the training text (else UTF-8 bytes)."""

    modality = "text"
    unit = "nats/token"
    default_strategy = "sample"
    progress_unit = "tok"

    def __init__(self, subword: bool = False):
        self.subword = subword

    def _tokenizer(self, loaded: Loaded) -> ByteTokenizer | SubwordTokenizer:
        return tokenizer_from_json(loaded.checkpoint.tokenizer)

    def prepare_training(self, family, config, request: TrainRequest) -> TrainingSetup:
        if request.src is not None or request.tgt is not None:
            raise OptionError(f"'{family.name}' is a language model: train it with --data (--src/--tgt are for translation models)")
        lines = [line for path in _files(request.data) for line in read_lines(path) if line.strip()]
        if request.valid:
            valid = [line for path in _files(request.valid) for line in read_lines(path) if line.strip()]
        else:  # every 20th line is held out: deterministic, spread over the whole text
            step = max(2, round(1 / request.valid_fraction))
            valid, lines = lines[::step], [line for i, line in enumerate(lines) if i % step]
        if not lines or not valid:
            raise DataError("not enough text: need non-empty lines for both training and held-out data")
        tokenizer = ByteTokenizer()
        if self.subword:
            tokenizer = SubwordTokenizer.train(lines, config.vocab_size)
            config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)
        encode = lambda line: tokenizer.encode(line) + [tokenizer.eos_id]  # noqa: E731
        data = LineData([encode(line) for line in lines], [encode(line) for line in valid])
        meta = {"lines": len(lines), "valid_lines": len(valid), "tokens": sum(map(len, data.train))}
        return TrainingSetup(config=config, data=data, data_meta=meta, tokenizer=tokenizer.to_json())

    def loss(self, model, batch) -> LossOutput:
        tokens, lengths = (t.to(next(model.parameters()).device) for t in batch)
        logprobs = token_logprobs(model, tokens, lengths)
        count = int(lengths.sum())
        nll = -logprobs.sum()
        return LossOutput(objective=nll / count, nll=nll.detach(), count=count)

    def sample(self, loaded: Loaded, request: SampleRequest) -> None:
        for name, value in (("--seconds", request.seconds), ("--speaker", request.speaker), ("--label", request.label), ("--spectrogram", request.spectrogram),
                            ("--mel-from", request.mel_from)):
            if value is not None:
                raise OptionError(f"{name} does not apply to the text model '{loaded.family.name}'")
        check_new(request.output, request.force)
        tokenizer = self._tokenizer(loaded)
        prompt = tokenizer.encode(request.prompt or "")
        decoding = request.decoding
        max_length = len(prompt) + (decoding.max_length or 200)
        known = None
        if prompt:
            values = torch.tensor([prompt] * request.count)
            known = Known(values, torch.ones_like(values, dtype=torch.bool))
        strategy = decoding.make_strategy(self.default_strategy)
        rows = generate(
            loaded.model, strategy, max_length=max_length, min_length=len(prompt) + decoding.min_length,
            batch_size=request.count, known=known, progress=request.progress,
        )
        with open_output(request.output) as out:
            for row in rows:
                for hyp in row:
                    out.write(" ".join(tokenizer.decode(hyp.tokens).splitlines()) + "\n")  # one line each

    def score(self, loaded: Loaded, request: ScoreRequest) -> None:
        if request.heatmap is not None or request.src is not None or request.tgt is not None:
            raise OptionError(f"--heatmap, --src and --tgt do not apply to the text model '{loaded.family.name}'")
        check_new(request.output, request.force)
        tokenizer = self._tokenizer(loaded)
        total_nats, total_tokens = 0.0, 0
        with open_output(request.output) as out:
            for path in request.inputs:
                lines = read_lines(path)
                for start in range(0, len(lines), request.batch_size):
                    chunk = lines[start : start + request.batch_size]
                    tokens, lengths = pad([tokenizer.encode(line) + [tokenizer.eos_id] for line in chunk])
                    with torch.inference_mode():
                        nats = -token_logprobs(loaded.model, tokens.to(loaded.device), lengths).sum(dim=1)
                    for offset, (value, length) in enumerate(zip(nats.tolist(), lengths.tolist(), strict=True)):
                        out.write(f"{path}:{start + offset + 1}\t{value:.4f}\t{length}\t{math.exp(min(value / length, 700)):.3f}\n")
                        total_nats, total_tokens = total_nats + value, total_tokens + length
        if total_tokens:
            per_token = total_nats / total_tokens
            print(
                f"columns: input, nats, tokens, perplexity; total {total_nats:.1f} nats over {total_tokens} tokens: "
                f"{per_token:.4f} nats/token, perplexity {math.exp(min(per_token, 700)):.3f}",
                file=sys.stderr,
            )


def _files(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.txt") if p.is_file())
        else:
            found.append(path)
    if not found:
        raise DataError(f"no text files (.txt) under {', '.join(map(str, paths))}")
    return found


TRANSFORMER_LM = ModelFamily(
    name="transformer-lm",
    modality="text",
    summary="decoder-only Transformer language model of text lines (sample with --prompt)",
    config_class=TransformerLMConfig,
    model_class=Transformer,
    task=TextTask(subword=True),
    default_checkpoint=None,
)
