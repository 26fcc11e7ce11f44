#!/usr/bin/env bash
# Parallel WaveNet on one CUDA device: train a gaussian WaveNet vocoder (the teacher), then distil the
# IAF student from it. Each `arcli train` command is held to 9 minutes and is resumable: it gets
# SIGINT at the limit (which saves its checkpoint and training state), and running this script
# again with the same arguments resumes each unfinished run (--resume) and skips finished ones.
#
#   bash examples/gpu/train_parallel_wavenet.sh SPEECH_CORPUS OUTDIR [TEACHER_STEPS] [STUDENT_STEPS]
#
# SPEECH_CORPUS is a folder from examples/speech/make_corpus.py (train/ and valid/; on a machine
# without espeak-ng, carry it with examples/speech/pack_codes.py). Defaults: 10,000 teacher steps and
# 5,000 student steps of batch 16 (ClariNet-sized widths: 64 channels; measure one command's steps per
# minute before trusting these to fit). Writes OUTDIR/teacher.safetensors, OUTDIR/student.safetensors,
# their training states, metrics logs and OUTDIR/*.log.
#
# For trying it out on a CPU with tiny settings: DEVICE=cpu, TEACHER_SET / STUDENT_SET (extra --set
# options replacing the widths), BATCH, LIMIT (seconds per command, default 540), ARCLI (default: arcli).
set -uo pipefail
corpus=${1:?usage: train_parallel_wavenet.sh SPEECH_CORPUS OUTDIR [TEACHER_STEPS] [STUDENT_STEPS]}
out=${2:?usage: train_parallel_wavenet.sh SPEECH_CORPUS OUTDIR [TEACHER_STEPS] [STUDENT_STEPS]}
teacher_steps=${3:-10000}
student_steps=${4:-5000}
device=${DEVICE:-cuda}
batch=${BATCH:-16}
limit=${LIMIT:-540}
read -r -a arcli <<<"${ARCLI:-arcli}"
read -r -a teacher_set <<<"${TEACHER_SET:---set residual_channels=64 --set dilation_channels=64 --set skip_channels=256 --set end_channels=256}"
read -r -a student_set <<<"${STUDENT_SET:---set residual_channels=64 --set dilation_channels=64 --set skip_channels=64 --set end_channels=64}"
mkdir -p "$out"

steps_done() {  # the step of a checkpoint (0 when there is none)
    [ -f "$1" ] || { echo 0; return; }
    python3 -c "import json,sys; from safetensors import safe_open; print(json.loads(safe_open(sys.argv[1],'pt').metadata()['arcli.metrics'])['step'])" "$1"
}

run() {  # NAME STEPS ARGS...: train, or resume, NAME until STEPS, for at most $limit seconds
    local name=$1 steps=$2; shift 2
    local checkpoint="$out/$name.safetensors" state="$out/$name.train.safetensors"
    if [ "$(steps_done "$checkpoint")" -ge "$steps" ]; then
        echo "$name: done ($steps steps)" >&2
        return 0
    fi
    local resume=()
    [ -f "$state" ] && resume=(--resume "$state")
    timeout -s INT "$limit" "${arcli[@]}" train "$@" -o "$checkpoint" --steps "$steps" --batch-size "$batch" \
        --eval-every $(( (steps + 3) / 4 )) --save-every $(( (steps + 9) / 10 )) --device "$device" --quiet --force "${resume[@]}" \
        >>"$out/$name.log" 2>&1
    local done_steps
    done_steps=$(steps_done "$checkpoint")
    echo "$name: at step $done_steps of $steps$([ "$done_steps" -lt "$steps" ] && echo ': run this script again to resume')" >&2
    [ "$done_steps" -ge "$steps" ]
}

run teacher "$teacher_steps" wavenet-vocoder --data "$corpus/train" --valid "$corpus/valid" --set output=gaussian \
    "${teacher_set[@]}" --lr 2e-3 --warmup-steps 300 || exit 0
run student "$student_steps" parallel-wavenet --teacher "$out/teacher.safetensors" --data "$corpus/train" --valid "$corpus/valid" \
    "${student_set[@]}" --lr 1e-3 --warmup-steps 200 || exit 0
grep -hE "^step |wrote" "$out/teacher.log" "$out/student.log" >&2
