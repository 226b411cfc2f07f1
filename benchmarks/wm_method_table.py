"""Tables of the world-model method runs (benchmarks/wm_method_runs.sh): held-out controllability, reconstruction
and collapse diagnostics from each run's summary.json, and the clip probe (benchmarks/wm_clip_probe.py),
as mean ± 95 % Student-t half-width over seeds (n = seeds found).

    python benchmarks/wm_method_table.py [--root runs/wm15] [--probe runs/wm15/clip_probe.json]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
from collections import defaultdict

from world_model.evaluation.stats import mean_ci

SUMMARY = ("eval/delta_psnr", "eval/psnr_true", "eval/recon_psnr", "eval/latent_std_mean", "eval/latent_eff_rank",
           "eval/collapsed")


def fmt(values, digits=2) -> str:
    m, h, n = mean_ci(values)
    return f"{m:.{digits}f} ± {h:.{digits}f} (n={n})" if n > 1 else (f"{m:.{digits}f} (n=1)" if n else "–")


def group_of(path: str, root: str) -> tuple[str, str]:
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    config = parts[0] if len(parts) > 2 else "default"
    method = re.sub(r"_s\d+$", "", parts[-2])
    return config, method


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/wm15")
    p.add_argument("--probe", default="runs/wm15/clip_probe.json")
    a = p.parse_args(argv)
    runs = defaultdict(list)
    for f in sorted(glob.glob(os.path.join(a.root, "**", "summary.json"), recursive=True)):
        runs[group_of(f, a.root)].append(json.load(open(f)))
    print("| config | method | ΔPSNR (dB) | one-step PSNR | recon PSNR | latent std | eff. rank | collapsed |")
    print("|---|---|---|---|---|---|---|---|")
    for (config, method), rows in sorted(runs.items()):
        cells = [fmt([r.get(k, float("nan")) for r in rows], 3 if "delta" in k else 2) for k in SUMMARY]
        print(f"| {config} | {method} | " + " | ".join(cells) + " |")
    if os.path.exists(a.probe):
        probe = json.load(open(a.probe))
        groups = defaultdict(list)
        for r in probe["rows"]:
            groups[group_of(r["checkpoint"], a.root)].append(r)
        print(f"\nClip probe ({probe['fit_clips']} fit clips, train subjects; {probe['test_clips']} test clips, "
              f"held-out test subjects): centre mm / normal °")
        print("| config | method | context (clip_features) | static + actions | single frame (features) "
              "| tokenizer part alone |")
        print("|---|---|---|---|---|---|")
        for (config, method), rows in sorted(groups.items()):
            cells = [fmt([r[k]["centre_mm"] for r in rows]) + " / " + fmt([r[k]["normal_deg"] for r in rows], 1)
                     for k in ("context", "static", "single", "tokenizer")]
            print(f"| {config} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
