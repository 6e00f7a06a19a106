#!/usr/bin/env bash
# Accuracy benchmark suite: train a CIFAR-10 teacher per model, then bench/accuracy.py on it with a replayed plan.
#
#   DATA=../shared/data/cifar10-train DEVICE=cuda bash bench/accuracy_suite.sh
#
# Settings come from the environment (defaults in brackets): DATA [../shared/data/cifar10-train], DEVICE [auto],
# THREADS [2], RUNS [runs/accuracy-suite], RESULTS [bench/results], SIZE [112], MODELS ["vgg16_bn alexnet"],
# and per model: <MODEL>_TEACHER_EPOCHS, <MODEL>_PLAN (a plan.json to replay; empty: plan with the latency planner
# on this host), <MODEL>_SPEEDUP. The plans used for the README numbers were timed with ExecuTorch on the 2-core
# CPU host and are committed under bench/plans/.
set -euo pipefail
DATA=${DATA:-../shared/data/cifar10-train}
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-2}
RUNS=${RUNS:-runs/accuracy-suite}
RESULTS=${RESULTS:-bench/results}
SIZE=${SIZE:-112}
MODELS=${MODELS:-"vgg16_bn alexnet"}
EXTRA=${EXTRA:-}
mkdir -p "$RUNS" "$RESULTS"

for model in $MODELS; do
  key=$(echo "$model" | tr '[:lower:]' '[:upper:]')
  epochs_var="${key}_TEACHER_EPOCHS"; plan_var="${key}_PLAN"; speedup_var="${key}_SPEEDUP"
  epochs=${!epochs_var:-15}
  plan=${!plan_var:-}
  speedup=${!speedup_var:-4}
  echo "== $model: teacher ($epochs epochs at ${SIZE}², $DEVICE)"
  python3 -m mobilelwt train-teacher --model "$model" --data "$DATA" --input-size "$SIZE" --epochs "$epochs" \
    --batch-size "${TEACHER_BATCH:-128}" --device "$DEVICE" --threads "$THREADS" $EXTRA \
    --out "$RUNS/$model-teacher.pt"
  cp "$RUNS/$model-teacher.json" "$RESULTS/teacher-$model-cifar$SIZE.json"
  echo "== $model: compress + accuracy benchmark"
  plan_args=()
  if [ -n "$plan" ]; then plan_args=(--plan "$plan"); else plan_args=(--planner latency); fi
  python3 bench/accuracy.py --model "$model" --weights "$RUNS/$model-teacher.pt" --data "$DATA" \
    --speedup "$speedup" "${plan_args[@]}" --device "$DEVICE" --threads "$THREADS" \
    --layer-max-steps "${LAYER_MAX_STEPS:-400}" --layer-batch-size "${LAYER_BATCH:-64}" \
    --finetune-epochs "${FINETUNE_EPOCHS:-3}" --finetune-batch-size "${FINETUNE_BATCH:-128}" \
    --build-dir "$RUNS/$model-build" --out "$RESULTS/accuracy-$model-cifar$SIZE.json"
done
