#!/usr/bin/env bash
# Train the models of the binary Fashion-MNIST likelihood table with one budget for every model:
# 1,500 AdamW steps of 32 images (48,000 images, 0.87 of an epoch of the 55,000 training images),
# lr 3e-3 after 100 warm-up steps, cosine decay; one CPU thread each, one after the other.
#
#   python examples/binary/make_data.py data/binary
#   bash examples/binary/train_table.sh data/binary data/binary/models
#   python examples/binary/table.py data/binary data/binary/models
set -euo pipefail
data=${1:-data/binary}
out=${2:-data/binary/models}
mkdir -p "$out"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
budget=(--data "$data/train.npy" --valid "$data/valid.npy" --steps 1500 --batch-size 32 --lr 3e-3 --warmup-steps 100
        --eval-every 500 --save-every 500 --device cpu --seed 0 --quiet --force)

train() {  # NAME FILE SETTINGS...
    local name=$1 file=$2
    shift 2
    echo "== $file: arcli train $name $* (started $(date +%T))"
    /usr/bin/time -f "$file: %e s wall, %U s user" arcli train "$name" "$@" "${budget[@]}" -o "$out/$file.safetensors"
}

train fvsbn fvsbn
train made made-1 --set orderings=1
train made made-32 --set orderings=32
train made made-32-agnostic --set orderings=32 --set order_agnostic=true
train nade nade --set hidden=200
train pixelcnn pixelcnn-levels2 --set levels=2 --set hidden=32 --set layers=4
echo "== done $(date +%T)"
