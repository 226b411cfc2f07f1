"""The evaluation run: every encoder through the same probes, fine-tuning, clip probes and planning.

:func:`evaluate` returns rows (``method, seed, task, probe, n_labels, metric, value``) plus
timings and provenance; :mod:`world_model.evaluation.report` turns them into the report.

Probe names in the rows: ``linear`` / ``attentive`` (frozen), ``linear_shuffled_labels`` (the
control), ``finetune`` (with ``n_labels``), ``reference`` (the supervised reference network on all
labels), ``mean`` (constant prediction; method ``mean``).  Clip tasks are named ``clip_<task>``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from navgym.files import write_json_atomic

from ..encoders import PooledPixels
from .data import PROBE_SPLITS, ProbeData, ProbeDataConfig
from .encoders import POOLED_PIXELS, EncoderEntry, clip_features, frozen_features, has_clip_features
from .finetune import REFERENCE_ARCHS, FinetuneConfig, label_order, reference_backbone, run_end_to_end
from .planning import PlanConfig, run_planning
from .probes import CLIP_TASKS, FRAME_TASKS, PROBE_TASKS, ProbeConfig, mean_baseline, run_attentive_probe, \
    run_linear_probes

__all__ = ["EvalConfig", "evaluate", "scratch_entries", "Progress"]



@dataclass(frozen=True)
class EvalConfig:
    """What the evaluation runs (every encoder gets the same).

    tasks : frozen-probe tasks (``inverse_dynamics`` is linear-only).  probes : frozen probe kinds
    (``linear``, ``attentive``).  finetune : label-efficiency runs.  clips : clip-level probes.
    linear_n_labels : label efficiency of the frozen linear probe: it is also fitted on the first N
    probe-train slices of fine-tuning's permutation, for each N here (rows ``linear_n``).
    reference_seeds : seeds of the supervised reference (empty: none).  reference_arch : its network
    (:func:`~.finetune.reference_backbone`: ``cnn`` or a model size such as ``capable``).  pixel_baseline : add the
    16 x 16 pixel encoder.  shuffled_control : the shuffled-label linear control on the first
    method's encoders.  random_twins : add each architecture from random init with the same seeds
    (:func:`scratch_entries`) when not given.  planning : latent planning.  data_seed : probe data seed.
    """

    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    finetune_cfg: FinetuneConfig = field(default_factory=FinetuneConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    tasks: tuple[str, ...] = tuple(PROBE_TASKS)
    probes: tuple[str, ...] = ("linear", "attentive")
    finetune: bool = True
    linear_n_labels: tuple[int, ...] = ()
    clips: bool = True
    reference_seeds: tuple[int, ...] = (0, 1, 2)
    reference_arch: str = "cnn"
    pixel_baseline: bool = True
    shuffled_control: bool = True
    random_twins: bool = True
    planning: bool = True
    data_seed: int = 1000

    def __post_init__(self):
        bad = [t for t in self.tasks if t not in PROBE_TASKS]
        if bad:
            raise ValueError(f"EvalConfig.tasks: unknown {bad}; choose from {list(PROBE_TASKS)}")
        if any(int(n) < 1 for n in self.linear_n_labels):
            raise ValueError(f"EvalConfig.linear_n_labels: every N must be >= 1, got {list(self.linear_n_labels)}")
        if self.reference_arch not in REFERENCE_ARCHS:
            raise ValueError(f"EvalConfig.reference_arch: {self.reference_arch!r}; choose from {REFERENCE_ARCHS}")
        bad = [p for p in self.probes if p not in ("linear", "attentive")]
        if bad:
            raise ValueError(f"EvalConfig.probes: unknown {bad}; choose linear and/or attentive")

    def scaled(self, budget: float) -> "EvalConfig":
        """Every training budget (attentive probe, fine-tuning, reference) times ``budget``."""
        if not budget > 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        s = lambda n: max(1, int(round(n * budget)))  # noqa: E731
        return replace(
            self, probe=replace(self.probe, attentive_steps=s(self.probe.attentive_steps),
                                eval_every=s(self.probe.eval_every)),
            finetune_cfg=replace(self.finetune_cfg, steps=s(self.finetune_cfg.steps),
                                 eval_every=s(self.finetune_cfg.eval_every),
                                 reference_steps=s(self.finetune_cfg.reference_steps)))

    def to_dict(self) -> dict:
        return {"data": self.data.to_dict(), "probe": self.probe.to_dict(), "finetune": self.finetune_cfg.to_dict(),
                "plan": self.plan.to_dict(), "tasks": list(self.tasks), "probes": list(self.probes),
                "finetune_enabled": self.finetune, "linear_n_labels": list(self.linear_n_labels), "clips": self.clips,
                "reference_seeds": list(self.reference_seeds), "reference_arch": self.reference_arch,
                "pixel_baseline": self.pixel_baseline,
                "shuffled_control": self.shuffled_control, "random_twins": self.random_twins, "planning": self.planning, "data_seed": self.data_seed}


class Progress:
    """Progress lines with elapsed time, printed when stdout is not a terminal (logs, CI) or when
    ``always``; a terminal gets nothing extra (tqdm-free, quiet)."""

    def __init__(self, always: bool = False, stream=None):
        self.t0, self.stream = time.perf_counter(), stream or sys.stdout
        self.on = always or not (hasattr(self.stream, "isatty") and self.stream.isatty())

    def __call__(self, msg: str) -> None:
        if self.on:
            print(f"[evaluate {time.perf_counter() - self.t0:7.1f}s] {msg}", file=self.stream, flush=True)


def scratch_entries(entries: Sequence[EncoderEntry]) -> list[EncoderEntry]:
    """Random-init twins for label efficiency: for each architecture among ``entries`` that has no
    untrained entry yet, that architecture (and model size) untrained with the same seeds (``random``
    is the dynamics family's; tokenizer, mae2d and mae3d get ``<method>_init``)."""
    from world_model import load_encoder

    have = {e.method for e in entries}
    dynamic = {e.method for e in entries if getattr(e.encoder, "dynamics", None) is not None}
    out = []
    for method in sorted(have):
        if method in dynamic:
            arch, name = "random", "random"
        elif method in ("tokenizer", "mae3d", "mae2d"):
            arch, name = method, f"{method}_init"
        else:
            continue
        if name in have or name in {e.method for e in out}:
            continue
        seeds = sorted({e.seed for e in entries if e.method == method})
        model = next(e.encoder.cfg for e in entries if e.method == method)  # the same model size
        out += [EncoderEntry(name, s, load_encoder(arch, seed=s, model=model), checkpoint=f"{arch}:{s}") for s in seeds]
    return out


def _rows(method, seed, task, probe, metrics: dict, n_labels=None) -> list[dict]:
    return [dict(method=method, seed=seed, task=task, probe=probe, n_labels=n_labels, metric=m, value=float(v))
            for m, v in metrics.items()]


class _Parts:
    """Finished units of work (an encoder's frozen probes, its fine-tuning, a reference seed,
    planning) stored as JSON under ``folder``, keyed by what determines them (config, data,
    encoder weights), so an interrupted or extended run redoes only what is missing."""

    def __init__(self, folder, cfg: EvalConfig, data: dict[str, ProbeData], shard: tuple[int, int] | None = None,
                 cached_only: bool = False):
        self.folder = Path(folder) if folder else None
        self.shard, self.cached_only, self.count, self.missing = shard, cached_only, 0, []
        self.bar = None  # a progress bar moved once per unit (set by evaluate)
        if (shard is not None or cached_only) and self.folder is None:
            raise ValueError("evaluate(shard=..., cached_only=...) needs parts_dir (the units' cache)")
        config = cfg.to_dict()
        # which reference network and seeds run changes no other unit (a reference unit's key carries its
        # arch and seed): left out of the shared fingerprint (seeds at their default, so older keys stay)
        del config["reference_arch"]
        del config["linear_n_labels"]  # in the frozen units' identity, so units cached without it keep their keys
        config["reference_seeds"] = list(EvalConfig.reference_seeds)
        fingerprint = {"config": config, "data": {s: data[s].subject_ids for s in PROBE_SPLITS},
                       "n": {s: len(data[s].slices) for s in PROBE_SPLITS},
                       "frames": hashlib.sha256(data["test"].slices.frames[:64].tobytes()).hexdigest()}
        self.base = json.dumps(fingerprint, sort_keys=True, default=str)

    def run(self, unit: str, identity: str, compute: Callable[[], dict]) -> dict | None:
        """The unit's part (computed or cached); None when it belongs to another shard."""
        if self.bar is not None:
            self.bar.set_postfix_str(unit)
        try:
            return self._run(unit, identity, compute)
        finally:
            if self.bar is not None:
                self.bar.update()

    def _run(self, unit: str, identity: str, compute: Callable[[], dict]) -> dict | None:
        self.count += 1
        if self.shard is not None and (self.count - 1) % self.shard[1] != self.shard[0]:
            return None
        if self.folder is None:
            return compute()
        key = hashlib.sha256((self.base + unit + identity).encode()).hexdigest()[:16]
        path = self.folder / f"{unit.replace('/', '_')}_{key}.json"
        if path.exists():
            return json.loads(path.read_text())
        if self.cached_only:
            self.missing.append(unit)
            return None
        out = compute()
        write_json_atomic(path, out)
        return out


def _on_cpu(model):
    return model.to("cpu") if hasattr(model, "to") else model


def _identity(e: EncoderEntry) -> str:
    """What determines an encoder's numbers: its method, seed and weights."""
    h = hashlib.sha256(f"{e.method}:{e.seed}:{type(e.encoder).__name__}".encode())
    if hasattr(e.encoder, "state_dict"):
        for k, v in e.encoder.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def evaluate(entries: Sequence[EncoderEntry], data: dict[str, ProbeData], cfg: EvalConfig, subjects: dict | None = None,
             device="cpu", log: Callable[[str], None] = lambda m: None, parts_dir=None,
             shard: tuple[int, int] | None = None, cached_only: bool = False) -> dict:
    """Run the whole protocol.  ``data``: {split: ProbeData}; ``subjects``: {split: subjects}
    (the 3D MAE's volume features and planning need them).  ``parts_dir``: where finished units
    are kept (resume; see :class:`_Parts`).  ``shard=(i, k)``: compute only every k-th unit from
    the i-th into ``parts_dir`` (k processes with the same arguments share the work; a run without
    ``shard`` then assembles the report from the cache).  ``cached_only``: compute nothing, use the
    cached units and list the others in ``missing_units`` (a time-boxed run's report).  Returns rows,
    fit info, timings."""
    sets = {s: data[s].slices for s in PROBE_SPLITS}
    clips = {s: data[s].clips for s in PROBE_SPLITS} if cfg.clips and all(data[s].clips is not None for s in PROBE_SPLITS) else None
    scratch = scratch_entries(entries) if cfg.random_twins else []
    entries = list(entries) + scratch
    frozen = entries + ([EncoderEntry(POOLED_PIXELS, 0, PooledPixels())] if cfg.pixel_baseline else [])
    # seed by seed (stable): a time-boxed run that stops early lacks whole seeds, not whole methods
    frozen = sorted(frozen, key=lambda e: e.seed)
    rows, info, timings = [], [], {}
    parts = _Parts(parts_dir, cfg, data, shard, cached_only)
    planned = 3 + sum(e.latent_model is not None for e in entries) if cfg.planning and subjects is not None else 0
    from tqdm.auto import tqdm

    # a terminal gets a bar over the units with an ETA (tqdm hides it elsewhere: logs get ``log``'s lines)
    parts.bar = tqdm(total=len(cfg.reference_seeds) + len(frozen) + (len(entries) if cfg.finetune else 0) + planned,
                     unit="unit", desc="evaluate", disable=None)
    tick = time.perf_counter

    def add(part: dict | None) -> bool:
        """Collect a unit's part; False for a unit of another shard."""
        if part is None:
            return False
        rows.extend(part["rows"])
        info.extend(part["info"])
        timings.update(part["timings"])
        return True

    for task in cfg.tasks:
        rows += _rows("mean", None, task, "mean", mean_baseline(task, sets["train"], sets["test"]))
    if clips is not None:
        for task in CLIP_TASKS:
            rows += _rows("mean", None, f"clip_{task}", "mean", mean_baseline(task, clips["train"], clips["test"]))
    control = next((e.method for e in entries if e.method == "random"), entries[0].method if entries else None)

    def frozen_part(e: EncoderEntry) -> dict:
        rows, info, timings = [], [], {}
        t0 = tick()
        feats = frozen_features(e.encoder.to(device) if hasattr(e.encoder, "to") else e.encoder, sets, subjects,
                                device=device, spatial="attentive" in cfg.probes,
                                pairs=any(PROBE_TASKS[t].pair for t in cfg.tasks), on_device=True)
        timings[f"features/{e.method}/{e.seed}_s"] = tick() - t0
        if "linear" in cfg.probes:
            t0 = tick()
            fits = run_linear_probes(cfg.tasks, feats, sets, cfg.probe, device,
                                     shuffled_control=cfg.shuffled_control and e.method == control)
            seconds = tick() - t0
            for task in cfg.tasks:
                m, fit = fits[task, False]
                rows += _rows(e.method, e.seed, task, "linear", m)
                info.append({"method": e.method, "seed": e.seed, "task": task, "probe": "linear", **fit,
                             "batch_seconds": seconds})
                if (task, True) in fits:
                    rows += _rows(e.method, e.seed, task, "linear_shuffled_labels", fits[task, True][0])
            for n in (n for n in cfg.linear_n_labels if n < len(sets["train"])):
                t1 = tick()
                order = label_order(len(sets["train"]), cfg.finetune_cfg.label_seed)[:n]
                few = {**sets, "train": sets["train"].subset(order)}
                rows_n = torch.as_tensor(order, device=device)
                few_feats = {**feats, "train": {k: v[rows_n] for k, v in feats["train"].items() if k != "spatial"}}
                fits = run_linear_probes(cfg.tasks, few_feats, few, cfg.probe, device)
                seconds = tick() - t1
                for task in cfg.tasks:
                    m, fit = fits[task, False]
                    rows += _rows(e.method, e.seed, task, "linear_n", m, n_labels=n)
                    info.append({"method": e.method, "seed": e.seed, "task": task, "probe": "linear_n", "n_labels": n,
                                 **fit, "batch_seconds": seconds})
            timings[f"linear/{e.method}/{e.seed}_s"] = tick() - t0
        frame_tasks = [t for t in cfg.tasks if t in FRAME_TASKS]
        if "attentive" in cfg.probes and frame_tasks:
            t0 = tick()
            ms, fit = run_attentive_probe(frame_tasks, {s: feats[s]["spatial"] for s in PROBE_SPLITS}, sets, cfg.probe,
                                          device)
            for task, m in ms.items():
                rows += _rows(e.method, e.seed, task, "attentive", m)
            info.append({"method": e.method, "seed": e.seed, "task": "all", "probe": "attentive", **fit})
            timings[f"attentive/{e.method}/{e.seed}_s"] = tick() - t0
        del feats
        if clips is not None and not isinstance(e.encoder, PooledPixels):
            t0 = tick()
            cf = {s: {"frames": clip_features(e.encoder, clips[s], device=device, on_device=True)}
                  for s in PROBE_SPLITS}
            fits = run_linear_probes(CLIP_TASKS, cf, clips, cfg.probe, device)
            for task in CLIP_TASKS:
                rows += _rows(e.method, e.seed, f"clip_{task}", "linear", fits[task, False][0])
            info.append({"method": e.method, "seed": e.seed, "task": "clips", "probe": "linear",
                         "clip_features": "clip_features" if has_clip_features(e.encoder) else "per-frame + actions"})
            timings[f"clips/{e.method}/{e.seed}_s"] = tick() - t0
        return {"rows": rows, "info": info, "timings": timings}

    fc = cfg.finetune_cfg

    def reference_part(seed: int) -> dict:
        t0 = tick()
        torch.manual_seed(seed)
        ms, fit = run_end_to_end(reference_backbone(cfg.reference_arch), sets, None, fc.reference_steps, fc.reference_lr, fc, seed, device)
        rows = [r for task, m in ms.items()
                for r in _rows("supervised", seed, task, "reference", m, n_labels=len(sets["train"]))]
        return {"rows": rows, "info": [{"method": "supervised", "seed": seed, "task": "all", "probe": "reference", **fit}],
                "timings": {f"reference/{seed}_s": tick() - t0}}

    for seed in cfg.reference_seeds:  # first: the longest units, so shards start them first
        arch = "" if cfg.reference_arch == "cnn" else cfg.reference_arch  # "": the units cached before the choice
        if add(parts.run(f"reference/s{seed}", arch, lambda: reference_part(seed))):
            log(f"supervised reference seed {seed}")

    for i, e in enumerate(frozen):
        few = f"|linear_n={list(cfg.linear_n_labels)}" if cfg.linear_n_labels else ""
        if add(parts.run(f"frozen/{e.method}_s{e.seed}", _identity(e) + str(e.method == control) + few,
                         lambda: frozen_part(e))):
            log(f"frozen probes {i + 1}/{len(frozen)}: {e.method} seed {e.seed}")

    def finetune_part(e: EncoderEntry) -> dict:
        rows, info, timings = [], [], {}
        for n in fc.n_labels:
            t0 = tick()
            ms, fit = run_end_to_end(e.encoder, sets, min(n, len(sets["train"])), fc.steps, fc.lr, fc, e.seed, device)
            for task, m in ms.items():
                rows += _rows(e.method, e.seed, task, "finetune", m, n_labels=n)
            info.append({"method": e.method, "seed": e.seed, "task": "all", "probe": "finetune", **fit})
            timings[f"finetune/{e.method}/{e.seed}/{n}_s"] = tick() - t0
        return {"rows": rows, "info": info, "timings": timings}

    tuned = sorted(entries, key=lambda e: e.seed) if cfg.finetune else []
    for i, e in enumerate(tuned):
        if add(parts.run(f"finetune/{e.method}_s{e.seed}", _identity(e), lambda: finetune_part(e))):
            log(f"fine-tuning {i + 1}/{len(tuned)}: {e.method} seed {e.seed} (N = {list(fc.n_labels)})")

    plan_rows = []
    if cfg.planning and subjects is not None:
        test = subjects["test"]

        def plan_part(name: str, **kw) -> dict:
            t0 = tick()
            res = run_planning(test, cfg.plan, **kw)
            return {"rows": [], "info": [], "timings": {f"planning/{name}_s": tick() - t0}, "result": res}

        for policy, name in (("stay", "no_move"), ("random", "random_actions"), ("true_pose", "true_pose_model")):
            part = parts.run(f"planning/{name}", "", lambda: plan_part(name, policy=policy))
            if part is None:
                continue
            timings.update(part["timings"])
            plan_rows.append({"method": name, "seed": cfg.plan.seed, **part["result"]})
        for e in [e for e in entries if e.latent_model is not None]:
            part = parts.run(f"planning/{e.method}_s{e.seed}", _identity(e),  # the planner works on the CPU
                             lambda: plan_part(f"{e.method}/{e.seed}", model=_on_cpu(e.latent_model)))
            if part is None:
                continue
            timings.update(part["timings"])
            plan_rows.append({"method": e.method, "seed": e.seed, **part["result"]})
        for r in plan_rows:
            rows += _rows(r["method"], r["seed"], "planning", "plan",
                          {k: r[k] for k in ("success_rate", "final_dist_mm", "final_angle_deg")})
        log("planning done")
    parts.bar.close()

    return {
        "rows": rows, "planning": plan_rows, "fit_info": info, "timings": timings,
        "subjects": {s: list(data[s].subject_ids) for s in PROBE_SPLITS},
        "sizes": {s: {"slices": len(sets[s]), "clips": 0 if clips is None else len(clips[s])} for s in PROBE_SPLITS},
        "held_out_subjects": not set(data["train"].subject_ids) & set(data["test"].subject_ids),
        "entries": [{"method": e.method, "seed": e.seed, "checkpoint": e.checkpoint,
                     "feature_dim": getattr(e.encoder, "feature_dim", None), "planning": e.latent_model is not None,
                     "clip_features": has_clip_features(e.encoder)} for e in frozen],
        "scratch_entries": [{"method": e.method, "seed": e.seed, "checkpoint": e.checkpoint}
                            for e in scratch],
        "control_method": control,
        "missing_units": parts.missing,
        "prediction": [{"method": e.method, "seed": e.seed, "table": e.encoder.prediction_quality} for e in entries
                       if getattr(e.encoder, "prediction_quality", None)],
    }
