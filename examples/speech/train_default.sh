#!/usr/bin/env bash
# Rebuild the shipped speech WaveNet (checkpoints/wavenet-speech.safetensors) from scratch:
# the corpus recipe, then the exact training command of the model card (checkpoints/README.md).
# Needs: apt-get install espeak-ng sox sword-text-web; pip install pysword
set -euo pipefail
data=${1:-data/speech30}
out=${2:-wavenet-speech.safetensors}
python examples/speech/make_corpus.py "$data" --minutes 30 --valid-minutes 2
# The default architecture (2 stacks x 10 layers, receptive field 2047 samples = 128 ms).
arcli train wavenet --data "$data/train" --valid "$data/valid" -o "$out" \
    --steps 6000 --warmup-steps 200 --lr 3e-3 --eval-every 1000 --save-every 200 --batch-size 4 --device cpu
python examples/speech/ship.py "$out" "${out%.safetensors}-fp16.safetensors"  # the shipped copy: float16 weights
