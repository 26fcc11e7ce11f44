#!/usr/bin/env bash
# Rebuild the shipped Fashion-MNIST PixelCNN (checkpoints/pixelcnn-fashion.safetensors): the exact
# command of its model card (checkpoints/README.md). Needs: apt-get install dataset-fashion-mnist
# (IDX files under /usr/share/datasets/fashion-mnist/; the labels files beside them make the model
# class-conditional). The 10k test images are the held-out set, evaluated once, at the end.
set -euo pipefail
data=${DATA:-/usr/share/datasets/fashion-mnist}
out=${1:-pixelcnn-fashion.safetensors}
arcli train pixelcnn --data "$data/train-images-idx3-ubyte.gz" --valid "$data/t10k-images-idx3-ubyte.gz" -o "$out" \
    --steps 6000 --batch-size 32 --lr 2e-3 --warmup-steps 100 --eval-every 100000 --save-every 100 \
    --set hidden=32 --set layers=5 --device cpu --half \
    --class-names "T-shirt/top,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot"
