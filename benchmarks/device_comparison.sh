#!/usr/bin/env bash
# The whole world-model comparison in one call on a lent GPU (docs/world_model.md, "One process, one loop").
#
#   bash benchmarks/device_comparison.sh prepare         here, once: the wheels the device's Python lacks -> .whl/
#                                                        (git-ignored through .git/info/exclude)
#   bash benchmarks/device_comparison.sh run [SECONDS [OPTIONS]]
#                                                        on the device, in one call that carries ".whl": installs
#                                                        them, runs `python3 -m world_model.comparison --seconds
#                                                        SECONDS OPTIONS` (default 450 s, every method x 3 seeds at
#                                                        the capable size) and leaves $OUT/wm_capable.tgz (the
#                                                        report folder) and $OUT/log.txt
#
# The device's copy has no git history: pass the commit, e.g. `GIT_COMMIT=$(git rev-parse --short HEAD)` typed
# into the device command here (the report records it).
# The same script on the CPU first (the install, the driver end to end at --quick, the tarball):
#   OUT=/tmp/device_check bash benchmarks/device_comparison.sh run 300 --quick
#
# Then: tar xzf wm_capable.tgz -C reports/ (rename the folder for the device), commit it, and regenerate the
# README's tables (python benchmarks/readme_tables.py).
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=(gymnasium farama-notifications nibabel nilearn)  # the rest of what world_model needs is on the device
case "${1:-}" in
  prepare)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
    pinned=$(python -c 'import importlib.metadata as m, sys; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' \
      "${wheels[@]}")  # the versions installed here, which the tests ran with
    rm -rf .whl
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl $pinned
    ls -l .whl
    ;;
  run)
    : "${OUT:?OUT is the output folder the device tool sets}"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
    { nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi"; } | tee "$OUT/log.txt"
    rm -rf /tmp/wm_capable
    python3 -m world_model.comparison --seconds "${2:-450}" --out /tmp/wm_capable "${@:3}" 2>&1 | tee -a "$OUT/log.txt"
    tar czf "$OUT/wm_capable.tgz" -C /tmp wm_capable  # one file: the tool brings back at most 8
    ;;
  *)
    echo "usage: bash $0 prepare | run [SECONDS [OPTIONS]]" >&2
    exit 2
    ;;
esac
