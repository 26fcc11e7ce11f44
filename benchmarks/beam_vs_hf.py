"""Beam search: arcli's engine beside Hugging Face `generate`, and arcli's Transformer with and without its KV cache.

    pip install -e ".[bench]"          # arcli plus the peer, Hugging Face transformers
    python benchmarks/beam_vs_hf.py [--sentences 200] [--batch-size 20] [--beam-size 5] [--repeats 2]

Everything runs on the CPU with one torch thread under torch.inference_mode; each timing is the best
of --repeats runs, since a shared machine is noisy. Nothing is downloaded (HF_HUB_OFFLINE=1), and
transformers is a benchmark-only extra that the arcli package never imports.

1. Peer comparison. A small MarianMTModel (d_model 256, 3+3 layers, 4 heads, ffn 1024, vocabulary
   8000) is built from a local MarianConfig with random weights and a fixed seed. Its output layer
   is scaled up, and EOS's row of it more, with a bias, so that the random model is confident and
   ends hypotheses at lengths that depend on the source, as a trained one does. `MarianAdapter`
   gives it arcli's model contract (start/step/reorder over HF's encoder output and its
   EncoderDecoderCache). The same random sources (5..40 token ids, then EOS, padded) are decoded
   in the same batches by `arcli.decoding.generate(adapter, "beam", ...)` and by HF's
   `model.generate(num_beams=5, early_stopping=True, length_penalty=1.0, do_sample=False)`, and the
   best hypotheses are compared token by token (HF's without its start token and its padding).
   Both search the same distribution with the same rule, fairseq's beam search:
     - 2 x beam candidates a step; an EOS counts only among the best `beam` of them; a row is done
       once `beam` hypotheses have ended (HF: early_stopping=True);
     - finished hypotheses are ranked by logprob / length ** length_penalty, where length counts the
       generated tokens with the EOS and without the decoder start token: arcli's len(tokens), HF's
       cur_len + 1 - decoder_prompt_len (its prompt is the start token alone);
     - HF applies one logits processor by default for Marian, forced_eos_token_id: at the last step
       (max_new_tokens) EOS gets log-probability 0 and every other token -inf. The adapter does the
       same (`forced_eos_at`), so hypotheses that reach max length end with EOS in both;
     - the pad token, Marian's decoder start token, is made impossible in the model itself
       (final_logits_bias = -inf) rather than by a processor: HF's processors act after log_softmax
       (no renormalisation) while arcli normalises the logits it is given, so masking it on one
       side only would change the other tokens' log-probabilities.
   This comparison found two differences in arcli's engine, both fixed since (tests in
   tests/test_decoding.py): an EOS candidate ranked below the best `beam` candidates stayed alive
   and decoding went on after its EOS (4 of 200 rows differed), and at a row's length limit the
   step's EOS hypotheses were finalised before the better hypotheses cut there (2 of 200 with
   --no-forced-eos). Now all 200 rows are identical. Should a row differ again, the script says
   whether an EOS candidate was fed back to the model in that row.
2. KV cache. arcli's Transformer -- the shipped checkpoints/transformer-en-es.safetensors when it
   exists, else TransformerConfig() with random weights (the speed-up hardly depends on the
   weights' values) -- translates --cache-sentences lines of --text (default data/bible/test.en, from examples/translation/make_corpus.py; synthetic
   token ids without a checkpoint's tokenizer) with beam 5 through `generate`, with (a) the model
   itself, whose `step` keeps per-layer keys and values, and (b) `Recompute`, whose state is the
   token prefix and whose step runs `forward` over the whole prefix (and the source) again. A
   random model's best hypothesis is a lone EOS, so then every hypothesis is made to run
   --random-length tokens (min length = max length).

Printed columns:
  identical        rows whose best hypothesis is the same token sequence on both sides, of all rows
  arcli sent/s     sentences (input rows) decoded per second by arcli's generate and the adapter
  HF sent/s        the same for HF's generate
  arcli/HF         arcli's sentences/s over HF's (> 1: arcli is faster)
  tokens           tokens of the best hypotheses, EOS included (what `arcli translate` reports)
  ... tok/s        those tokens per second, with the KV cache and with recomputation
  speed-up         tokens/s with the KV cache over tokens/s without it
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import torch

from arcli.decoding import generate
from arcli.models.transformer import Source, Transformer, TransformerConfig
from arcli.registry import get_family
from arcli.tasks.translation import source_batch

os.environ["HF_HUB_OFFLINE"] = "1"  # read when transformers is imported: nothing may be downloaded


def best_time(repeats: int, run):
    """(the result of the last call, the least seconds) over `repeats` calls of run()."""
    seconds = []
    for _ in range(repeats):
        begin = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - begin)
    return result, min(seconds)


# --- 1. arcli's beam search beside Hugging Face's ---------------------------------------------------


def build_marian(vocab_size: int, seed: int, logit_scale: float, eos_scale: float, eos_bias: float):
    """A random MarianMTModel, confident enough that beam search ends hypotheses at varied lengths."""
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    pad = vocab_size - 1  # Marian's convention: EOS 0, pad last; pad is also the decoder start token
    config = MarianConfig(
        vocab_size=vocab_size, d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, max_position_embeddings=512,
        eos_token_id=0, pad_token_id=pad, decoder_start_token_id=pad, forced_eos_token_id=0,  # Marian's defaults
        scale_embedding=True, init_std=0.05,  # tokens, not positions, dominate the decoder's input: outputs depend on the source
        tie_word_embeddings=False,  # an output layer of its own, scaled below without touching the embeddings
    )
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
        model.lm_head.weight[config.eos_token_id].mul_(eos_scale)  # EOS's logit varies more with the context...
        model.final_logits_bias[0, config.eos_token_id] = eos_bias  # ... and sometimes wins
        model.final_logits_bias[0, pad] = float("-inf")  # never generated, in arcli and HF alike
    return model


class MarianAdapter:
    """arcli's model contract around a Hugging Face encoder-decoder: the encoder runs once in
    `start`; `step` feeds one token per row with HF's own past_key_values cache (an
    EncoderDecoderCache, which `reorder_cache` index-selects in place).

    forced_eos_at: the step count at which EOS is forced, as HF's ForcedEOSTokenLogitsProcessor does
    for Marian: at that step EOS gets log-probability 0 and every other token -inf. None: nothing.
    The state also follows each hypothesis' input row, so that `continued_after_eos` can collect
    the rows (of the current `generate` call) in which a hypothesis went on after an EOS.
    """

    def __init__(self, model, forced_eos_at: int | None = None):
        self.model, self.forced_eos_at = model, forced_eos_at
        self.vocab_size = model.config.vocab_size
        self.eos_id = model.config.eos_token_id
        self.start_id = model.config.decoder_start_token_id
        self.continued_after_eos: set[int] = set()

    def start(self, batch_size: int, condition: Source) -> dict:
        tokens, lengths = condition
        mask = (torch.arange(tokens.shape[1]) < lengths.unsqueeze(1)).long()  # (B, S)
        memory = self.model.get_encoder()(input_ids=tokens, attention_mask=mask).last_hidden_state  # (B, S, D)
        return {"memory": memory, "mask": mask, "cache": None, "t": 0, "row": torch.arange(batch_size)}

    def step(self, state: dict, tokens: torch.Tensor | None):
        if tokens is None:  # arcli's first step: HF starts from the decoder start token
            tokens = torch.full((state["memory"].shape[0],), self.start_id, dtype=torch.long)
        else:
            after_eos = tokens == self.eos_id
            if bool(after_eos.any()):
                self.continued_after_eos.update(state["row"][after_eos].tolist())
        out = self.model(
            encoder_outputs=(state["memory"],), attention_mask=state["mask"], decoder_input_ids=tokens.view(-1, 1),
            past_key_values=state["cache"], use_cache=True,
        )
        logits = out.logits[:, -1]  # (B, V)
        if state["t"] + 1 == self.forced_eos_at:
            logits = torch.full_like(logits, float("-inf"))
            logits[:, self.eos_id] = 0.0
        return logits, {**state, "cache": out.past_key_values, "t": state["t"] + 1}

    def reorder(self, state: dict, index: torch.Tensor) -> dict:
        if state["cache"] is not None:
            state["cache"].reorder_cache(index)  # in place: the engine never uses the old state again
        picked = {key: state[key].index_select(0, index) for key in ("memory", "mask", "row")}
        return {**state, **picked}


def random_sources(count: int, vocab_size: int, seed: int) -> list[list[int]]:
    """5..40 token ids from 1 .. vocab_size - 2 (neither EOS nor pad), EOS not yet appended."""
    rng = random.Random(seed)
    return [[rng.randrange(1, vocab_size - 1) for _ in range(rng.randint(5, 40))] for _ in range(count)]


def padded(sources: list[list[int]], eos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (B, S): each source ended with EOS, padded with pad_id; lengths (B,))."""
    tokens, lengths = source_batch(sources, eos_id)
    inside = torch.arange(tokens.shape[1]) < lengths.unsqueeze(1)
    return tokens.masked_fill(~inside, pad_id), lengths


def decode_arcli(adapter: MarianAdapter, batches, beam_size: int, max_new_tokens: int) -> tuple[list[list[int]], set[int]]:
    """Best hypotheses, and the rows in which a hypothesis went on after an EOS."""
    out, continued = [], set()
    for tokens, lengths in batches:
        adapter.continued_after_eos = set()
        rows = generate(
            adapter, "beam", max_length=max_new_tokens, batch_size=tokens.shape[0], condition=Source(tokens, lengths),
            beam_size=beam_size, nbest=1, length_penalty=1.0,
        )
        continued |= {len(out) + row for row in adapter.continued_after_eos}
        out += [hyps[0].tokens for hyps in rows]
    return out, continued


def decode_hf(model, batches, beam_size: int, max_new_tokens: int) -> list[list[int]]:
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    out = []
    for tokens, lengths in batches:
        mask = (torch.arange(tokens.shape[1]) < lengths.unsqueeze(1)).long()  # (B, S)
        sequences = model.generate(
            input_ids=tokens, attention_mask=mask, num_beams=beam_size, num_return_sequences=1, length_penalty=1.0,
            early_stopping=True, do_sample=False, max_new_tokens=max_new_tokens,
        )
        for row in sequences[:, 1:].tolist():  # without the decoder start token; pad only follows an EOS
            out.append(row[: row.index(eos) + 1] if eos in row else [t for t in row if t != pad])
    return out


def compare_with_hf(args) -> None:
    import transformers

    model = build_marian(args.vocab, args.seed, args.logit_scale, args.eos_scale, args.eos_bias)
    if args.no_forced_eos:
        model.generation_config.forced_eos_token_id = None
    adapter = MarianAdapter(model, forced_eos_at=None if args.no_forced_eos else args.max_new_tokens)
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    sources = random_sources(args.sentences, args.vocab, args.seed)
    sources.sort(key=len, reverse=True)  # similar lengths batch together, as `arcli translate` does
    batches = [padded(sources[i : i + args.batch_size], eos, pad) for i in range(0, len(sources), args.batch_size)]
    with torch.inference_mode():
        (ours, continued), ours_s = best_time(args.repeats, lambda: decode_arcli(adapter, batches, args.beam_size, args.max_new_tokens))
        theirs, theirs_s = best_time(args.repeats, lambda: decode_hf(model, batches, args.beam_size, args.max_new_tokens))
    differing = [row for row, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    lengths = sorted(len(hyp) for hyp in ours)
    ended = sum(1 for hyp in ours if len(hyp) < args.max_new_tokens and hyp[-1] == eos)
    forced = "off" if args.no_forced_eos else "on in both"
    print(
        f"1. arcli generate vs Hugging Face transformers {transformers.__version__} generate, beam {args.beam_size}, "
        f"length penalty 1.0, early stopping, at most {args.max_new_tokens} new tokens (forced EOS there: {forced}), "
        f"batch {args.batch_size}; random MarianMTModel (vocab {args.vocab}, d_model 256, 3+3 layers), "
        f"{len(sources)} random sources of 5..40 tokens"
    )
    print(
        f"   best hypotheses: {ended}/{len(ours)} end by EOS before max length; {lengths[0]}..{lengths[-1]} tokens "
        f"(median {lengths[len(lengths) // 2]})"
    )
    print(f"   {'identical':>10} {'arcli sent/s':>13} {'HF sent/s':>10} {'arcli/HF':>9}")
    print(f"   {f'{len(ours) - len(differing)}/{len(ours)}':>10} {len(ours) / ours_s:>13.1f} {len(theirs) / theirs_s:>10.1f} {theirs_s / ours_s:>9.2f}")
    if differing:
        explained = sum(1 for row in differing if row in continued)
        print(
            f"   {explained} of the {len(differing)} differing rows {differing} are among the {len(continued)} rows where arcli's "
            f"engine let a hypothesis go on after an EOS candidate ranked below the best {args.beam_size}; HF, like fairseq, "
            "never continues an EOS candidate (no generate() argument changes that), so the beams differ there"
        )
        for row in differing[:3]:
            a, b = ours[row], theirs[row]
            first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            print(f"   row {row}: arcli {len(a)} tokens, HF {len(b)} tokens, first different token at position {first}")


# --- 2. arcli's Transformer with and without its KV cache -------------------------------------------


class Recompute:
    """The Transformer without any cache: the state is the token prefix (and the source), and each
    step runs `forward`, encoder included, over the whole prefix again."""

    def __init__(self, model: Transformer):
        self.model = model
        self.vocab_size, self.eos_id = model.vocab_size, model.eos_id

    def start(self, batch_size: int, condition: Source) -> dict:
        return {"prefix": torch.zeros(batch_size, 0, dtype=torch.long), "source": condition}

    def step(self, state: dict, tokens: torch.Tensor | None):
        prefix = state["prefix"] if tokens is None else torch.cat([state["prefix"], tokens.view(-1, 1)], dim=1)  # (B, t)
        # forward(x)[:, t] is the distribution of x[:, t] given x[:, :t]: the position after the
        # prefix holds a placeholder whose own value is never looked at.
        placeholder = torch.full((prefix.shape[0], 1), self.eos_id, dtype=torch.long)
        logits = self.model(torch.cat([prefix, placeholder], dim=1), state["source"])[:, -1]  # (B, V)
        return logits, {**state, "prefix": prefix}

    def reorder(self, state: dict, index: torch.Tensor) -> dict:
        tokens, lengths = state["source"]
        return {"prefix": state["prefix"].index_select(0, index), "source": Source(tokens.index_select(0, index), lengths.index_select(0, index))}


def load_transformer(seed: int):
    """(model, tokenizer or None, description): the shipped checkpoint, else random weights."""
    family = get_family("transformer")
    path = family.shipped_checkpoint()
    if path is not None and path.exists():
        from arcli.text.tokenizers import tokenizer_from_json

        model, checkpoint = family.load(path, torch.device("cpu"))
        return model, tokenizer_from_json(checkpoint.tokenizer), f"shipped checkpoint {path.name}"
    torch.manual_seed(seed)
    model = Transformer(TransformerConfig()).eval()
    return model, None, f"TransformerConfig() with RANDOM weights, since {family.default_checkpoint} is not there yet"


def cache_sources(tokenizer, text: Path, count: int, vocab_size: int, seed: int) -> tuple[list[list[int]], str]:
    if tokenizer is not None and text.exists():
        lines = [line for line in text.read_text(encoding="utf-8").splitlines() if line.strip()][:count]
        return [tokenizer.encode(line) for line in lines], f"the first {len(lines)} lines of {text}"
    rng = random.Random(seed)
    return [[rng.randrange(2, vocab_size) for _ in range(rng.randint(5, 40))] for _ in range(count)], f"{count} synthetic sources of 5..40 token ids"


def decode_translation(model, batches, beam_size: int, min_length: int) -> list[list[int]]:
    out = []
    for source, limits in batches:
        rows = generate(
            model, "beam", max_length=max(limits), row_max_lengths=limits, min_length=min_length, batch_size=len(limits),
            condition=source, beam_size=beam_size, nbest=1, length_penalty=1.0,
        )
        out += [hyps[0].tokens for hyps in rows]
    return out


def compare_cache(args) -> None:
    model, tokenizer, description = load_transformer(args.seed)
    sources, where = cache_sources(tokenizer, args.text, args.cache_sentences, model.vocab_size, args.seed)
    sources.sort(key=len, reverse=True)
    fixed = None if tokenizer is not None else args.random_length  # a random model would stop at once
    batches = []
    for i in range(0, len(sources), args.batch_size):
        chunk = sources[i : i + args.batch_size]
        limits = [fixed or min(2 * (len(source) + 1) + 10, 256) for source in chunk]  # as `--max-length-ratio 2` would
        batches.append((source_batch(chunk, model.eos_id), limits))
    min_length = fixed or 0
    lengths = f"exactly {fixed} tokens" if fixed else "at most 2 x (source + 1) + 10 tokens"
    with torch.inference_mode():
        cached, cached_s = best_time(args.repeats, lambda: decode_translation(model, batches, args.beam_size, min_length))
        plain, plain_s = best_time(args.repeats, lambda: decode_translation(Recompute(model), batches, args.beam_size, min_length))
    same = sum(a == b for a, b in zip(cached, plain, strict=True))
    cached_rate, plain_rate = sum(map(len, cached)) / cached_s, sum(map(len, plain)) / plain_s
    print(f"2. arcli Transformer, {description}: {where}, beam {args.beam_size}, batch {args.batch_size}, {lengths}")
    print(f"   {'identical':>10} {'tokens':>7} {'KV cache tok/s':>15} {'recompute tok/s':>16} {'speed-up':>9}")
    print(f"   {f'{same}/{len(cached)}':>10} {sum(map(len, cached)):>7} {cached_rate:>15.1f} {plain_rate:>16.1f} {cached_rate / plain_rate:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=200, help="random sources decoded by arcli and HF")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--logit-scale", type=float, default=4.0, help="output layer weights x this: a confident random model")
    parser.add_argument("--eos-scale", type=float, default=3.0, help="EOS's output weights x this again: its logit depends on the context")
    parser.add_argument("--eos-bias", type=float, default=8.0, help="added to EOS's logit so that hypotheses end")
    parser.add_argument("--no-forced-eos", action="store_true", help="force no EOS at max length, in HF (Marian's default) nor in the adapter")
    parser.add_argument("--cache-sentences", type=int, default=50, help="sentences translated with and without the KV cache")
    parser.add_argument("--text", type=Path, default=Path("data/bible/test.en"), help="English sentences for the KV-cache part")
    parser.add_argument("--random-length", type=int, default=40, help="tokens per hypothesis when the Transformer has random weights")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-hf", action="store_true", help="part 2 only")
    parser.add_argument("--skip-cache", action="store_true", help="part 1 only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread, best of {args.repeats} runs")
    if not args.skip_hf:
        compare_with_hf(args)
    if not args.skip_cache:
        compare_cache(args)


if __name__ == "__main__":
    main()
