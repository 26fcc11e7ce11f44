#!/usr/bin/env bash
# Rebuild the shipped English->Spanish translators (checkpoints/transformer-en-es.safetensors and
# checkpoints/rnn-attention-en-es.safetensors) with the settings of their model cards. Each takes
# one to two hours of CPU; give them a GPU with --device cuda. (The shipped Transformer was trained to
# 5,000 steps, then resumed to 6,000, which stretched its schedule: see its model card.)
#   apt-get install sword-text-web sword-text-sparv && pip install pysword
#   python examples/translation/make_corpus.py data/bible
#   bash examples/translation/train_default.sh data/bible
set -euo pipefail
data=${1:?usage: train_default.sh CORPUS_DIR (from make_corpus.py)}
pairs=(--src "$data/train.en" --tgt "$data/train.es" --valid-src "$data/valid.en" --valid-tgt "$data/valid.es")
arcli train transformer "${pairs[@]}" -o transformer-en-es.safetensors \
    --steps 6000 --warmup-steps 400 --lr 1e-3 --eval-every 500 --save-every 250 --batch-size 64 --device cpu
arcli train rnn-attention "${pairs[@]}" -o rnn-attention-en-es.safetensors \
    --steps 2500 --warmup-steps 200 --lr 1e-3 --eval-every 500 --save-every 250 --batch-size 64 --device cpu
