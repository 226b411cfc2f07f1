"""The linear-probe part of one encoder's frozen unit, the probes of commit ``--before`` against today's
(interleaved, same data and features), with the host read-backs counted and the metrics compared.

    python benchmarks/eval_linear_probes.py --cache runs/eval_cache --n-train 6800 --steps 60 --out /tmp/lin.json

"before" is ``world_model/evaluation/probes.py`` at ``--before`` (git show: one fit per task, float64 Gram per
fit, LBFGS logistic regression); "after" is :func:`world_model.evaluation.probes.run_linear_probes`.  Encoders:
random-init navwm (seed 0, with the shuffled-label control, as the pipeline's control method) and navwm trained
for ``--steps`` steps (tiny size).  Tasks: every frozen task and both clip tasks (default protocol, probe data
of ``world_model.evaluation`` with its default subjects; probe-train cut to the first ``--n-train`` slices).
Feature extraction is not timed (the same code in both).  Prints one line per run; ``--out`` gets the JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import world_model.evaluation.pipeline  # noqa: F401  (the package first: the old module imports its data module)
from world_model.evaluation import probes as P
from world_model.evaluation.data import cached_probe_data, probe_subjects
from world_model.evaluation.encoders import clip_features, frozen_features, load_encoder_entry
from world_model.evaluation.pipeline import EvalConfig

ROOT = Path(__file__).resolve().parents[1]
READS = ("item", "tolist", "cpu", "__float__", "__int__", "__bool__")


def old_probes(commit: str):
    src = subprocess.run(["git", "show", f"{commit}:world_model/evaluation/probes.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "probes_before.py"
    path.write_text(src.replace("from .data import", "from world_model.evaluation.data import"))
    spec = importlib.util.spec_from_file_location("probes_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["probes_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def counted(fn):
    """(result, seconds, host read-backs) of ``fn()``."""
    calls, originals = [0], {n: getattr(torch.Tensor, n) for n in READS}

    def wrap(orig):
        def f(self, *a, **k):
            calls[0] += 1
            return orig(self, *a, **k)
        return f
    for n, orig in originals.items():
        setattr(torch.Tensor, n, wrap(orig))
    t0 = time.perf_counter()
    try:
        res = fn()
    finally:
        for n, orig in originals.items():
            setattr(torch.Tensor, n, orig)
    return res, time.perf_counter() - t0, calls[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--cache", default="runs/eval_cache", help="probe-data cache (world_model.evaluation --cache)")
    ap.add_argument("--n-train", type=int, default=6800, help="probe-train slices used (first N)")
    ap.add_argument("--steps", type=int, default=60, help="training steps of the trained navwm encoder")
    ap.add_argument("--before", default="e6aae77", help="commit of the 'before' probes.py")
    ap.add_argument("--out", default=None, help="JSON results")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    O = old_probes(a.before)
    cfg = EvalConfig()
    data = cached_probe_data(probe_subjects(spec="synthetic:240", n_train=24, n_val=4, n_test=6), cfg.data,
                             cfg.data_seed, a.cache)
    sets = {s: d.slices for s, d in data.items()}
    sets["train"] = sets["train"].subset(np.arange(min(a.n_train, len(sets["train"]))))
    clips = {s: d.clips for s, d in data.items()}

    from world_model.config import make_config
    from world_model.train import train
    mc, tc = make_config("tiny", method="navwm", seed=0, steps=a.steps, batch=8, out=tempfile.mkdtemp(),
                         eval_every=a.steps, ckpt_every=a.steps, log_every=a.steps, threads=1)
    entries = [("random_init", load_encoder_entry("random_init:0")),
               (f"navwm_{a.steps}steps", load_encoder_entry(train(mc, tc, progress=False)["checkpoint"]))]

    def before(f, cf, control):
        out = {}
        for t in P.PROBE_TASKS:
            out[t] = O.run_linear_probe(t, f, sets, O.ProbeConfig())[0]
            if control:
                out[t + "/shuffled"] = O.run_linear_probe(t, f, sets, O.ProbeConfig(), shuffle_labels=True)[0]
        out.update({"clip_" + t: O.run_linear_probe(t, cf, clips, O.ProbeConfig())[0] for t in P.CLIP_TASKS})
        return out

    def after(f, cf, control):
        fits = P.run_linear_probes(list(P.PROBE_TASKS), f, sets, P.ProbeConfig(), shuffled_control=control)
        out = {t + ("/shuffled" if v else ""): m for (t, v), (m, _) in fits.items()}
        out.update({"clip_" + t: m for (t, _), (m, _) in P.run_linear_probes(P.CLIP_TASKS, cf, clips, P.ProbeConfig()).items()})
        return out

    result = {"command": "python " + " ".join(sys.argv), "threads": 1, "n_train": len(sets["train"]),
              "n_val": len(sets["val"]), "n_test": len(sets["test"]), "clips": {k: len(v) for k, v in clips.items()},
              "runs": []}
    for i, (name, e) in enumerate(entries):
        control = name == "random_init"
        f = frozen_features(e.encoder, sets, spatial=False)
        cf = {s: {"frames": clip_features(e.encoder, clips[s])} for s in sets}
        ft = {s: {k: torch.from_numpy(v) for k, v in d.items()} for s, d in f.items()}  # "on the device"
        cft = {s: {"frames": torch.from_numpy(d["frames"])} for s, d in cf.items()}
        runs = [("before", lambda: before(f, cf, control)), ("after", lambda: after(ft, cft, control))]
        for code, fn in (runs if i % 2 == 0 else runs[::-1]):  # interleaved: A B, then B A
            metrics, sec, reads = counted(fn)
            result["runs"].append({"encoder": name, "feature_dim": int(f["train"]["frames"].shape[1]), "code": code,
                                   "seconds": sec, "host_reads": reads, "metrics": metrics})
            print(f"{name} {code}: {sec:.1f} s, {reads} host read-backs", flush=True)
    for name, _ in entries:
        b, af = (next(r for r in result["runs"] if r["encoder"] == name and r["code"] == c) for c in ("before", "after"))
        diff = max(abs(af["metrics"][t][m] - v) for t in b["metrics"] for m, v in b["metrics"][t].items())
        print(f"{name}: largest metric difference after - before {diff:.4f}")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
