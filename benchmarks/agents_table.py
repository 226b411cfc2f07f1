"""Compact markdown table of RL benchmark reports, for the README and docs (regenerated from the reports).

    python benchmarks/agents_table.py reports/agents_encoders_ac/report.json reports/agents_encoders_ft_ac/report.json

One row per (report, preset, method): success (mean over seeds, 95 % t, and per seed), median final error
(pooled episodes, 95 % bootstrap), steps to 50 % / 80 % held-out success (median over the seeds that got
there, and how many did); rows of frozen encoders on raw (unstandardised) features say so.  ``--methods``
keeps only those methods (bounds included by name).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agents.benchmark import BOUNDS, format_ci, report_presets


def _steps(n: float) -> str:
    return f"{n / 1e6:g}M" if n >= 1e6 and n % 100_000 == 0 else f"{n / 1000:.0f}k"


def _reach(r: dict) -> str:
    return f"{_steps(r['median'])} ({r['reached']} of {r['of']})" if r["median"] is not None else f"never (0 of {r['of']})"


def rows(report: dict, methods: list[str] | None = None) -> list[str]:
    """Markdown rows (without the header) of one benchmark ``report.json``."""
    base = report["config"]["base"]
    steps = base["steps"]
    out = []
    for preset, t in report_presets(report).items():
        for m, d in t["methods"].items():
            if methods and m not in methods:
                continue
            s = d["summary"]
            per_seed = " / ".join(f"{100 * r['final']['success_rate']:.0f}" for r in d["runs"])
            reach = "" if m in BOUNDS else f"{_reach(s['steps_to_50'])} / {_reach(s['steps_to_80'])}"
            frozen = any("encoder" in r and not r["encoder"]["trains"] for r in d["runs"])
            note = ", raw features" if frozen and not base.get("standardize_features", False) else ""
            out.append(f"| {preset} ({_steps(steps)} steps{note}) | {m} | {format_ci(s['success_mean_ci'], pct=True)} ({per_seed}) "
                       f"| {format_ci(s['median_error_ci'], 1)} | {reach} |")
    return out


HEADER = ["| task (steps per seed) | policy | held-out success, mean over seeds [95% t] (per seed) "
          "| median final error [95% bootstrap] | steps to 50% / 80% (seeds that got there) |",
          "|---|---|---|---|---|"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python benchmarks/agents_table.py", description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="benchmark report.json files")
    p.add_argument("--methods", nargs="*", default=None, help="only these methods (default: all)")
    a = p.parse_args(argv)
    lines = list(HEADER)
    for path in a.reports:
        if not Path(path).is_file():
            p.error(f"reports: no such file {path}")
        lines += rows(json.loads(Path(path).read_text()), a.methods)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
