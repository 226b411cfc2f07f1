"""Trained agents on another start distribution of their target (e.g. AC-near agents on AC-far starts).

    python benchmarks/agents_transfer.py --runs runs/bench_final_ac/runs/AC-near/ppo-pixels --preset AC-far \
        --out reports/agents_far/AC-far.json

Plays every ``seed*/model.zip`` under ``--runs`` deterministically on the held-out subjects of ``--preset``
(:func:`agents.play.play`, fixed starts, ``--episodes`` per eval env) beside the oracle and random actions on
the same episodes, and writes per-seed figures and the mean over seeds with a 95 % t-interval (JSON, and a
markdown table beside it).  No training: this measures transfer, not agents trained on the far starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from agents.benchmark import BOUNDS, success_mean_ci
from agents.play import play
from navgym.configs import add_deprecated_alias
from navgym.files import write_atomic, write_json_atomic


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python benchmarks/agents_transfer.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="folder of seed*/model.zip (a benchmark's runs/PRESET/LABEL)")
    p.add_argument("--preset", default=None, help="preset to play, with the agents' target (e.g. AC-far); required")
    add_deprecated_alias(p, "--task", "--preset")
    p.add_argument("--episodes", type=int, default=2, help="episodes per held-out env (default: %(default)s)")
    p.add_argument("--out", required=True, help="results (.json; a .md table is written beside it)")
    a = p.parse_args(argv)
    if a.preset is None:
        p.error("the following arguments are required: --preset")
    models = sorted(Path(a.runs).glob("seed*/model.zip"))
    if not models:
        p.error(f"--runs: no seed*/model.zip under {a.runs}")
    seeds = []
    for m in models:
        r = play(m, a.episodes, preset=a.preset, bounds=True, device="cpu")
        seeds.append({"model": str(m), "agent": r["metrics"], **r["bounds"]})
        print(f"{m}: success {r['metrics']['success_rate']:.0%}, median final error {r['metrics']['median_error']:.1f}")
    out = {"preset": a.preset, "runs": a.runs, "seeds": seeds,
           "command": "python benchmarks/agents_transfer.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    rows = ["| policy | success (mean over seeds, 95% t) | median final error (mean over seeds) |", "|---|---|---|"]
    for name in ("agent", *BOUNDS):
        m, lo, hi = success_mean_ci([s[name]["success_rate"] for s in seeds])
        err = float(np.mean([s[name]["median_error"] for s in seeds]))
        out[name] = {"success_mean": m, "success_ci": [lo, hi], "median_error_mean": err}
        rows.append(f"| {name} | {100 * m:.0f}% [{100 * lo:.0f}%, {100 * hi:.0f}%] | {err:.1f} |")
    write_json_atomic(a.out, out)
    md = [f"# {a.preset}: the agents of `{a.runs}`", "",
          f"Command: `{out['command']}`", "", f"{len(seeds)} seeds x {seeds[0]['agent']['episodes']} held-out episodes "
          "(the same starts for every policy); no training on these starts.", "", *rows, ""]
    write_atomic(str(Path(a.out).with_suffix(".md")), "\n".join(md))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
