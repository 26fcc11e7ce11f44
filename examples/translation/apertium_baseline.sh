#!/usr/bin/env bash
# The rule-based baseline of the model cards: Apertium English->Spanish on the test books.
#   apt-get install apertium-eng-spa && pip install sacrebleu
#   bash examples/translation/apertium_baseline.sh data/bible
set -euo pipefail
data=${1:?usage: apertium_baseline.sh CORPUS_DIR (from make_corpus.py)}
# Unknown words keep their "*" mark, as Apertium prints them by default: BLEU 13.7, chrF 39.7 here
# (with `apertium -u`, which drops the marks: 14.5 and 40.0).
apertium eng-spa < "$data/test.en" > "$data/test.apertium.es"
sacrebleu "$data/test.es" -i "$data/test.apertium.es" -m bleu chrf
