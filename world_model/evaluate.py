"""Downstream evaluation report: frozen-feature probes + latent planning for several pretrained
encoders (methods x seeds), with mean +- 95% t-intervals over seeds.

Usage::

    python -m world_model.evaluate --checkpoints runs/navwm_s0/last.pt runs/navwm_s1/last.pt ... \
        --out reports/small
    python -m world_model.evaluate --quick --out reports/quick      # trains tiny models itself

Writes ``<out>/report.md`` (tables, per-baseline verdicts), ``<out>/results.json`` (every raw
number, the exact command, configs, seeds, subjects, versions, timings) and PNG plots.

Protocol: every encoder is evaluated on the same probe-train / probe-val / probe-test
subjects (disjoint; all held out from pretraining), the same slices, the same probe budgets
(:class:`world_model.probes.ProbeConfig`) and the same planning episodes.  A method's number
is the mean over its pretraining seeds; the interval is the two-sided 95% Student-t interval
over seeds (``mean +- t_{0.975, n-1} s / sqrt(n)``).  "Intervals overlap" compares the two
methods' intervals; non-overlap is a conservative sign of a real difference.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

import navgym
from navgym.geometry import unpack_poses
from navgym.subjects import Subject, template_subject

from . import probes
from .eval_data import ProbeDataConfig, ProbeSet, make_probe_set
from .planning import LatentModel, PlanConfig, run_planning

__all__ = ["Entry", "EvalConfig", "evaluate", "split_subjects", "summarize", "compare", "write_report", "main"]

REFERENCE = "navwm"
PRIMARY = {"pose": "center_err_mm", "inverse_dynamics": "action_r2", "landmark_distance": "mae_mm",
           "landmark_hit": "auroc", "hemisphere": "accuracy", "region": "accuracy", "segmentation": "dice_mean",
           "planning": "final_dist_mm"}
SPLITS = ("train", "val", "test")


@dataclass
class Entry:
    """One pretrained encoder: its method name, pretraining seed and the frozen module.

    encoder : module with ``features((B, H, W) uint8 tensor) -> (B, D)`` and optionally
        ``spatial_features(...) -> (B, C, h, w)``.
    latent_model : optional :class:`world_model.planning.LatentModel` for latent planning.
    """

    method: str
    seed: int
    encoder: Any
    checkpoint: str | None = None
    latent_model: LatentModel | None = None


class PixelEncoder(torch.nn.Module):
    """Non-learned baseline: the slice itself, average-pooled.

    ``features``: (B, 256) = 16 x 16 mean-pooled intensities in [0, 1];
    ``spatial_features``: (B, 1, 16, 16) the same grid.
    """

    feature_dim = 256

    def spatial_features(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(frames.float()[:, None] / 255.0, 16)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.spatial_features(frames).flatten(1)


@dataclass(frozen=True)
class EvalConfig:
    """What the report runs (every method gets the same)."""

    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)
    probe: probes.ProbeConfig = field(default_factory=probes.ProbeConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    tasks: tuple[str, ...] = tuple(probes.TASKS) + ("segmentation",)
    probe_kinds: tuple[str, ...] = ("linear", "mlp")
    planning: bool = True
    supervised_seeds: tuple[int, ...] = (0, 1, 2)
    pixel_baseline: bool = True
    finetune: bool = False
    data_seed: int = 1000
    batch_size: int = 256

    def __post_init__(self):
        bad = [t for t in self.tasks if t not in probes.TASKS and t != "segmentation"]
        if bad:
            raise ValueError(f"unknown tasks {bad}; choose from {list(probes.TASKS) + ['segmentation']}")
        bad = [p for p in self.probe_kinds if p not in ("linear", "mlp")]
        if bad:
            raise ValueError(f"unknown probe kinds {bad}; choose linear and/or mlp")

    def to_dict(self) -> dict:
        return {
            "data": self.data.to_dict(), "probe": self.probe.to_dict(), "plan": self.plan.to_dict(),
            "tasks": list(self.tasks), "probe_kinds": list(self.probe_kinds), "planning": self.planning,
            "supervised_seeds": list(self.supervised_seeds), "finetune": self.finetune,
            "pixel_baseline": self.pixel_baseline,
            "data_seed": self.data_seed, "batch_size": self.batch_size,
        }


# --- subjects ---------------------------------------------------------------------------------
def split_subjects(subjects: Sequence[Subject] | dict[str, list[Subject]]) -> dict[str, list[Subject]]:
    """Disjoint probe-train / val / test subjects (~50 / 25 / 25 %, at least one each).

    A dict of splits is returned as is.  With fewer than three subjects every split reuses them
    (then only the slices are held out; the report says so).
    """
    if isinstance(subjects, dict):
        return {s: list(subjects[s]) for s in SPLITS}
    subjects = list(subjects)
    n = len(subjects)
    if n < 3:
        return {s: subjects for s in SPLITS}
    n_val = n_test = max(1, n // 4)
    return {"train": subjects[: n - n_val - n_test], "val": subjects[n - n_val - n_test : n - n_test],
            "test": subjects[n - n_test :]}


def load_eval_subjects(spec: str) -> dict[str, list[Subject]] | list[Subject]:
    """Probe subjects for a ``navgym.subjects.load_subjects`` spec, all held out from pretraining.

    ``template``: the template alone (a list; the splits then share it).  Otherwise
    {"train": the ``val`` split minus its last quarter, "val": that quarter, "test": the ``test``
    split} -- pretraining uses only the ``train`` split.
    """
    from navgym.subjects import load_subjects

    if spec == "template":
        return [template_subject()]
    held = load_subjects(spec, split="val")
    k = max(1, len(held) // 4)
    if len(held) < 2:
        raise ValueError(f"{spec!r} has {len(held)} 'val' subjects; need >= 2 for probe train/val (use more subjects)")
    pool = [held[i] for i in range(len(held))]
    test = load_subjects(spec, split="test")
    return {"train": pool[:-k], "val": pool[-k:], "test": [test[i] for i in range(len(test))]}


# --- features ---------------------------------------------------------------------------------
@torch.no_grad()
def _features(encoder, frames: np.ndarray, batch: int, spatial: bool) -> np.ndarray:
    fn = encoder.spatial_features if spatial else encoder.features
    out = [fn(torch.from_numpy(frames[i : i + batch])).float().cpu().numpy() for i in range(0, len(frames), batch)]
    return np.concatenate(out)


@torch.no_grad()
def _plane_features(encoder, subjects: Sequence[Subject], set_: ProbeSet, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 3D MAE's volume feature map sampled along each slice's plane and its pair's plane
    (``set_.pose`` / ``pair_pose``, subject mm) -> two (N, C, size, size) arrays; one volume map
    per subject serves both."""
    n = len(set_)
    out = None
    for i, subject in enumerate(subjects):
        sel = np.flatnonzero(set_.subject == i)
        if len(sel) == 0:
            continue
        centers, rotations, fovs = unpack_poses(np.concatenate([set_.pose[sel], set_.pair_pose[sel]]))
        f = encoder.plane_spatial_features(subject.volume, centers, rotations, fovs, size).float().cpu().numpy()
        if out is None:
            out = np.zeros((2, n, *f.shape[1:]), np.float32)
        out[0, sel], out[1, sel] = f[: len(sel)], f[len(sel):]
    return out[0], out[1]


def extract(entry: Entry, sets: dict[str, ProbeSet], cfg: EvalConfig,
            subjects: dict[str, list[Subject]] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Frozen features per split: ``frames``, ``pair`` (N, D) and, if the encoder has them, ``spatial``.

    A 3D MAE (``plane_spatial_features``) with ``subjects`` given reads each slice's own volume: its
    3D feature map sampled along the plane (spatial at H/4, pooled to 4x4 for the vector features)."""
    enc = entry.encoder
    if hasattr(enc, "eval"):
        enc.eval()
    want_spatial = "segmentation" in cfg.tasks
    out = {}
    if subjects is not None and getattr(enc, "mae", None) is not None:
        size = sets["train"].frames.shape[1] // 4
        pool = lambda m: torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(m), 4).flatten(1).numpy()  # noqa: E731
        for s in SPLITS:
            spatial, pair = _plane_features(enc, subjects[s], sets[s], size)
            out[s] = {"frames": pool(spatial), "pair": pool(pair)}
            if want_spatial:
                out[s]["spatial"] = spatial
        return out
    has_spatial = hasattr(enc, "spatial_features") and want_spatial
    for s in SPLITS:
        f = {"frames": _features(enc, sets[s].frames, cfg.batch_size, False),
             "pair": _features(enc, sets[s].pair_frames, cfg.batch_size, False)}
        if has_spatial:
            f["spatial"] = _features(enc, sets[s].frames, cfg.batch_size, True)
        out[s] = f
    return out


# --- the run ----------------------------------------------------------------------------------
def evaluate(entries: Sequence[Entry], subjects, cfg: EvalConfig) -> dict:
    """Probes (and planning) for every entry.  Returns ``{"rows": [...], "planning": [...], ...}``.

    A row: method, seed, task, probe, metric, value.  Planning rows add the ``random`` and
    ``stay`` policies once (seed = the planning seed).
    """
    splits = split_subjects(subjects)
    if cfg.pixel_baseline:
        entries = list(entries) + [Entry("pixels", 0, PixelEncoder())]
    t0 = time.perf_counter()
    sets = {s: make_probe_set(splits[s], cfg.data, cfg.data_seed + i) for i, s in enumerate(SPLITS)}
    timings = {"probe_data_s": time.perf_counter() - t0}
    rows, plan_rows, fit_info = [], [], []
    jobs = [(e, t, p) for e in entries for t in cfg.tasks for p in cfg.probe_kinds]
    bar = tqdm(total=len(jobs), desc="probes", disable=None)
    for entry in entries:
        t0 = time.perf_counter()
        feats = extract(entry, sets, cfg, splits)
        timings[f"features/{entry.method}/{entry.seed}_s"] = time.perf_counter() - t0
        for task in cfg.tasks:
            for kind in cfg.probe_kinds:
                t0 = time.perf_counter()
                if task == "segmentation":
                    if "spatial" not in feats["train"]:
                        bar.update()
                        continue
                    metrics, info = probes.run_segmentation(kind, {s: feats[s]["spatial"] for s in SPLITS}, sets, cfg.probe)
                else:
                    metrics, info = probes.run_task(task, kind, feats, sets, cfg.probe)
                dt = time.perf_counter() - t0
                timings[f"probe/{entry.method}/{entry.seed}/{task}/{kind}_s"] = dt
                fit_info.append({"method": entry.method, "seed": entry.seed, "task": task, "probe": kind, **info})
                rows += [dict(method=entry.method, seed=entry.seed, task=task, probe=kind, metric=m, value=v)
                         for m, v in metrics.items()]
                bar.update()
    bar.close()
    e2e = [("supervised", seed, None) for seed in cfg.supervised_seeds]
    e2e += [(e.method, e.seed, e) for e in entries if not isinstance(e.encoder, PixelEncoder)] if cfg.finetune else []
    for method, seed, entry in tqdm(e2e, desc="end-to-end", disable=None):
        t0 = time.perf_counter()
        pcfg = probes.ProbeConfig(**{**cfg.probe.to_dict(), "seed": seed})
        backbone = probes.SmallCNN() if entry is None else copy.deepcopy(entry.encoder).requires_grad_(True)
        metrics, info = probes.run_end_to_end(backbone, list(cfg.tasks), sets, pcfg)
        kind = "e2e" if entry is None else "finetune"
        timings[f"{kind}/{method}/{seed}_s"] = time.perf_counter() - t0
        fit_info.append({"method": method, "seed": seed, "task": "all", "probe": kind, **info})
        rows += [dict(method=method, seed=seed, task=task, probe=kind, metric=m, value=v)
                 for task, ms in metrics.items() for m, v in ms.items()]
    if cfg.planning:
        test = splits["test"]
        for policy, name in (("stay", "no_move"), ("random", "random_actions"), ("oracle", "pose_oracle")):
            plan_rows.append({"method": name, "seed": cfg.plan.seed, **run_planning(test, cfg.plan, policy=policy)})
        for entry in tqdm([e for e in entries if e.latent_model is not None], desc="planning", disable=None):
            t0 = time.perf_counter()
            res = run_planning(test, cfg.plan, model=entry.latent_model)
            timings[f"planning/{entry.method}/{entry.seed}_s"] = time.perf_counter() - t0
            plan_rows.append({"method": entry.method, "seed": entry.seed, **res})
    return {
        "rows": rows, "planning": plan_rows, "fit_info": fit_info, "timings": timings,
        "subjects": {s: [x.subject_id for x in splits[s]] for s in SPLITS},
        "held_out_subjects": not {x.subject_id for x in splits["train"]} & {x.subject_id for x in splits["test"]},
        "entries": [{"method": e.method, "seed": e.seed, "checkpoint": e.checkpoint,
                     "feature_dim": getattr(e.encoder, "feature_dim", None),
                     "spatial": hasattr(e.encoder, "spatial_features"), "planning": e.latent_model is not None}
                    for e in entries],
    }


# --- aggregation ------------------------------------------------------------------------------
PLAN_METRICS = {"success_rate": True, "final_dist_mm": False, "final_angle_deg": False}


def summarize(result: dict) -> list[dict]:
    """Mean +- 95% CI over seeds for every (task, probe, metric, method), planning included."""
    groups: dict[tuple, list[float]] = {}
    for r in result["rows"]:
        groups.setdefault((r["task"], r["probe"], r["metric"], r["method"]), []).append(r["value"])
    for r in result["planning"]:
        for m in PLAN_METRICS:
            groups.setdefault(("planning", "plan", m, r["method"]), []).append(r[m])
    out = []
    for (task, probe, metric, method), vals in groups.items():
        mean, half, n = probes.mean_ci(vals)
        higher = PLAN_METRICS[metric] if task == "planning" else probes.HIGHER_IS_BETTER[metric]
        out.append(dict(task=task, probe=probe, metric=metric, method=method, mean=mean, ci95=half, n=n,
                        values=[float(v) for v in vals], higher_is_better=higher))
    return out


def compare(summary: list[dict], reference: str = REFERENCE) -> list[dict]:
    """Reference method vs every other method on every (task, probe, metric).

    ``advantage`` = how much better the reference is (positive = better, in the metric's units);
    ``overlap`` = whether the two 95% intervals overlap; a single run (the deterministic
    baselines: pixels, no_move, random_actions, pose_oracle) counts as exact (zero width).
    Every probe kind is also compared with the end-to-end supervised upper bound (probe ``e2e``).
    """
    by = {}
    for s in summary:
        by.setdefault((s["task"], s["metric"], s["probe"]), {})[s["method"]] = s
    out = []
    for (task, metric, probe), methods in by.items():
        ref = methods.get(reference)
        if ref is None:
            continue
        others = {**methods, **by.get((task, metric, "e2e"), {})}
        for name, other in others.items():
            if name == reference:
                continue
            sign = 1 if ref["higher_is_better"] else -1
            adv = sign * (ref["mean"] - other["mean"])
            half = lambda x: 0.0 if x["n"] == 1 else x["ci95"]  # noqa: E731  (single runs count as exact)
            lo_r, hi_r = ref["mean"] - half(ref), ref["mean"] + half(ref)
            lo_o, hi_o = other["mean"] - half(other), other["mean"] + half(other)
            finite = np.isfinite([lo_r, hi_r, lo_o, hi_o]).all()
            overlap = bool(not finite or (lo_r <= hi_o and lo_o <= hi_r))
            verdict = ("better" if adv > 0 else "worse" if adv < 0 else "equal") + (
                " (intervals overlap)" if overlap else " (intervals do not overlap)")
            out.append(dict(task=task, metric=metric, probe=probe, baseline=name, advantage=float(adv),
                            overlap=overlap, verdict=verdict, reference=reference))
    return out


# --- report -----------------------------------------------------------------------------------
def _fmt(mean: float, half: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    digits = 3 if abs(mean) < 10 else 1
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if np.isfinite(half) else "")


def _versions() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "navgym": navgym.__version__, "git_commit": commit, "platform": platform.platform(),
            "torch_threads": torch.get_num_threads()}


def _write_atomic(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def _plots(summary: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    main_metric = lambda s: not s["metric"].startswith("dice_") or s["metric"] == "dice_mean"  # noqa: E731
    for probe in sorted({s["probe"] for s in summary} - {"e2e"}):
        items = [s for s in summary if main_metric(s) and (s["probe"] == probe or
                                                            (s["probe"] == "e2e" and probe != "plan"))]
        keys = sorted({(s["task"], s["metric"]) for s in items})
        if not keys:
            continue
        methods = sorted({s["method"] for s in items}, key=lambda m: (m != REFERENCE, m))
        cols = min(4, len(keys))
        rows = -(-len(keys) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
        for ax, (task, metric) in zip(axes.flat, keys):
            cell = {s["method"]: s for s in items if (s["task"], s["metric"]) == (task, metric)}
            names = [m for m in methods if m in cell]
            x = np.arange(len(names))
            means = [cell[m]["mean"] for m in names]
            errs = [cell[m]["ci95"] if np.isfinite(cell[m]["ci95"]) else 0 for m in names]
            ax.bar(x, means, yerr=errs, capsize=3, color=["C3" if m == REFERENCE else "C0" for m in names])
            for i, m in enumerate(names):
                ax.plot(np.full(len(cell[m]["values"]), i), cell[m]["values"], "k.", ms=3)
            arrow = "↑" if cell[names[0]]["higher_is_better"] else "↓"
            ax.set_title(f"{task}\n{metric} {arrow}", fontsize=8)
            ax.set_xticks(x, names, rotation=30, fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        what = "latent planning" if probe == "plan" else f"{probe} probes"
        fig.suptitle(f"{what}: mean ± 95% CI over seeds (dots: seeds)", fontsize=9)
        fig.tight_layout()
        name = f"plot_{probe}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def write_report(result: dict, cfg: EvalConfig, out: Path, command: list[str], extra: dict | None = None) -> dict:
    """Write report.md, results.json and plots into ``out``; returns the JSON document."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    comparisons = compare(summary)
    plots = _plots(summary, out)
    doc = {
        "command": " ".join(command), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(), "config": cfg.to_dict(), **(extra or {}), **result,
        "summary": summary, "comparisons": comparisons, "plots": plots,
    }
    _write_atomic(out / "results.json", json.dumps(doc, indent=1, default=float))
    _write_atomic(out / "report.md", _markdown(doc))
    return doc


def _markdown(doc: dict) -> str:
    summary, comps = doc["summary"], doc["comparisons"]
    methods = sorted({s["method"] for s in summary if s["task"] != "planning"}, key=lambda m: (m != REFERENCE, m))
    seeds = {}
    for e in doc["entries"]:
        seeds.setdefault(e["method"], []).append(e["seed"])
    if doc["config"]["supervised_seeds"]:
        seeds["supervised"] = list(doc["config"]["supervised_seeds"])
    lines = [
        "# Downstream evaluation report", "",
        f"Command: `{doc['command']}`  ",
        f"Created {doc['created_utc']}; git {doc['versions']['git_commit']}; torch {doc['versions']['torch']}; "
        f"wall time {doc['timings'].get('total_s', float('nan')):.0f} s.", "",
        "Methods and pretraining seeds: " + "; ".join(f"**{m}** {sorted(seeds.get(m, []))}" for m in methods) + ".",
        f"Probe subjects (disjoint): train {doc['subjects']['train']}, val {doc['subjects']['val']}, "
        f"test {doc['subjects']['test']}." + ("" if doc["held_out_subjects"] else
                                            " **Only one or two subjects: splits share subjects, only the slices differ.**"),
        f"Slices per subject: {doc['config']['data']['per_subject']} at {doc['config']['data']['size']} px. "
        "Numbers: mean ± 95% Student-t interval over pretraining seeds; single-run baselines (pixels, "
        "planning baselines) have no ± and count as exact in the comparisons.", "",
    ]
    if "mae3d" in methods:
        lines += ["`mae3d` features: its 3D feature map of the subject's whole volume sampled along each slice's "
                  "plane (so it reads the volume and the pose, not only the slice); every other encoder sees the "
                  "slice alone.", ""]
    if doc.get("notes"):
        lines += ["**Notes.** " + " ".join(doc["notes"]), ""]
    kinds = list(doc["config"]["probe_kinds"]) + (["finetune"] if doc["config"]["finetune"] else [])
    sup = {(s["task"], s["metric"]): s for s in summary if s["probe"] == "e2e"}
    for probe in kinds:
        cols = [m for m in methods if m != "supervised"] + (["supervised (e2e)"] if sup else [])
        title = "fine-tuned end to end" if probe == "finetune" else f"{probe} probes on frozen features"
        lines += [f"## {title}", "", "| task | metric | " + " | ".join(cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        keys = sorted({(s["task"], s["metric"]) for s in summary if s["probe"] == probe})
        for task, metric in keys:
            cell = {s["method"]: s for s in summary if (s["task"], s["metric"], s["probe"]) == (task, metric, probe)}
            if (task, metric) in sup:
                cell["supervised (e2e)"] = sup[task, metric]
            arrow = "↑" if next(iter(cell.values()))["higher_is_better"] else "↓"
            lines.append(f"| {task} | {metric} {arrow} | " + " | ".join(
                _fmt(cell[m]["mean"], cell[m]["ci95"]) if m in cell else "–" for m in cols) + " |")
        lines.append("")
    if sup:
        lines += ["`supervised (e2e)`: a small CNN trained from scratch on the probe-train labels of all tasks "
                  f"jointly (seeds {doc['config']['supervised_seeds']}, {doc['config']['probe']['e2e_epochs']} "
                  "epochs): a reference for what these labels teach with this budget, not a strict upper bound. "
                  "`pixels`: 16×16 average-pooled intensities (no learning).", ""]
    plan = [s for s in summary if s["task"] == "planning"]
    if plan:
        pm = sorted({s["method"] for s in plan}, key=lambda m: (m != REFERENCE, m))
        c = doc["config"]["plan"]
        lines += ["## Latent planning (CEM in latent space, executed in the real env)", "",
                  f"{c['episodes']} episodes on the test subjects; goal = start + {c['goal_steps']} random actions; "
                  f"{c['steps']} steps; success = centre ≤ {c['success_mm']} mm and normal ≤ {c['success_deg']}°. "
                  "`no_move` = the start error, `random_actions` = uniform random actions (zoom 0), "
                  "`pose_oracle` = the same CEM with a perfect model of the true pose (the planner's ceiling).", "",
                  "| metric | " + " | ".join(pm) + " |", "|---|" + "---|" * len(pm)]
        for metric, higher in PLAN_METRICS.items():
            cell = {s["method"]: s for s in plan if s["metric"] == metric}
            lines.append(f"| {metric} {'↑' if higher else '↓'} | " + " | ".join(
                _fmt(cell[m]["mean"], cell[m]["ci95"]) if m in cell else "–" for m in pm) + " |")
        lines.append("")
    lines += [f"## Does {REFERENCE} beat each baseline?", ""]
    if not comps:
        lines += [f"No {REFERENCE} entries: no comparison.", ""]
    else:
        wins = sum(c["advantage"] > 0 for c in comps)
        clear = sum(c["advantage"] > 0 and not c["overlap"] for c in comps)
        lost = sum(c["advantage"] < 0 and not c["overlap"] for c in comps)
        lines += [f"Over {len(comps)} (task, metric, probe, baseline) comparisons {REFERENCE} is better in {wins}, "
                  f"better with non-overlapping intervals in {clear}, and worse with non-overlapping intervals in "
                  f"{lost}. Advantage = how much better {REFERENCE} is (metric units; negative = worse).", "",
                  ]
        head = {(c["task"], c["baseline"]): c for c in comps if PRIMARY.get(c["task"]) == c["metric"]
                and c["probe"] in ("linear", "plan")}
        tasks = [t for t in PRIMARY if any(k[0] == t for k in head)]
        bases = sorted({b for _, b in head})
        if head:
            lines += [f"Headline (linear probes; planning): advantage of {REFERENCE} on each task's main metric; "
                      "✓ = intervals do not overlap.", "",
                      "| baseline | " + " | ".join(f"{t} ({PRIMARY[t]})" for t in tasks) + " |",
                      "|---|" + "---|" * len(tasks)]
            for b in bases:
                lines.append(f"| {b} | " + " | ".join(
                    (f"{head[t, b]['advantage']:+.3g}" + ("" if head[t, b]["overlap"] else " ✓"))
                    if (t, b) in head else "–" for t in tasks) + " |")
            lines.append("")
        lines += ["All comparisons:", "", "| task | metric | probe | baseline | advantage | verdict |",
                  "|---|---|---|---|---|---|"]
        for c in sorted(comps, key=lambda c: (c["task"], c["metric"], c["probe"], c["baseline"])):
            if c["metric"].startswith("dice_") and c["metric"] != "dice_mean":
                continue
            lines.append(f"| {c['task']} | {c['metric']} | {c['probe']} | {c['baseline']} | "
                         f"{c['advantage']:+.3g} | {c['verdict']} |")
        lines.append("")
    lines += ["Plots: " + ", ".join(f"![{p}]({p})" for p in doc["plots"]), "",
              "Raw numbers, configs, subjects, versions and timings: `results.json`.", ""]
    return "\n".join(lines)


# --- quick mode -------------------------------------------------------------------------------
QUICK_METHODS = ("navwm", "shuffled", "random")
QUICK_SEEDS = (0, 1)
QUICK_STEPS = 40
QUICK_CONFIG = EvalConfig(
    data=ProbeDataConfig(per_subject=60),
    probe=probes.ProbeConfig(mlp_epochs=15, seg_epochs=4, e2e_epochs=3, lbfgs_iters=50),
    plan=PlanConfig(episodes=6, steps=4, population=32, elites=4, iterations=2),
    supervised_seeds=(0, 1),
)


def quick_entries(workdir: Path, threads: int = 2) -> tuple[list[Entry], dict]:
    """Train ``QUICK_METHODS`` x ``QUICK_SEEDS`` tiny world models for ``QUICK_STEPS`` steps with the
    world-model trainer's Python API and load them (the pipeline check behind ``--quick``)."""
    from .config import as_dict, make_config
    from .train import train

    entries, runs = [], []
    for method in QUICK_METHODS:
        for seed in QUICK_SEEDS:
            model_cfg, train_cfg = make_config(
                "tiny", method=method, seed=seed, steps=QUICK_STEPS, batch=8, out=str(Path(workdir) / f"{method}_s{seed}"),
                eval_every=QUICK_STEPS, ckpt_every=QUICK_STEPS, log_every=QUICK_STEPS, threads=threads,
            )
            t0 = time.perf_counter()
            summary = train(model_cfg, train_cfg, progress=False)
            runs.append({"config": as_dict(model_cfg, train_cfg), "seconds": time.perf_counter() - t0,
                         **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}})
            entries.append(load_entry(summary["checkpoint"]))
    return entries, {"quick_training": runs}


# --- CLI --------------------------------------------------------------------------------------
_SPEC = re.compile(r"^(?P<method>[A-Za-z0-9_]+):(?P<seed>\d+)=(?P<path>.+)$")
_RANDOM = re.compile(r"^random:(?P<seed>\d+)$")


def load_entry(spec: str) -> Entry:
    """A checkpoint path (its stored config names method and seed), ``METHOD:SEED=path``, or
    ``random:SEED`` (the navwm architecture, untrained, ``torch.manual_seed(SEED)``)."""
    from . import load_encoder  # the world-model package's one representation entry point

    r = _RANDOM.match(spec)
    if r:
        return _entry_for("random", int(r["seed"]), spec, load_encoder("random", seed=int(r["seed"])))
    m = _SPEC.match(spec)
    path = m["path"] if m else spec
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint {path}")
    encoder = load_encoder(path)
    method = m["method"] if m else getattr(encoder, "method", None)
    seed = int(m["seed"]) if m else getattr(encoder, "seed", None)
    if method is None or seed is None:
        raise ValueError(f"cannot tell the method/seed of {path}; pass it as METHOD:SEED={path}")
    return _entry_for(method, int(seed), path, encoder)


def image_size(encoder) -> int | None:
    """The slice size (pixels) an encoder was trained on, if it says (``cfg.size`` or ``image_size``)."""
    size = getattr(encoder, "image_size", None) or getattr(getattr(encoder, "cfg", None), "size", None)
    return int(size) if size else None


@torch.no_grad()
def _entry_for(method: str, seed: int, path, encoder) -> Entry:
    """An Entry; the encoder doubles as the latent model when ``encode``/``predict`` work on it."""
    latent = None
    if hasattr(encoder, "encode") and hasattr(encoder, "predict"):
        size = image_size(encoder) or 64
        try:
            encoder.predict(encoder.encode(torch.zeros(1, size, size, dtype=torch.uint8))[:, None], torch.zeros(1, 1, 7))
            latent = encoder
        except TypeError:  # a method without slice latents or dynamics (tokenizer, mae3d)
            pass
    return Entry(method=method, seed=seed, encoder=encoder, checkpoint=str(path), latent_model=latent)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m world_model.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", nargs="*", default=[], help="checkpoint paths or METHOD:SEED=path")
    p.add_argument("--out", required=True, help="report folder, e.g. reports/small")
    p.add_argument("--subjects", default="synthetic:40", help="a navgym.subjects.load_subjects spec: probe "
                   "train/val subjects from its 'val' split, test subjects from its 'test' split; or 'template'")
    p.add_argument("--per-subject", type=int, default=None, help="probe slices per subject")
    p.add_argument("--size", type=int, default=None, help="slice pixels (default: the data config's)")
    p.add_argument("--tasks", nargs="*", default=None)
    p.add_argument("--probes", nargs="*", default=None, choices=["linear", "mlp"])
    p.add_argument("--no-planning", action="store_true")
    p.add_argument("--supervised-seeds", type=int, nargs="*", default=None,
                   help="seeds of the supervised upper bound (none: skip it)")
    p.add_argument("--finetune", action="store_true", help="also fine-tune every encoder end to end")
    p.add_argument("--episodes", type=int, default=None, help="planning episodes")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--quick", action="store_true", help="train tiny models for a few steps and run everything small")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    command = ["python", "-m", "world_model.evaluate"] + list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        cfg = QUICK_CONFIG
        entries, extra = quick_entries(Path(args.out) / "checkpoints", args.threads)
    else:
        cfg, entries, extra = EvalConfig(), [load_entry(s) for s in args.checkpoints], {}
    sizes = {image_size(e.encoder) for e in entries} - {None}
    if len(sizes) > 1 and not args.size:
        raise SystemExit(f"the encoders were trained on different slice sizes {sorted(sizes)}; evaluate them apart")
    size = args.size or (sizes.pop() if sizes else None) or cfg.data.size[0]
    data = replace(cfg.data, per_subject=args.per_subject or cfg.data.per_subject, size=size)
    plan = replace(cfg.plan, size=size, episodes=args.episodes or cfg.plan.episodes)
    cfg = replace(cfg, data=data, plan=plan, tasks=tuple(args.tasks) if args.tasks else cfg.tasks,
                  probe_kinds=tuple(args.probes) if args.probes else cfg.probe_kinds,
                  planning=cfg.planning and not args.no_planning,
                  supervised_seeds=cfg.supervised_seeds if args.supervised_seeds is None else tuple(args.supervised_seeds),
                  finetune=cfg.finetune or args.finetune)
    if not entries and not (cfg.pixel_baseline or cfg.supervised_seeds):
        raise SystemExit("nothing to evaluate: give --checkpoints (or --quick)")
    subjects = load_eval_subjects(args.subjects)
    result = evaluate(entries, subjects, cfg)
    result["timings"]["total_s"] = time.perf_counter() - t_start
    doc = write_report(result, cfg, Path(args.out), command, extra)
    print(f"wrote {args.out}/report.md, results.json, {len(doc['plots'])} plots "
          f"in {result['timings']['total_s']:.0f} s")
    return doc


if __name__ == "__main__":
    main()
