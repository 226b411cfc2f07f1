#!/usr/bin/env bash
# Every world-model method x seeds 0-2 at the tiny size, trained for STEPS steps on 2 CPU cores: one
# training at a time (1 thread, nice), resumable (a finished run, i.e. OUT/summary.json at the last step,
# is skipped; an interrupted one resumes from OUT/last.pt).
#   bash benchmarks/wm_method_runs.sh [STEPS] [ROOT]        (defaults: 200 runs/wm15)
# ROOT/<method>_s<seed>: the default prediction task (--stride 1 --rollout-steps 2; table config "default")
# of navwm, shuffled and noaction, and navwm_joint, tokenizer, mae2d, the joint controls, mae3d;
# ROOT/jump4/...: composed 4-step jumps (--stride 4); ROOT/mixed4_r4/...: strides 1..4 mixed with
# 4-step open-loop targets (--stride 4 --mixed-strides true --rollout-steps 4).
set -uo pipefail
steps=${1:-200}; root=${2:-runs/wm15}
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
[ -f .venv/bin/activate ] && . .venv/bin/activate
run() {  # run OUT METHOD SEED [extra flags]
  out=$1; m=$2; s=$3; shift 3
  if python -c "import json,sys; sys.exit(0 if json.load(open('$out/summary.json'))['step'] >= $steps else 1)" 2>/dev/null; then
    return 0; fi
  mkdir -p "$out"
  nice -n 5 timeout 1800 python -m world_model.train --method "$m" --seed "$s" --model-size tiny --steps "$steps" \
    --threads 1 --out "$out" "$@" > "$out.log" 2>&1 || echo "failed: $out"
  echo "$(date -u +%H:%M:%S) done $out"
}
for s in 0 1 2; do for m in navwm shuffled noaction; do run "$root/${m}_s$s" $m $s; done; done
for s in 0 1 2; do run "$root/navwm_joint_s$s" navwm_joint $s; run "$root/tokenizer_s$s" tokenizer $s; done
for s in 0 1 2; do for m in navwm shuffled noaction; do run "$root/jump4/${m}_s$s" $m $s --stride 4; done; done
for s in 0 1 2; do run "$root/mae2d_s$s" mae2d $s; done
# the joint variant's controls, and mae3d at the same frames (2 crops of 64^3 = 128 slices per step)
for s in 0 1 2; do run "$root/shuffled_joint_s$s" shuffled_joint $s; run "$root/noaction_joint_s$s" noaction_joint $s; done
for s in 0 1 2; do run "$root/mae3d_s$s" mae3d $s --batch 8; done
for s in 0 1 2; do
  for m in navwm shuffled noaction; do run "$root/mixed4_r4/${m}_s$s" $m $s --stride 4 --mixed-strides true --rollout-steps 4; done
done
