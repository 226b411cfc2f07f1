"""How long ``gym.make("MRINav-v0")`` takes (target <= 1 s from a warm import).

    python benchmarks/bench_make.py --reps 5 --out runs/bench_make.md

Each repetition is a fresh Python process (the installed packages and numba's on-disk cache are warm,
the process is not): it times ``import gymnasium, navgym``, then ``gym.make("MRINav-v0")`` (loading the
MNI152 template and building its tissue label map), then the first ``reset`` (numba loads its cached
renderer), and reports whether pandas or scikit-learn were imported.  Prints the median of each and writes
the markdown table (atomically) to ``--out`` if given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

from navgym.files import write_atomic

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import gymnasium as gym
import navgym
t1 = time.perf_counter()
env = gym.make("MRINav-v0")
t2 = time.perf_counter()
env.reset(seed=0)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "make_s": t2 - t1, "reset_s": t3 - t2,
                  "heavy": sorted(m for m in ("pandas", "sklearn") if m in sys.modules)}))
"""


def measure(reps: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", _CHILD], check=True, capture_output=True, env=env)  # warm the disk caches
    return [json.loads(subprocess.run([sys.executable, "-c", _CHILD], check=True, capture_output=True, text=True,
                                      env=env).stdout) for _ in range(reps)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--reps", type=int, default=5, help="fresh processes measured (median reported)")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    a = p.parse_args(argv)
    if a.reps < 1:
        p.error("--reps must be >= 1")
    runs = measure(a.reps)
    med = {k: statistics.median(r[k] for r in runs) for k in ("import_s", "make_s", "reset_s")}
    heavy = sorted({m for r in runs for m in r["heavy"]})
    table = "\n".join([
        f"`python benchmarks/bench_make.py --reps {a.reps}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; median of {a.reps} fresh processes:",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| `import gymnasium, navgym` | {med['import_s']:.2f} |",
        f"| `gym.make(\"MRINav-v0\")` | {med['make_s']:.2f} |",
        f"| first `reset()` | {med['reset_s']:.2f} |",
        "",
        f"heavy modules imported: {', '.join(heavy) or 'none (no pandas, no scikit-learn)'}",
    ])
    print(table)
    if a.out:
        write_atomic(a.out, table + "\n")


if __name__ == "__main__":
    main()
