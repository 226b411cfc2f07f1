#!/usr/bin/env bash
# The world-model comparison report: pretrain every method x 3 seeds, then evaluate them all.
#   bash benchmarks/wm_report.sh [MODEL_SIZE] [STEPS] [OUT]      (defaults: tiny 600 reports/wm_tiny)
# Two single-threaded trainings run side by side (2 cores); an interrupted run resumes from each
# run's last.pt (finished runs are skipped), so re-running the script continues where it stopped.
set -euo pipefail
config=${1:-tiny}; steps=${2:-600}; out=${3:-reports/wm_$config}
runs=runs/wm_${config}_${steps}
mkdir -p "$runs"
methods="navwm shuffled noaction navwm_joint shuffled_joint noaction_joint tokenizer mae2d mae3d random"
for seed in 0 1 2; do for m in $methods; do echo "$m $seed"; done; done |
  xargs -P 2 -L 1 sh -c 'python -m world_model.train --method "$0" --seed "$1" --model-size '"$config"' --steps '"$steps"' \
      --threads 1 --out '"$runs"'/"$0"_s"$1" > '"$runs"'/"$0"_s"$1".log 2>&1 || { echo "failed: $0 $1"; exit 255; }' \
  2>&1 || exit 1
ckpts=$(for m in $methods; do for seed in 0 1 2; do echo "$runs/${m}_s$seed/last.pt"; done; done)
python -m world_model.evaluate --checkpoints $ckpts --out "$out"
