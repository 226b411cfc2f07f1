#!/usr/bin/env bash
# The world-model comparison report in one command: every method x 3 seeds pretrained on the same
# number of frames, then evaluated with the evaluation protocol (world_model.evaluate).
#   bash benchmarks/wm_report.sh MODEL_SIZE FRAMES [OUT]      e.g. capable 2000000 reports/wm_capable
# FRAMES per run: the slice methods take steps = FRAMES / (BATCH x window) (window: the model size's);
# mae3d takes the same steps with max(1, round(BATCH x window x size^2 / crop^3)) crops per step, a
# crop^3 crop counting as crop^3 / size^2 slices (equal voxels and pixels: tiny and capable, crop 64 =
# size 64, give 2 crops of 64 slices = 128 slices per step, as 16 clips x 8 frames).  random: 0 steps.
# Several trainings at once (CONCURRENCY; 9 ran on one H200), --device auto, clips rendered on the
# training device (--render auto = device on CUDA, the numba kernel on CPU).  Resumable: a finished run
# (summary.json at the last step) is skipped, an interrupted one resumes from its last.pt; the
# evaluation keeps finished units in its cache (runs/eval_cache), so re-running continues.
# Environment (defaults): CONCURRENCY (1), SEEDS ("0 1 2"), METHODS (all 10), BATCH (16),
# THREADS (torch threads per training, 1), RUNS (runs/wm_<size>_<frames>), DEVICE (auto),
# EVAL_ARGS (world_model.evaluate flags; default eval_v2's "--tasks pose landmark_distance landmark_hit region
# --no-planning" at budget 1; add e.g. "--reference-arch capable"), EVAL_SHARDS (1: K > 1 runs K
# evaluate processes with --shard i/K at once, then the one that writes the report from their cache),
# TRAIN_ARGS (more world_model.train flags for every run, e.g. "--ckpt-every 500"), STAGES ("train eval";
# "eval" evaluates the runs that finished, naming the others), DRY_RUN (1: print the commands only).
# Logs: RUNS/<method>_s<seed>.log, RUNS/eval_shard<i>.log.  A time-boxed GPU session: wm_timebox.py.
set -euo pipefail
size=${1:?usage: wm_report.sh MODEL_SIZE FRAMES [OUT]}; frames=${2:?usage: wm_report.sh MODEL_SIZE FRAMES [OUT]}
out=${3:-reports/wm_${size}}
CONCURRENCY=${CONCURRENCY:-1}; SEEDS=${SEEDS:-0 1 2}; BATCH=${BATCH:-16}; THREADS=${THREADS:-1}
METHODS=${METHODS:-navwm shuffled noaction navwm_joint shuffled_joint noaction_joint tokenizer mae2d mae3d random}
RUNS=${RUNS:-runs/wm_${size}_${frames}}; DEVICE=${DEVICE:-auto}; DRY_RUN=${DRY_RUN:-0}
EVAL_SHARDS=${EVAL_SHARDS:-1}; STAGES=${STAGES:-train eval}; TRAIN_ARGS=${TRAIN_ARGS:-}
EVAL_ARGS=${EVAL_ARGS:---tasks pose landmark_distance landmark_hit region --no-planning}  # eval_v2's protocol, budget 1
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
export OMP_NUM_THREADS=$THREADS NUMBA_NUM_THREADS=$THREADS
plan=$(python - "$size" "$frames" "$BATCH" <<'EOF'
import sys
from world_model.config import MODEL_SIZES
size, frames, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if size not in MODEL_SIZES:
    sys.exit(f"wm_report.sh: MODEL_SIZE must be one of {tuple(MODEL_SIZES)}, got {size!r}")
m = MODEL_SIZES[size]
per_step = batch * m.window
steps = max(1, round(frames / per_step))
crops = max(1, round(per_step * m.size ** 2 / m.crop ** 3))
print(steps, 4 * crops)  # TrainConfig: mae3d volumes per step = batch // 4
EOF
)
read -r steps mae3d_batch <<< "$plan"
echo "wm_report: $size, $frames frames per run = $steps steps x $BATCH clips x window (mae3d: --batch $mae3d_batch);" \
     "runs in $RUNS, report in $out, $CONCURRENCY at once"
[ "$DRY_RUN" = 1 ] || mkdir -p "$RUNS"  # a dry run writes nothing
jobs=$(for s in $SEEDS; do for m in $METHODS; do echo "$m $s"; done; done)
train_one() {  # train_one METHOD SEED
  local m=$1 s=$2 dir=$RUNS/$1_s$2 n=$steps b=$BATCH
  [ "$m" = random ] && n=0
  [ "$m" = mae3d ] && b=$mae3d_batch
  local cmd="python -m world_model.train --method $m --seed $s --model-size $size --steps $n --batch $b --threads $THREADS --device $DEVICE --render auto --out $dir $TRAIN_ARGS"
  if [ "$DRY_RUN" = 1 ]; then echo "$cmd"; return 0; fi
  if python -c "import json,sys; sys.exit(0 if json.load(open('$dir/summary.json'))['step'] >= $n else 1)" 2>/dev/null; then
    echo "done already: $dir"; return 0; fi
  mkdir -p "$dir"
  if nice -n 5 $cmd > "$dir.log" 2>&1; then echo "$(date -u +%H:%M:%S) trained $dir"
  else echo "failed: $dir (see $dir.log)"; return 1; fi
}
finished() {  # finished METHOD SEED: the run reached its steps
  local n=$steps; [ "$1" = random ] && n=0
  python -c "import json,sys; sys.exit(0 if json.load(open('$RUNS/$1_s$2/summary.json'))['step'] >= $n else 1)" 2>/dev/null
}
export -f train_one; export RUNS steps size BATCH THREADS DEVICE DRY_RUN mae3d_batch TRAIN_ARGS
if [[ " $STAGES " == *" train "* ]]; then
  echo "$jobs" | xargs -P "$CONCURRENCY" -L 1 bash -c 'train_one "$0" "$1"' || { echo "some trainings failed"; exit 1; }
fi
[[ " $STAGES " == *" eval "* ]] || exit 0
ckpts=""
for m in $METHODS; do for s in $SEEDS; do
  if [ "$DRY_RUN" = 1 ] || finished "$m" "$s"; then ckpts="$ckpts $RUNS/${m}_s$s/last.pt"
  else echo "not finished, left out of the evaluation: $RUNS/${m}_s$s"; fi
done; done
cmd="python -m world_model.evaluate --checkpoints$ckpts --out $out --device $DEVICE --threads $THREADS $EVAL_ARGS"
if [ "$DRY_RUN" = 1 ]; then echo "$cmd"; exit 0; fi
if [ "$EVAL_SHARDS" -gt 1 ]; then
  for ((i = 0; i < EVAL_SHARDS; i++)); do nice -n 5 $cmd --shard "$i/$EVAL_SHARDS" > "$RUNS/eval_shard$i.log" 2>&1 & done
  wait || true  # a failed shard leaves its units to the final run
  echo "$(date -u +%H:%M:%S) $EVAL_SHARDS evaluation shards done"
fi
nice -n 5 $cmd
