"""The evaluation run: every encoder through the same probes, fine-tuning, clip probes and planning.

:func:`evaluate_encoders` returns rows (``method, seed, task, probe, n_labels, metric, value``) plus
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
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch

from navgym.configs import to_dict
from navgym.deprecation import warn_deprecated
from navgym.files import write_json_atomic

from ..encoders import PooledPixels
from .data import PROBE_SPLITS, ProbeData, ProbeDataConfig
from .encoders import POOLED_PIXELS, EncoderEntry, clip_features, frozen_features, has_clip_features
from .finetune import REFERENCE_ARCHS, FinetuneConfig, label_order, reference_backbone, run_end_to_end
from .planning import PlanConfig, run_planning
from .probes import CLIP_TASKS, FRAME_TASKS, PROBE_TASKS, ProbeConfig, mean_baseline, run_attentive_probe, \
    run_linear_probes

__all__ = ["EvalConfig", "evaluate_encoders", "scratch_entries", "Progress"]


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

    def record(self) -> dict:
        """The settings as results.json and the cache keys record them."""
        return {"data": to_dict(self.data), "probe": to_dict(self.probe), "finetune": to_dict(self.finetune_cfg),
                "plan": to_dict(self.plan), "tasks": list(self.tasks), "probes": list(self.probes),
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
    untrained entry yet, that architecture (and model size) untrained with the same seeds
    (``random_init`` is the dynamics family's; tokenizer, mae2d and mae3d get ``<method>_init``)."""
    from world_model import load_encoder

    have = {e.method for e in entries}
    dynamic = {e.method for e in entries if getattr(e.encoder, "dynamics", None) is not None}
    out = []
    for method in sorted(have):
        if method in dynamic:
            arch, name = "random_init", "random_init"
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


def _part(rows=(), info=(), timings=None, **extra) -> dict:
    """A unit's result as cached: rows, fit info and timings (s)."""
    return {"rows": list(rows), "info": list(info), "timings": dict(timings or {}), **extra}


class _Parts:
    """Finished units of work (an encoder's frozen probes, its fine-tuning, a reference seed,
    planning) stored as JSON under ``folder``, keyed by what determines them, so an interrupted or
    extended run redoes only what is missing.  The key is the shared fingerprint (config, data)
    plus the unit's own identity; the config fields that only some units read (the reference's
    network and seeds, the linear probe's label counts) are in those units' identities instead."""

    UNIT_FIELDS = ("reference_arch", "reference_seeds", "linear_n_labels")

    def __init__(self, folder, cfg: EvalConfig, data: dict[str, ProbeData], shard: tuple[int, int] | None = None,
                 cached_only: bool = False):
        self.folder = Path(folder) if folder else None
        self.shard, self.cached_only, self.count, self.missing = shard, cached_only, 0, []
        self.bar = None  # a progress bar moved once per unit
        if (shard is not None or cached_only) and self.folder is None:
            raise ValueError("evaluate_encoders(shard=..., cached_only=...) needs parts_dir (the units' cache)")
        config = {k: v for k, v in cfg.record().items() if k not in self.UNIT_FIELDS}
        fingerprint = {"config": config, "data": {s: data[s].subject_ids for s in PROBE_SPLITS},
                       "n": {s: len(data[s].slices) for s in PROBE_SPLITS},
                       "frames": hashlib.sha256(data["test"].slices.frames[:64].tobytes()).hexdigest()}
        self.base = json.dumps(fingerprint, sort_keys=True, default=str)

    def run(self, unit: str, identity: str, compute: Callable[[], dict]) -> dict | None:
        """The unit's part (computed or cached); None when it belongs to another shard or, with
        ``cached_only``, is not cached (then listed in ``missing``)."""
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


def _weights_identity(e: EncoderEntry) -> str:
    """What determines an encoder's numbers: its method, seed and weights."""
    h = hashlib.sha256(f"{e.method}:{e.seed}:{type(e.encoder).__name__}".encode())
    if hasattr(e.encoder, "state_dict"):
        for k, v in e.encoder.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class _Probe:
    """What every unit reads: the probe slices and clips per split (clips None when not probed), the
    subjects (None: no 3D MAE volumes, no planning), the config and the device."""

    sets: dict
    clips: dict | None
    subjects: dict | None
    cfg: EvalConfig
    device: torch.device | str


def _probe_inputs(data: dict[str, ProbeData], cfg: EvalConfig, subjects, device) -> _Probe:
    clips = ({s: data[s].clips for s in PROBE_SPLITS}
             if cfg.clips and all(data[s].clips is not None for s in PROBE_SPLITS) else None)
    return _Probe({s: data[s].slices for s in PROBE_SPLITS}, clips, subjects, cfg, device)


def _mean_rows(p: _Probe) -> list[dict]:
    """The constant-prediction baseline of every frame and clip task (computed once, exact)."""
    rows = [r for task in p.cfg.tasks for r in _rows("mean", None, task, "mean",
                                                     mean_baseline(task, p.sets["train"], p.sets["test"]))]
    for task in CLIP_TASKS if p.clips is not None else ():
        rows += _rows("mean", None, f"clip_{task}", "mean", mean_baseline(task, p.clips["train"], p.clips["test"]))
    return rows


def _linear_part(e: EncoderEntry, feats: dict, p: _Probe, shuffled_control: bool) -> dict:
    """The frozen linear probe on all probe-train labels (and the shuffled-label control), then on
    the first N labels for each ``linear_n_labels``."""
    cfg, rows, info, t0 = p.cfg, [], [], time.perf_counter()
    fits = run_linear_probes(cfg.tasks, feats, p.sets, cfg.probe, p.device, shuffled_control=shuffled_control)
    seconds = time.perf_counter() - t0
    for task in cfg.tasks:
        m, fit = fits[task, False]
        rows += _rows(e.method, e.seed, task, "linear", m)
        info.append({"method": e.method, "seed": e.seed, "task": task, "probe": "linear", **fit,
                     "batch_seconds": seconds})
        if (task, True) in fits:
            rows += _rows(e.method, e.seed, task, "linear_shuffled_labels", fits[task, True][0])
    for n in (n for n in cfg.linear_n_labels if n < len(p.sets["train"])):
        t1 = time.perf_counter()
        order = label_order(len(p.sets["train"]), cfg.finetune_cfg.label_seed)[:n]
        few = {**p.sets, "train": p.sets["train"].subset(order)}
        chosen = torch.as_tensor(order, device=p.device)
        few_feats = {**feats, "train": {k: v[chosen] for k, v in feats["train"].items() if k != "spatial"}}
        fits = run_linear_probes(cfg.tasks, few_feats, few, cfg.probe, p.device)
        seconds = time.perf_counter() - t1
        for task in cfg.tasks:
            m, fit = fits[task, False]
            rows += _rows(e.method, e.seed, task, "linear_n", m, n_labels=n)
            info.append({"method": e.method, "seed": e.seed, "task": task, "probe": "linear_n", "n_labels": n,
                         **fit, "batch_seconds": seconds})
    return _part(rows, info, {f"linear/{e.method}/{e.seed}_s": time.perf_counter() - t0})


def _attentive_part(e: EncoderEntry, feats: dict, p: _Probe) -> dict:
    """The attentive probe on the spatial feature maps (frame tasks only)."""
    t0 = time.perf_counter()
    frame_tasks = [t for t in p.cfg.tasks if t in FRAME_TASKS]
    ms, fit = run_attentive_probe(frame_tasks, {s: feats[s]["spatial"] for s in PROBE_SPLITS}, p.sets, p.cfg.probe,
                                  p.device)
    rows = [r for task, m in ms.items() for r in _rows(e.method, e.seed, task, "attentive", m)]
    return _part(rows, [{"method": e.method, "seed": e.seed, "task": "all", "probe": "attentive", **fit}],
                 {f"attentive/{e.method}/{e.seed}_s": time.perf_counter() - t0})


def _clip_part(e: EncoderEntry, p: _Probe) -> dict:
    """The linear probe on clip features (pose and landmarks of a clip's last slice)."""
    t0 = time.perf_counter()
    cf = {s: {"frames": clip_features(e.encoder, p.clips[s], device=p.device, on_device=True)} for s in PROBE_SPLITS}
    fits = run_linear_probes(CLIP_TASKS, cf, p.clips, p.cfg.probe, p.device)
    rows = [r for task in CLIP_TASKS for r in _rows(e.method, e.seed, f"clip_{task}", "linear", fits[task, False][0])]
    info = {"method": e.method, "seed": e.seed, "task": "clips", "probe": "linear",
            "clip_features": "clip_features" if has_clip_features(e.encoder) else "per-frame + actions"}
    return _part(rows, [info], {f"clips/{e.method}/{e.seed}_s": time.perf_counter() - t0})


def _merge(*parts: dict) -> dict:
    return _part([r for q in parts for r in q["rows"]], [i for q in parts for i in q["info"]],
                 {k: v for q in parts for k, v in q["timings"].items()})


def _frozen_part(e: EncoderEntry, p: _Probe, shuffled_control: bool) -> dict:
    """One encoder's frozen probes: features once, then the linear, attentive and clip probes."""
    cfg, t0 = p.cfg, time.perf_counter()
    encoder = e.encoder.to(p.device) if hasattr(e.encoder, "to") else e.encoder
    feats = frozen_features(encoder, p.sets, p.subjects, device=p.device, spatial="attentive" in cfg.probes,
                            pairs=any(PROBE_TASKS[t].pair for t in cfg.tasks), on_device=True)
    parts = [_part(timings={f"features/{e.method}/{e.seed}_s": time.perf_counter() - t0})]
    if "linear" in cfg.probes:
        parts.append(_linear_part(e, feats, p, shuffled_control))
    if "attentive" in cfg.probes and any(t in FRAME_TASKS for t in cfg.tasks):
        parts.append(_attentive_part(e, feats, p))
    del feats
    if p.clips is not None and not isinstance(e.encoder, PooledPixels):
        parts.append(_clip_part(e, p))
    return _merge(*parts)


def _reference_part(seed: int, p: _Probe) -> dict:
    """The supervised reference network trained end to end on all probe-train labels."""
    t0, fc = time.perf_counter(), p.cfg.finetune_cfg
    torch.manual_seed(seed)
    ms, fit = run_end_to_end(reference_backbone(p.cfg.reference_arch), p.sets, None, fc.reference_steps,
                             fc.reference_lr, fc, seed, p.device)
    rows = [r for task, m in ms.items()
            for r in _rows("supervised", seed, task, "reference", m, n_labels=len(p.sets["train"]))]
    return _part(rows, [{"method": "supervised", "seed": seed, "task": "all", "probe": "reference", **fit}],
                 {f"reference/{seed}_s": time.perf_counter() - t0})


def _finetune_part(e: EncoderEntry, p: _Probe) -> dict:
    """The encoder fine-tuned end to end with a linear head per task, for each N labels."""
    fc, parts = p.cfg.finetune_cfg, []
    for n in fc.n_labels:
        t0 = time.perf_counter()
        ms, fit = run_end_to_end(e.encoder, p.sets, min(n, len(p.sets["train"])), fc.steps, fc.lr, fc, e.seed,
                                 p.device)
        rows = [r for task, m in ms.items() for r in _rows(e.method, e.seed, task, "finetune", m, n_labels=n)]
        parts.append(_part(rows, [{"method": e.method, "seed": e.seed, "task": "all", "probe": "finetune", **fit}],
                           {f"finetune/{e.method}/{e.seed}/{n}_s": time.perf_counter() - t0}))
    return _merge(*parts)


def _plan_part(name: str, p: _Probe, policy: str = "cem", model=None) -> dict:
    """Latent planning on the test subjects: a baseline ``policy`` or CEM with a latent ``model``
    (:func:`~.planning.run_planning`; the planner works on the CPU)."""
    t0 = time.perf_counter()
    if model is not None and hasattr(model, "to"):
        model = model.to("cpu")
    result = run_planning(p.subjects["test"], p.cfg.plan, policy=policy, model=model)
    return _part(timings={f"planning/{name}_s": time.perf_counter() - t0}, result=result)


PLANNING_BASELINES = (("stay", "no_move"), ("random", "random_actions"), ("true_pose", "true_pose_model"))


def _planning_units(entries: Sequence[EncoderEntry]) -> list[tuple[str, str, str, int | None, Callable]]:
    """(unit, identity, method, seed, compute(p)) of the planning baselines (seed None: the plan's
    seed) and of each entry with a latent model."""
    units = [(f"planning/{name}", "", name, None, partial(_plan_part, name, policy=policy))
             for policy, name in PLANNING_BASELINES]
    units += [(f"planning/{e.method}_s{e.seed}", _weights_identity(e), e.method, e.seed,
               partial(_plan_part, f"{e.method}/{e.seed}", model=e.latent_model))
              for e in entries if e.latent_model is not None]
    return units


def evaluate_encoders(entries: Sequence[EncoderEntry], data: dict[str, ProbeData], cfg: EvalConfig,
                      subjects: dict | None = None, device="cpu", log: Callable[[str], None] = lambda m: None,
                      parts_dir=None, shard: tuple[int, int] | None = None, cached_only: bool = False) -> dict:
    """Run the whole protocol.  ``data``: {split: ProbeData}; ``subjects``: {split: subjects}
    (the 3D MAE's volume features and planning need them).  ``parts_dir``: where finished units
    are kept (resume; see :class:`_Parts`).  ``shard=(i, k)``: compute only every k-th unit from
    the i-th into ``parts_dir`` (k processes with the same arguments share the work; a run without
    ``shard`` then assembles the report from the cache).  ``cached_only``: compute nothing, use the
    cached units and list the others in ``missing_units`` (a time-boxed run's report).  Returns rows,
    fit info, timings.

    Units run in a fixed order (the shards' split depends on it): reference seeds first (the
    longest), then each encoder's frozen probes seed by seed (a time-boxed run that stops early
    lacks whole seeds, not whole methods), fine-tuning, planning."""
    from tqdm.auto import tqdm

    p = _probe_inputs(data, cfg, subjects, device)
    scratch = scratch_entries(entries) if cfg.random_twins else []
    entries = list(entries) + scratch
    frozen = sorted(entries + ([EncoderEntry(POOLED_PIXELS, 0, PooledPixels())] if cfg.pixel_baseline else []),
                    key=lambda e: e.seed)
    tuned = sorted(entries, key=lambda e: e.seed) if cfg.finetune else []
    planning = _planning_units(entries) if cfg.planning and subjects is not None else []
    control = next((e.method for e in entries if e.method == "random_init"), entries[0].method if entries else None)
    # a terminal gets a bar over the units with an ETA (tqdm hides it elsewhere: logs get ``log``'s lines)
    parts = _Parts(parts_dir, cfg, data, shard, cached_only)
    parts.bar = tqdm(total=len(cfg.reference_seeds) + len(frozen) + len(tuned) + len(planning), unit="unit",
                     desc="evaluate", disable=None)

    done = _probe_units(parts, p, frozen, tuned, control, log)
    plan_parts, plan_rows = _planning_runs(parts, planning, p, log)
    parts.bar.close()
    found = _merge(*[q for q in done + plan_parts if q is not None])
    plan_metrics = ("success_rate", "final_dist_mm", "final_angle_deg")
    rows = _mean_rows(p) + found["rows"] + [
        r for q in plan_rows for r in _rows(q["method"], q["seed"], "planning", "plan", {k: q[k] for k in plan_metrics})]
    return _result(rows, found, plan_rows, p, data, entries, frozen, scratch, control, parts.missing)


def _probe_units(parts: _Parts, p: _Probe, frozen, tuned, control, log) -> list[dict | None]:
    """The reference seeds, each encoder's frozen probes and its fine-tuning, in that order (computed,
    cached or None: another shard's or, with ``cached_only``, missing)."""
    cfg, done = p.cfg, []
    for seed in cfg.reference_seeds:
        done.append(parts.run(f"reference/s{seed}", cfg.reference_arch, partial(_reference_part, seed, p)))
        if done[-1] is not None:
            log(f"supervised reference seed {seed}")
    for i, e in enumerate(frozen):
        shuffled = cfg.shuffled_control and e.method == control
        identity = json.dumps([_weights_identity(e), shuffled, list(cfg.linear_n_labels)])
        done.append(parts.run(f"frozen/{e.method}_s{e.seed}", identity, partial(_frozen_part, e, p, shuffled)))
        if done[-1] is not None:
            log(f"frozen probes {i + 1}/{len(frozen)}: {e.method} seed {e.seed}")
    for i, e in enumerate(tuned):
        done.append(parts.run(f"finetune/{e.method}_s{e.seed}", _weights_identity(e), partial(_finetune_part, e, p)))
        if done[-1] is not None:
            log(f"fine-tuning {i + 1}/{len(tuned)}: {e.method} seed {e.seed} (N = {list(cfg.finetune_cfg.n_labels)})")
    return done


def _planning_runs(parts: _Parts, planning: list, p: _Probe, log) -> tuple[list[dict], list[dict]]:
    """The planning units (:func:`_planning_units`): their parts (timings only) and one summary row
    per planner (``method``, ``seed`` and :func:`~.planning.run_planning`'s figures)."""
    done, plan_rows = [], []
    for unit, identity, method, seed, compute in planning:
        part = parts.run(unit, identity, partial(compute, p=p))
        if part is not None:
            done.append(_part(timings=part["timings"]))
            plan_rows.append({"method": method, "seed": p.cfg.plan.seed if seed is None else seed, **part["result"]})
    if planning:
        log("planning done")
    return done, plan_rows


def _result(rows, found, plan_rows, p: _Probe, data, entries, frozen, scratch, control, missing) -> dict:
    """The run's document: rows, planning, fit info, timings, data and encoder provenance."""
    return {
        "rows": rows, "planning": plan_rows, "fit_info": found["info"], "timings": found["timings"],
        "subjects": {s: list(data[s].subject_ids) for s in PROBE_SPLITS},
        "sizes": {s: {"slices": len(p.sets[s]), "clips": 0 if p.clips is None else len(p.clips[s])}
                  for s in PROBE_SPLITS},
        "held_out_subjects": not set(data["train"].subject_ids) & set(data["test"].subject_ids),
        "entries": [{"method": e.method, "seed": e.seed, "checkpoint": e.checkpoint,
                     "feature_dim": getattr(e.encoder, "feature_dim", None), "planning": e.latent_model is not None,
                     "clip_features": has_clip_features(e.encoder)} for e in frozen],
        "scratch_entries": [{"method": e.method, "seed": e.seed, "checkpoint": e.checkpoint} for e in scratch],
        "control_method": control,
        "missing_units": missing,
        "prediction": [{"method": e.method, "seed": e.seed, "table": e.encoder.prediction_quality} for e in entries
                       if getattr(e.encoder, "prediction_quality", None)],
    }


def evaluate(*args, **kwargs) -> dict:
    """Deprecated name of :func:`evaluate_encoders` (kept one release)."""
    warn_deprecated("world_model.evaluation.pipeline.evaluate", "evaluate_encoders")
    return evaluate_encoders(*args, **kwargs)
