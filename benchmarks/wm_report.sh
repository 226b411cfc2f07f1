#!/usr/bin/env bash
# The world-model comparison at a fixed number of frames per run (no deadline planning): a thin
# wrapper of `python -m world_model.comparison` (see its --help; the deadline-driven form is
# `python -m world_model.comparison --seconds 480 --out reports/<name>`).
#   bash benchmarks/wm_report.sh MODEL_SIZE FRAMES [OUT] [more world_model.comparison options]
#   e.g. bash benchmarks/wm_report.sh capable 2000000 reports/wm_capable --seconds 36000 --keep-checkpoints
set -euo pipefail
size=${1:?usage: wm_report.sh MODEL_SIZE FRAMES [OUT] [options]}; frames=${2:?usage: wm_report.sh MODEL_SIZE FRAMES [OUT] [options]}
out=${3:-reports/wm_${size}}
cd "$(dirname "$0")/.."
exec python -m world_model.comparison --model-size "$size" --frames "$frames" --out "$out" --seconds 86400 "${@:4}"
