"""Language models of text: one sentence per line, trained, sampled and scored line by line."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from arcli.decoding import Known, generate
from arcli.errors import DataError, OptionError
from arcli.models.rnn_lm import RNNLM, RNNLMConfig
from arcli.models.tcn import TCN, TCNConfig
from arcli.models.transformer import Transformer, TransformerLMConfig
from arcli.outputs import check_new, open_output
from arcli.registry import ModelFamily
from arcli.tasks import DECODING_OPTIONS, LN2, Loaded, SampleRequest, ScoreRequest, Task, TrainingSetup, TrainRequest
from arcli.text.batches import pad
from arcli.text.files import decode_utf8, read_byte_lines, read_bytes, read_lines, split_lines
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


def token_logprobs(model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """log p(token_t | tokens_<t) in nats, (B, T), zero past each row's length."""
    logits = model(tokens)  # (B, T, V)
    lp = -F.cross_entropy(logits.transpose(1, 2).float(), tokens, reduction="none")  # (B, T)
    inside = torch.arange(tokens.shape[1], device=tokens.device) < lengths.unsqueeze(1).to(tokens.device)
    return lp * inside


@dataclass
class LineScore:
    """One scored line: where it is from, its tokens (EOS last), and its size in characters and
    bytes, newline included (the EOS stands for it); `characters` is None for bytes that are not UTF-8."""

    where: str
    tokens: list[int]
    characters: int | None
    size: int


class TextTask(Task):
    """Line-by-line language modelling on UTF-8 bytes or on a BPE tokenizer trained on the training
    text; a config's `tokenizer` field ("bytes" or "bpe") chooses, else `tokenizer` here does (a
    plugin's config may have no such field). `context` is the most tokens the model was made to see
    (None: no limit, as for a recurrent state or a TCN's queues, which forget on their own)."""

    modality = "text"
    unit = "nats/token"
    default_strategy = "sample"
    progress_unit = "tok"
    options = {"sample": frozenset({"--count", "--prompt", *(name for name in DECODING_OPTIONS if name != "--prefix")})}
    option_notes = {"--prefix": "give the start of the text with --prompt"}

    def __init__(self, subword: bool = False, context: int | None = None):
        self.subword, self.context = subword, context

    def _tokenizer(self, loaded: Loaded) -> ByteTokenizer | SubwordTokenizer:
        return tokenizer_from_json(loaded.checkpoint.tokenizer)

    def info(self, family: ModelFamily, model: torch.nn.Module) -> dict[str, str]:
        lines = {"context": f"{self.context} tokens (longer prompts are cut at the left)" if self.context else "unlimited"}
        if isinstance(model, TCN):
            lines["receptive field"] = f"{model.receptive_field} tokens"
        return lines

    def prepare_training(self, family, config, request: TrainRequest) -> TrainingSetup:
        if request.src is not None or request.tgt is not None:
            raise OptionError(f"'{family.name}' is a language model: train it with --data (--src/--tgt are for translation models)")
        subword = config.tokenizer == "bpe" if hasattr(config, "tokenizer") else self.subword
        read = read_lines if subword else read_byte_lines  # a byte model trains on any bytes
        lines = [line for path in _files(request.data) for line in read(path) if line.strip()]
        if request.valid:
            valid = [line for path in _files(request.valid) for line in read(path) if line.strip()]
        else:  # every 20th line is held out: deterministic, spread over the whole text
            step = max(2, round(1 / request.valid_fraction))
            valid, lines = lines[::step], [line for i, line in enumerate(lines) if i % step]
        if not lines or not valid:
            raise DataError("not enough text: need non-empty lines for both training and held-out data")
        tokenizer: ByteTokenizer | SubwordTokenizer = ByteTokenizer()
        if subword:
            tokenizer = SubwordTokenizer.train(lines, config.vocab_size)
        if subword or hasattr(config, "tokenizer"):  # the model's vocabulary follows its tokenizer
            config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)
        encode = (lambda line: tokenizer.encode(line)) if subword else list  # noqa: E731
        data = LineData([encode(line) + [tokenizer.eos_id] for line in lines], [encode(line) + [tokenizer.eos_id] for line in valid])
        meta = {"lines": len(lines), "valid_lines": len(valid), "tokens": sum(map(len, data.train))}
        return TrainingSetup(config=config, data=data, data_meta=meta, tokenizer=tokenizer.to_json())

    def loss(self, model, batch) -> LossOutput:
        tokens, lengths = (t.to(next(model.parameters()).device) for t in batch)
        logprobs = token_logprobs(model, tokens, lengths)
        count = int(lengths.sum())
        nll = -logprobs.sum()
        return LossOutput(objective=nll / count, nll=nll.detach(), count=count)

    def sample(self, loaded: Loaded, request: SampleRequest) -> None:
        self.check_options(loaded.family, "sample", request)
        check_new(request.output, request.force)
        tokenizer = self._tokenizer(loaded)
        decoding = request.decoding
        new_tokens = decoding.max_length or 200
        prompt = self._fit_prompt(tokenizer.encode(request.prompt or ""), new_tokens, tokenizer)
        known = None
        if prompt:
            values = torch.tensor([prompt] * request.count)
            known = Known(values, torch.ones_like(values, dtype=torch.bool))
        strategy, processors = decoding.build(self.default_strategy)
        rows = generate(
            loaded.model, strategy, processors=processors, max_length=len(prompt) + new_tokens, min_length=len(prompt) + decoding.min_length,
            batch_size=request.count, known=known, progress=request.progress,
        )
        with open_output(request.output) as out:
            for row in rows:
                for hyp in row:
                    out.write(" ".join(tokenizer.decode(hyp.tokens).splitlines()) + "\n")  # one line each

    def _fit_prompt(self, prompt: list[int], new_tokens: int, tokenizer) -> list[int]:
        """The prompt, cut at the left when it and the new tokens do not fit in the context."""
        if self.context is None or len(prompt) + new_tokens <= self.context:
            return prompt
        if new_tokens >= self.context:
            raise OptionError(f"--max-length {new_tokens} leaves no room for a prompt in this model's context of {self.context} tokens")
        keep = self.context - new_tokens
        cut = prompt[-keep:]
        if isinstance(tokenizer, ByteTokenizer):  # start on a whole UTF-8 character
            while cut and 0x80 <= cut[0] < 0xC0:
                cut = cut[1:]
        print(
            f"arcli: the prompt is {len(prompt)} tokens; with {new_tokens} new ones (--max-length) it does not fit in the "
            f"context of {self.context}: keeping its last {len(cut)} tokens, from {tokenizer.decode(cut[:8])!r}...",
            file=sys.stderr,
        )
        return cut

    def score(self, loaded: Loaded, request: ScoreRequest) -> None:
        if request.heatmap is not None or request.src is not None or request.tgt is not None:
            raise OptionError(f"--heatmap, --src and --tgt do not apply to the text model '{loaded.family.name}'")
        check_new(request.output, request.force)
        tokenizer = self._tokenizer(loaded)
        lines = [line for path in request.inputs for line in _score_lines(path, tokenizer)]  # all read before anything is written
        nats_sum = tokens_sum = 0.0
        with open_output(request.output) as out:
            for start in range(0, len(lines), request.batch_size):
                chunk = lines[start : start + request.batch_size]
                tokens, lengths = pad([line.tokens for line in chunk])
                with torch.inference_mode():
                    nats = -token_logprobs(loaded.model, tokens.to(loaded.device), lengths).sum(dim=1)
                for line, value in zip(chunk, nats.tolist(), strict=True):
                    per_char = "-" if line.characters is None else f"{value / LN2 / line.characters:.4f}"
                    out.write(f"{line.where}\t{value:.4f}\t{len(line.tokens)}\t{math.exp(min(value / len(line.tokens), 700)):.3f}\t{per_char}\n")
                    nats_sum, tokens_sum = nats_sum + value, tokens_sum + len(line.tokens)
        bits, size = nats_sum / LN2, sum(line.size for line in lines)
        characters = None if any(line.characters is None for line in lines) else sum(line.characters for line in lines)
        per_char = "bits/char undefined (not UTF-8)" if characters is None else f"{bits / characters:.4f} bits/char"
        print(
            f"columns: input, nats, tokens, perplexity, bits/char; total {nats_sum:.1f} nats over {tokens_sum:.0f} tokens, "
            f"{'?' if characters is None else characters} characters, {size} bytes (newlines included): {per_char}, "
            f"{bits / size:.4f} bits/byte, {nats_sum / tokens_sum:.4f} nats/token (perplexity {math.exp(min(nats_sum / tokens_sum, 700)):.3f})",
            file=sys.stderr,
        )


def _score_lines(path: Path, tokenizer: ByteTokenizer | SubwordTokenizer) -> list[LineScore]:
    """The lines of one file to score: any bytes for a byte model, UTF-8 text for a subword one."""
    raw = read_bytes(path)
    if not raw:
        raise DataError(f"'{path}' is empty: there is no text to score")
    scored = []
    if isinstance(tokenizer, ByteTokenizer):
        for number, line in enumerate(split_lines(raw), 1):
            try:
                characters: int | None = len(line.decode("utf-8")) + 1
            except UnicodeDecodeError:
                characters = None
            scored.append(LineScore(f"{path}:{number}", list(line) + [tokenizer.eos_id], characters, len(line) + 1))
        return scored
    decode_utf8(raw, path)  # one clear line for bytes a subword model cannot take
    for number, line in enumerate(read_lines(path), 1):
        scored.append(LineScore(f"{path}:{number}", tokenizer.encode(line) + [tokenizer.eos_id], len(line) + 1, len(line.encode("utf-8")) + 1))
    return scored


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
    task=TextTask(subword=True, context=MAX_TOKENS),
    default_checkpoint="transformer-lm-bible.safetensors",
)

TCN_LM = ModelFamily(
    name="tcn",
    modality="text",
    summary="temporal convolutional network language model of text lines (Bai et al. 2018; bytes by default)",
    config_class=TCNConfig,
    model_class=TCN,
    task=TextTask(),
    default_checkpoint="tcn-bible.safetensors",
)

RNN_LM = ModelFamily(
    name="lstm-lm",
    modality="text",
    summary="recurrent language model of text lines: LSTM, or --set cell=gru|rnn (bytes by default)",
    config_class=RNNLMConfig,
    model_class=RNNLM,
    task=TextTask(),
    default_checkpoint="lstm-lm-bible.safetensors",
)
