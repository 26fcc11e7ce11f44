"""Score a translation checkpoint on the test books and, with --ship, store the scores in a float16 copy.

    python examples/translation/evaluate.py data/bible my-transformer.safetensors
    python examples/translation/evaluate.py data/bible my-transformer.safetensors --ship checkpoints/transformer-en-es.safetensors

Translates `CORPUS/test.en` exactly as `arcli beam-translate MODEL -c CHECKPOINT` does (beam 5,
length penalty 1.0, the default length limits), writes the hypotheses beside the checkpoint
(`*.test.es`), and prints sacreBLEU's BLEU and chrF with their signatures against `CORPUS/test.es`,
and the held-out perplexity of the test pairs. `--ship` writes a float16 copy of the checkpoint whose
metrics also hold those scores (what `arcli models` and the model card show).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import sacrebleu
import torch

from arcli.checkpoint import read_checkpoint, save_checkpoint
from arcli.decoding import DecodingOptions
from arcli.registry import get_family
from arcli.tasks.translation import pad, pair_logprobs, source_batch, translate_lines
from arcli.text.files import read_lines
from arcli.text.tokenizers import tokenizer_from_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--ship", type=Path, help="write a float16 copy with the test scores in its metrics")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--force", action="store_true", help="overwrite an existing --ship file")
    args = parser.parse_args()
    if args.ship is not None and args.ship.exists() and not args.force:
        print(f"error: '{args.ship}' exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    stored = read_checkpoint(args.checkpoint)
    family = get_family(stored.model_name)
    model, _ = family.load(args.checkpoint, torch.device("cpu"))
    tokenizer = tokenizer_from_json(stored.tokenizer)
    sources, references = read_lines(args.corpus / "test.en"), read_lines(args.corpus / "test.es")

    started = time.perf_counter()
    with torch.inference_mode():
        ranked = translate_lines(model, tokenizer, sources, search=DecodingOptions(beam_size=args.beam_size).build("beam"), batch_size=32)
    seconds = time.perf_counter() - started
    hypotheses = [r[0][0] for r in ranked]
    args.checkpoint.with_suffix(".test.es").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])

    nats, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(sources), 32):
            src = source_batch(tokenizer.encode_batch(sources[start : start + 32]), tokenizer.eos_id)
            tgt, lengths = pad([t + [tokenizer.eos_id] for t in tokenizer.encode_batch(references[start : start + 32])])
            nats -= float(pair_logprobs(model, src, tgt, lengths).sum())
            tokens += int(lengths.sum())
    scores = {
        "test_bleu": round(bleu_score.score, 2), "test_chrf": round(chrf_score.score, 2),
        "test_bleu_signature": str(bleu.get_signature()), "test_chrf_signature": str(chrf.get_signature()),
        "test_nll": nats / tokens, "test_perplexity": math.exp(nats / tokens),
        "test_decoding": f"beam {args.beam_size}, length penalty 1.0, max length 2 x source + 10",
        "test_sentences": len(sources), "test_translate_seconds": round(seconds, 1),
    }
    print(f"{stored.model_name} {args.checkpoint}: {bleu_score} ({bleu.get_signature()})")
    print(f"  {chrf_score} ({chrf.get_signature()})")
    print(f"  test perplexity {scores['test_perplexity']:.3f} ({scores['test_nll']:.4f} nats/token over {tokens} tokens)")
    print(f"  {len(sources)} sentences translated in {seconds:.1f} s (1 thread)")
    if args.ship:
        save_checkpoint(args.ship, stored.model_name, stored.config, model.state_dict(), data=stored.data, tokenizer=stored.tokenizer,
                        training=stored.training, metrics={**stored.metrics, **scores}, dtype=torch.float16)
        print(f"wrote {args.ship} (float16)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
