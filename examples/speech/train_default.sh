#!/usr/bin/env bash
# Rebuild the shipped speech WaveNet (checkpoints/wavenet-speech.safetensors) from scratch:
# the corpus recipe, then the exact training command of the model card (checkpoints/README.md).
# Needs: apt-get install espeak-ng sox sword-text-web; pip install pysword
set -euo pipefail
data=${1:-data/speech}
out=${2:-wavenet-speech.safetensors}
python examples/speech/make_corpus.py "$data"
arcli train wavenet --data "$data/train" --valid "$data/valid" -o "$out" \
    --steps 12000 --warmup-steps 100 --lr 2e-3 --eval-every 1000 --save-every 100 --batch-size 8 \
    --set stacks=1 --set residual_channels=32 --set dilation_channels=32 \
    --set skip_channels=64 --set end_channels=64 --device cpu --half
