#!/usr/bin/env bash
# The far-jump pretraining comparison (docs/world_model.md, "Pretraining v3"): every method x 3 seeds at
# equal frames per run, then the evaluation protocol of reports/eval_v2 (linear probes; 250 probe-train
# slices per subject, 6,000 in all, to fit the CPU budget) with the prediction-quality table.   bash benchmarks/wm_jump.sh [FRAMES] [OUT]     (defaults: 24000 reports/wm_jump)
# Frames per step: batch x window (8) for the clip methods, batch x (jump_context + 1) (5) for the jump
# methods (the view after the jump counts as a frame).  Resumable: finished runs are skipped.
# Labels come from each checkpoint (TrainConfig.label: navjump with --jump-target latent is navjump_latent).
# Environment: SEEDS ("0 1 2"), CONCURRENCY (2), RUNS (runs/wm_jump_<frames>), STAGES ("train eval"),
# ONLY (names of RECIPES to train, default all; the evaluation takes every finished run).
set -euo pipefail
frames=${1:-24000}; out=${2:-reports/wm_jump}
SEEDS=${SEEDS:-0 1 2}; CONCURRENCY=${CONCURRENCY:-2}; RUNS=${RUNS:-runs/wm_jump_$frames}; STAGES=${STAGES:-train eval}
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
mkdir -p "$RUNS"
# name method extra-flags frames-per-step
RECIPES="navjump navjump - 80
shuffled_navjump shuffled_navjump - 80
noaction_navjump noaction_navjump - 80
navjump_latent navjump --jump-target=latent 80
relpose relpose - 80
tokenizer tokenizer - 128
mae2d mae2d - 128
navwm navwm - 128"
ONLY=${ONLY:-$(echo "$RECIPES" | cut -d' ' -f1)}
jobs() { for s in $SEEDS; do echo "$RECIPES" | while read -r name method extra per; do
  if [[ " $(echo $ONLY) " == *" $name "* ]]; then echo "$name $method $extra $(( (frames + per / 2) / per )) $s"; fi
  done; done; }
train_one() {  # NAME METHOD EXTRA STEPS SEED
  local dir=$RUNS/$1_s$5 extra=$3; [ "$extra" = - ] && extra=
  if python -c "import json,sys; sys.exit(0 if json.load(open('$dir/summary.json'))['step'] >= $4 else 1)" 2>/dev/null; then
    echo "done already: $dir"; return 0; fi
  python -m world_model.train --method "$2" $extra --seed "$5" --steps "$4" --threads 1 --out "$dir" \
    --eval-every 100000 --ckpt-every 100 > "$dir.log" 2>&1 && echo "$(date -u +%H:%M:%S) trained $dir" || { echo "failed: $dir"; return 1; }
}
export -f train_one; export RUNS
if [[ " $STAGES " == *" train "* ]]; then
  jobs | xargs -P "$CONCURRENCY" -L 1 bash -c 'train_one "$@"' _
fi
if [[ " $STAGES " == *" eval "* ]]; then
  ckpts=(random_init:0 random_init:1 random_init:2)
  for s in $SEEDS; do echo "$RECIPES" | while read -r name method _ _; do
    [ -f "$RUNS/${name}_s$s/last.pt" ] && echo "$RUNS/${name}_s$s/last.pt"; done; done > "$RUNS/checkpoints.txt"
  mapfile -t more < "$RUNS/checkpoints.txt"
  python -m world_model.evaluation --checkpoints "${ckpts[@]}" "${more[@]}" --out "$out" \
    --tasks pose landmark_distance landmark_hit region --probes linear --n-labels --budget 0.3 --no-planning --threads 1 \
    --train-per-subject 250
fi
