#!/usr/bin/env bash
# Train the models of the binary Fashion-MNIST likelihood table with one budget for every model:
# 1,500 AdamW steps of 32 images (48,000 images, 0.87 of an epoch of the 55,000 training images),
# lr 3e-3 after 100 warm-up steps, cosine decay; one CPU thread each, one after the other.
#
#   python examples/binary/make_data.py data/binary
#   bash examples/binary/train_table.sh data/binary data/binary/models
#   python examples/binary/table.py data/binary data/binary/models
#
# Names after the two folders run only those jobs (fvsbn made-1 made-32 made-32-agnostic nade
# pixelcnn-levels2 pixelrnn-row-levels2 pixelrnn-diagonal-levels2); the PixelRNN rows of the table
# ran later than the others, as `... data/binary data/binary/models pixelrnn-row-levels2`, then
# `... pixelrnn-diagonal-levels2`.
set -euo pipefail
data=${1:-data/binary}
out=${2:-data/binary/models}
jobs=("${@:3}")
[ ${#jobs[@]} -eq 0 ] && jobs=(fvsbn made-1 made-32 made-32-agnostic nade pixelcnn-levels2 pixelrnn-row-levels2 pixelrnn-diagonal-levels2)
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

for job in "${jobs[@]}"; do
    case $job in
        fvsbn) train fvsbn fvsbn ;;
        made-1) train made made-1 --set orderings=1 ;;
        made-32) train made made-32 --set orderings=32 ;;
        made-32-agnostic) train made made-32-agnostic --set orderings=32 --set order_agnostic=true ;;
        nade) train nade nade --set hidden=200 ;;
        pixelcnn-levels2) train pixelcnn pixelcnn-levels2 --set levels=2 --set hidden=32 --set layers=4 ;;
        pixelrnn-row-levels2) train pixelrnn-row pixelrnn-row-levels2 --set levels=2 --set hidden=32 --set layers=2 ;;
        pixelrnn-diagonal-levels2) train pixelrnn-diagonal pixelrnn-diagonal-levels2 --set levels=2 --set hidden=32 --set layers=2 ;;
        *) echo "unknown job $job" >&2; exit 1 ;;
    esac
done
echo "== done $(date +%T)"
