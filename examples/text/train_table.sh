#!/usr/bin/env bash
# Train the language models of examples/text/table.py on English Bible text, one budget for all:
# 1500 AdamW steps of 16 verses (about 0.8 of an epoch of the 30k training verses), peak lr 2e-3
# with 100 warm-up steps, no dropout, UTF-8 bytes, about 0.25M parameters each; one CPU thread.
#
#   python examples/translation/make_corpus.py data/bible      # if data/bible is not there yet
#   bash examples/text/train_table.sh [OUT_DIR]                 # default data/lm; one model at a time
#   python examples/text/table.py data/bible/test.en OUT_DIR    # the table
set -euo pipefail
OUT=${1:-data/lm}
STEPS=${STEPS:-1500}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON=(--data data/bible/train.en --valid data/bible/valid.en --steps "$STEPS" --batch-size 16 --lr 2e-3 --warmup-steps 100
        --eval-every 500 --save-every 500 --set dropout=0 --device cpu --seed 0 --quiet)
run() {  # name family settings...
  local name=$1 family=$2; shift 2
  echo "== $name: $family $*"
  /usr/bin/time -f "$name: %e s wall, %U s user" arcli train "$family" "${COMMON[@]}" "$@" -o "$OUT/$name.safetensors" --force
}
run tcn tcn --set channels=80 --set levels=6 --set kernel_size=3
run lstm lstm-lm --set cell=lstm --set hidden=192
run gru lstm-lm --set cell=gru --set hidden=224
run transformer transformer-lm --set tokenizer=bytes --set d_model=96 --set heads=4 --set decoder_layers=2 --set ff_dim=384
run rnn lstm-lm --set cell=rnn --set hidden=384
