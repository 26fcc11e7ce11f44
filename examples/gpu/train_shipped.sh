#!/usr/bin/env bash
# Train GPU versions of the shipped models side by side on one CUDA device, within a wall-clock budget.
#
#   bash examples/gpu/train_shipped.sh SPEECH_CORPUS BIBLE_CORPUS OUTDIR [BUDGET_SECONDS]
#
# SPEECH_CORPUS is a folder from examples/speech/make_corpus.py (train/ and valid/), BIBLE_CORPUS one
# from examples/translation/make_corpus.py. The jobs below run at once (they share the GPU). A short
# probe of each (100 steps, run together, as the real runs will be) measures seconds per step; each
# real run then gets as many steps as fit in BUDGET_SECONDS (default 420), so that its cosine schedule
# ends when the time does. (The probe counts step time alone: a first version counted the held-out
# evaluation too, whose greedy BLEU decoding of an untrained translator took most of its 84 s, and
# gave the Transformer 644 steps, 155 s of a 380 s budget.) A run that still overruns is stopped by SIGINT 60 s after the budget,
# which saves its checkpoint. Checkpoints (float16 weights) and the logs go to OUTDIR; the
# resumable training states stay in OUTDIR/states.
#
# TTS_CORPUS, when set, is a folder from examples/speech/make_tts_corpus.py (clips with their phoneme
# timing; pack_codes.py carries it): wavenet-tts then trains in place of the unshipped 3x10 WaveNet.
#
# ARCLI (default: arcli) is the command that runs arcli, e.g. "python3 -m arcli"; DEVICE (default cuda)
# and PROBE_STEPS (default 150) exist for trying the script out with tiny settings on a CPU.
set -uo pipefail
speech=${1:?usage: train_shipped.sh SPEECH_CORPUS BIBLE_CORPUS OUTDIR [BUDGET_SECONDS]}
bible=${2:?usage: train_shipped.sh SPEECH_CORPUS BIBLE_CORPUS OUTDIR [BUDGET_SECONDS]}
out=${3:?usage: train_shipped.sh SPEECH_CORPUS BIBLE_CORPUS OUTDIR [BUDGET_SECONDS]}
budget=${4:-420}
read -r -a arcli <<<"${ARCLI:-arcli}"
mkdir -p "$out/states" "$out/probe"

wavenet64=(--set residual_channels=64 --set dilation_channels=64 --set skip_channels=256 --set end_channels=256)
declare -A jobs=(
    [wavenet-2x10]="wavenet --data $speech/train --valid $speech/valid ${wavenet64[*]} --batch-size 16 --lr 2e-3 --warmup-steps 300"
    [wavenet-3x10]="wavenet --data $speech/train --valid $speech/valid ${wavenet64[*]} --set stacks=3 --batch-size 16 --lr 2e-3 --warmup-steps 300"
    [wavenet-vocoder]="wavenet-vocoder --data $speech/train --valid $speech/valid --set layers_per_stack=10 --set stacks=1 --batch-size 16 --lr 2e-3 --warmup-steps 300"
    [transformer]="transformer --src $bible/train.en --tgt $bible/train.es --valid-src $bible/valid.en --valid-tgt $bible/valid.es --batch-size 128 --lr 1e-3 --warmup-steps 400"
    [rnn-attention]="rnn-attention --src $bible/train.en --tgt $bible/train.es --valid-src $bible/valid.en --valid-tgt $bible/valid.es --batch-size 128 --lr 1e-3 --warmup-steps 200"
)
if [ -n "${TTS_CORPUS:-}" ]; then
    unset 'jobs[wavenet-3x10]'
    jobs[wavenet-tts]="wavenet-tts --data $TTS_CORPUS/train --valid $TTS_CORPUS/valid --set residual_channels=64 --set dilation_channels=64 --set skip_channels=256 --set end_channels=256 --batch-size 16 --lr 2e-3 --warmup-steps 300"
fi

seconds_of() {  # the seconds a checkpoint's optimisation steps took (held-out evaluation and saving left out)
    python3 -c "import json,sys; from safetensors import safe_open; m=safe_open(sys.argv[1],'pt').metadata(); print(json.loads(m['arcli.training'])['step_seconds'])" "$1"
}

probe_steps=${PROBE_STEPS:-150}
device=${DEVICE:-cuda}
for name in "${!jobs[@]}"; do
    # shellcheck disable=SC2086
    "${arcli[@]}" train ${jobs[$name]} -o "$out/probe/$name.safetensors" --steps $probe_steps --warmup-steps 10 \
        --eval-every 100000 --save-every 100000 --device "$device" --quiet --force >"$out/probe/$name.log" 2>&1 &
done
wait

pids=()
for name in "${!jobs[@]}"; do
    if ! wall=$(seconds_of "$out/probe/$name.safetensors" 2>/dev/null); then
        echo "$name: probe failed, skipped:" >&2
        tail -n 5 "$out/probe/$name.log" >&2
        continue
    fi
    steps=$(python3 -c "print(max(200, int($budget / ($wall / $probe_steps) * 0.95)))")
    every=$(( (steps + 3) / 4 ))
    echo "$name: probe $wall s for $probe_steps steps -> $steps steps" >&2
    # shellcheck disable=SC2086
    timeout -s INT $((budget + 60)) "${arcli[@]}" train ${jobs[$name]} -o "$out/states/$name.safetensors" --steps "$steps" \
        --eval-every "$every" --save-every "$every" --device "$device" --half --quiet --force >"$out/$name.log" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
for name in "${!jobs[@]}"; do
    [ -f "$out/states/$name.safetensors" ] && cp "$out/states/$name.safetensors" "$out/$name.safetensors"
    echo "== $name" >&2
    grep -E "^step |wrote|error|Error" "$out/$name.log" >&2 || tail -n 5 "$out/$name.log" >&2
done
