"""The whole comparison in one process: every method x seed trained in one loop, evaluated, reported.

    python -m world_model.comparison --seconds 480 --out reports/<name>           # one GPU, deadline-driven
    python -m world_model.comparison --frames 2000000 --model-size capable --out reports/wm_capable   # fixed frames
    python -m world_model.comparison --quick --out /tmp/cmp                       # CPU, tiny, minutes
    python -m world_model.comparison --rewrite --out reports/<name>               # rebuild from results.json

Phases (each one's seconds in ``results.json["comparison"]["phases"]``):

1. ``setup``: the probe data rendered (``world_model.evaluation --prepare-data``) and the untrained
   ``random_init`` runs written;
2. ``eval_calibration``: those ``random_init`` encoders evaluated (in this process, with the same
   protocol as the final evaluation, whose cache keeps their units): seconds per encoder;
3. ``calibration``: a few timed steps of every run and data stream (two-stage methods in each stage);
4. ``plan``: the steps S per run that fit what is left of ``--seconds`` after the predicted
   evaluation (x ``--safety``), the same for every run (``--frames`` fixes them instead);
5. ``train``: :func:`train_all` steps every run in one loop; runs stop together at the training
   deadline if the plan was wrong (their step count is recorded; frames stay equal);
6. ``evaluate``: ``world_model.evaluation`` on every run's ``last.pt``, in this process;
7. ``report``: ``report.md`` and plots (the evaluation's), ``training.md`` (this module's: frames per
   run, throughput, phases), ``results.json`` holding both (``--rewrite`` rebuilds both from it).

Equal frames: every run takes S steps of ``--batch`` clips of the model size's window; mae3d takes S
steps of max(1, round(batch x window x size^2 / crop^3)) crops (a crop^3 crop counting as
crop^3 / size^2 slices); the jump methods (navjump, its controls, relpose) take S steps of ``--batch``
clips of window - 1 context frames and the view after one far jump (``jump_context`` = window - 1).
One loop (:func:`train_all`): methods with the same ``Method.stream`` and seed get the same batch objects; the stage that ``Method.stage1_group`` says is shared (the
tokenizer stage of navwm / shuffled / noaction and their joint variants) is trained once per seed
and copied (weights and optimiser state; bit-identical to training it separately, tested).  The
methods are every registered one (``world_model.config.METHODS``) unless ``--methods`` says.
Checkpoints go to ``--runs`` (default a temporary folder, removed at the end unless
``--keep-checkpoints``), never to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from navgym.configs import add_options, config_field, options_config, to_dict
from navgym.files import write_atomic
from navgym.provenance import versions

from .config import JUMP_METHODS, METHODS, MODEL_SIZES, ModelConfig, TrainConfig, make_config, method_id
from .device import device_field, resolve_device
from .evaluation.report import VERSIONS_OF
from .methods import data_stream
from .train import Run, eval_clips

__all__ = ["run_specs", "frames_per_run", "train_all", "calibrate", "plan_steps", "main", "write_training_report"]

EVAL_ARGS = ("--tasks pose landmark_distance landmark_hit region --probes linear --n-labels "
             "--linear-n-labels 256 2048 --no-planning")
QUICK = dict(model_size="tiny", seconds=420.0, max_frames=6400, seeds=[0], batch=8, threads=1,
             overrides="size=32 window=4 crop=32",
             subjects="synthetic:8", eval_args="--subjects synthetic:40 --train-subjects 3 --val-subjects 1 "
             "--test-subjects 1 --train-per-subject 60 --eval-per-subject 30 --tasks pose region --probes linear "
             "--n-labels --no-planning --no-clips --reference-seeds", calibration_steps=2)


def _log(t0: float):
    return lambda msg: print(f"[comparison {time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --- what is trained ----------------------------------------------------------------------------
def mae3d_crops(model: ModelConfig, batch: int) -> int:
    """Crops per mae3d step holding as many voxels as ``batch`` clips hold pixels."""
    return max(1, round(batch * model.window * model.size ** 2 / model.crop ** 3))


def run_specs(model_size: str, methods, seeds, steps: int, batch: int, runs: Path, overrides: dict | None = None,
              **train) -> list[tuple[ModelConfig, TrainConfig]]:
    """(ModelConfig, TrainConfig) of every method x seed at equal frames (see the module docstring)."""
    specs = []
    for seed in seeds:
        for method in methods:
            mc, _ = make_config(model_size, **(overrides or {}))
            b = 4 * mae3d_crops(mc, batch) if method == "mae3d" else batch  # TrainConfig: mae3d volumes = batch // 4
            jump = {"jump_context": mc.window - 1} if method in JUMP_METHODS else {}  # window - 1 frames + the jump
            specs.append(make_config(model_size, **{**(overrides or {}), **train, **jump}, method=method, seed=seed,
                                     steps=steps, batch=b, out=str(Path(runs) / f"{method}_s{seed}")))
    return specs


def frames_per_run(model: ModelConfig, train: TrainConfig, steps: int | None = None) -> int:
    """Slices a run sees (mae3d: crops x crop^3 / size^2)."""
    steps = train.total_steps if steps is None else steps
    if train.method == "mae3d":
        return round(steps * max(1, train.batch // 4) * model.crop ** 3 / model.size ** 2)
    if train.method in JUMP_METHODS:  # the context and the view after the jump
        return steps * train.batch * (train.jump_context + 1)
    return steps * train.batch * model.window


# --- the one loop -------------------------------------------------------------------------------
def _same_but(cfg: TrainConfig, *names) -> tuple:
    return tuple((k, v) for k, v in sorted(to_dict(cfg).items()) if k not in names)


def _equal_states(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def build_runs(specs, device, log=lambda m: None, tensorboard: bool = False) -> list[Run]:
    return [Run(mc, tc, device, log=log, tensorboard=tensorboard) for mc, tc in specs]


def share_plan(runs: list[Run]) -> tuple[list, dict]:
    """(stream key of each run (None: no data), {follower index: leader index} for the shared stage 1)."""
    names = [data_stream(r.model) for r in runs]
    keys = [None if n is None else (n, r.model_cfg, _same_but(r.cfg, "method", "out")) for n, r in zip(names, runs)]
    leaders, follows = {}, {}
    for i, r in enumerate(runs):
        group = r.model.stage1_group
        if group is None or r.start > 0:
            continue
        key = (group, keys[i], r.model.stage1_steps)
        if key not in leaders:
            leaders[key] = i
        elif _equal_states(runs[leaders[key]].model, r.model):  # the same initial weights: checked, not assumed
            follows[i] = leaders[key]
    return keys, follows


def _open_streams(runs: list[Run], keys: list, device: torch.device) -> dict:
    """One batch stream per stream key (:func:`share_plan`), opened by its first run with steps left to take."""
    streams = {}
    for key, r in zip(keys, runs):
        if key is not None and key not in streams and r.start < r.steps:
            streams[key] = r.model.batches(0, 1, 0, device)
    return streams


def train_all(specs, device: torch.device, log=lambda m: None, deadline: float | None = None, progress: bool = True,
              tensorboard: bool = False) -> dict:
    """Train every (ModelConfig, TrainConfig) run in one loop on shared data (see the module docstring).

    deadline : time.time() after which every run stops at the same step (checked every ``log_every``
    steps of the first run).  Writes each run's ``last.pt`` and ``summary.json``; returns
    {"runs": [summary + method, seed, frames, shared_stage1], "steps", "stopped_early", "seconds",
    "data_seconds", "frames_per_s"}."""
    runs = build_runs(specs, device, log, tensorboard)
    starts = {r.start for r in runs if r.start < r.steps}
    if starts - {0}:
        raise ValueError(f"runs under {Path(specs[0][1].out).parent} were interrupted part-way "
                         f"(steps {sorted(starts)}); "
                         "the comparison does not resume: use a new --runs folder")
    keys, follows = share_plan(runs)
    steps = max((r.steps for r in runs if r.start < r.steps), default=0)
    streams = _open_streams(runs, keys, device)
    every = min((r.cfg.log_every for r in runs), default=20)
    log(f"training {len(runs)} runs for {steps} steps in one loop: {len(streams)} data streams, stage 1 shared by "
        f"{len(follows)} runs")
    bar = None
    if progress and steps:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"{len(runs)} runs", dynamic_ncols=True)
    t0 = t_flush = time.perf_counter()
    t_data = t_data_all = 0.0
    done = 0
    for step in range(steps):
        for i, lead in follows.items():  # the shared stage ends: take the leader's state before it steps on
            if step == runs[i].model.stage1_steps:
                runs[i].copy_from(runs[lead])
        t1 = time.perf_counter()
        batches = {k: {n: v.to(device, non_blocking=True) for n, v in next(it).items()} for k, it in streams.items()}
        t_data += time.perf_counter() - t1
        for i, r in enumerate(runs):
            if step >= r.steps or (i in follows and step < r.model.stage1_steps):
                continue
            r.step(batches[keys[i]], step)
        done = step + 1
        if bar is not None:
            bar.update(1)
        if done % every == 0 or done == steps:
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # once per log interval
            now = time.perf_counter()
            for i, r in enumerate(runs):
                if r.steps > 0 and not (i in follows and done <= r.model.stage1_steps):
                    r.flush(done, now - t_flush, t_data)
            t_data_all += t_data
            t_data, t_flush = 0.0, now
            if bar is not None:
                bar.set_postfix(loss=f"{runs[0].last.get('loss/total', float('nan')):.4f}")
            if deadline is not None and time.time() > deadline and done < steps:
                log(f"training deadline: every run stops at step {done} of {steps}")
                break
    for i, lead in follows.items():  # stopped inside the shared stage: the followers are the leader
        if done <= runs[i].model.stage1_steps:
            runs[i].copy_from(runs[lead])
            runs[i].last = dict(runs[lead].last)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    clips, out = {}, []
    for i, ((mc, tc), r) in enumerate(zip(specs, runs)):
        if r.start >= r.steps:  # finished before (or untrained): keep it as it is
            at = max(r.start, r.steps)
        else:
            at = done
            if r.model.tokenizer is not None:
                key = (tc.seed, mc)
                if key not in clips:
                    clips[key] = eval_clips(tc, mc, device)
                r.log_held_out(clips[key], at)
        r.checkpoint(at)
        summary = r.finish(at)
        out.append({**summary, "method": tc.method, "seed": tc.seed, "frames": frames_per_run(mc, tc, at),
                    "shared_stage1": i in follows})
    frames = sum(frames_per_run(mc, tc, done) for mc, tc in specs)
    return {"runs": out, "steps": done, "planned_steps": steps, "stopped_early": done < steps, "seconds": seconds,
            "data_seconds": t_data_all, "frames_per_s": frames / max(seconds, 1e-9)}


# --- calibration and plan -----------------------------------------------------------------------
def calibrate(specs, device: torch.device, steps: int = 3, log=lambda m: None) -> dict:
    """Seconds per step of every run (``stage1_s``, ``stage2_s``: the mean of ``steps`` timed steps
    after one untimed, in each stage) and of every data stream (``data_s``), measured on fresh copies
    that are thrown away (synchronised per step, so an upper bound on the device)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    n = 2 * (steps + 1)
    with tempfile.TemporaryDirectory(prefix="calibration-") as tmp:
        cal = [(mc, replace(tc, steps=n, stage1_frac=0.5, out=str(Path(tmp) / Path(tc.out).name)))
               for mc, tc in specs if tc.total_steps > 0]
        runs = build_runs(cal, device, log)
        keys, follows = share_plan(runs)
        streams, data = _open_streams(runs, keys, device), {}
        batches = {}
        for k, it in streams.items():
            times = []
            batches[k] = []
            for j in range(n):
                t = time.perf_counter()
                batches[k].append({a: v.to(device) for a, v in next(it).items()})
                sync()
                times.append(time.perf_counter() - t)
            data[k] = sum(times[1:]) / (n - 1)
        out, h = [], steps + 1
        for i, ((mc, tc), r) in enumerate(zip([s for s in specs if s[1].total_steps > 0], runs)):
            times, flops = [], {}
            for step in range(n):
                t = time.perf_counter()
                if step in (0, h) and not tc.compile:  # each stage's untimed first step: FLOPs counted
                    with FlopCounterMode(display=False) as counter:
                        r.step(batches[keys[i]][step], step)
                    flops[step] = counter.get_total_flops()
                else:
                    r.step(batches[keys[i]][step], step)
                sync()
                times.append(time.perf_counter() - t)
            out.append({"method": tc.method, "seed": tc.seed, "stage1_s": sum(times[1:h]) / steps,
                        "stage2_s": sum(times[h + 1:]) / steps, "has_stage1": r.model.stage1_steps > 0,
                        "stage1_flops": flops.get(0), "stage2_flops": flops.get(h),
                        "frames_per_step": frames_per_run(mc, tc, 1),
                        "shared_stage1": i in follows, "stream": keys[i][0] if keys[i] else None})
            log(f"calibrated {tc.method} seed {tc.seed}: {out[-1]['stage1_s']:.3f} / {out[-1]['stage2_s']:.3f} s "
                "per step")
        del runs
    stream_s = {f"{k[0]}/{dict(k[2])['seed']}/batch{dict(k[2])['batch']}": v for k, v in data.items()}
    return {"runs": out, "data_s": stream_s, "steps": steps}


PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))  # dense, FLOP/s


def peak_flops(device_name: str) -> float | None:
    """The device's dense bf16 peak (None when not in :data:`PEAK_BF16`)."""
    return next((v for k, v in PEAK_BF16 if k in device_name), None)


def training_flops(cal: dict, steps: int, stage1_frac: float) -> float | None:
    """FLOPs (forward, backward; counted by torch.utils.flop_counter in the calibration) of every run's
    ``steps`` steps together, a shared stage 1 counted once (None: not counted, with torch.compile)."""
    if any(r["stage1_flops"] is None or r["stage2_flops"] is None for r in cal["runs"]):
        return None
    total = 0.0
    for r in cal["runs"]:
        s1 = int(stage1_frac * steps) if r["has_stage1"] else 0
        total += (0 if r["shared_stage1"] else s1 * r["stage1_flops"]) + (steps - s1) * r["stage2_flops"]
    return total


def seconds_per_step(cal: dict, stage1_frac: float) -> float:
    """Predicted seconds of one step of every run together (shared stage-1 steps counted once)."""
    total = sum(cal["data_s"].values())
    for r in cal["runs"]:
        f = stage1_frac if r["has_stage1"] else 0.0
        total += (0.0 if r["shared_stage1"] else f * r["stage1_s"]) + (1 - f) * r["stage2_s"]
    return total


def plan_steps(cal: dict, seconds: float, safety: float, stage1_frac: float, max_steps: int) -> dict:
    """The most steps per run whose predicted time fits ``seconds`` x ``safety`` (at most ``max_steps``)."""
    per_step = seconds_per_step(cal, stage1_frac)
    fits = seconds * safety / per_step if per_step > 0 else math.inf
    steps = max_steps if fits >= max_steps else int(fits)
    if steps < 1:
        raise ValueError(f"not one step fits {seconds:.1f} s x {safety} (predicted {per_step:.3f} s per step of "
                         "every run): give more --seconds, fewer --methods or --seeds, or a smaller --batch")
    return {"steps": steps, "seconds_per_step": per_step, "predicted_train_s": steps * per_step,
            "train_budget_s": seconds, "safety": safety}


# --- evaluation ---------------------------------------------------------------------------------
def _evaluate(checkpoints, out: Path, eval_args: list[str], device: str, threads: int, cache: Path) -> dict:
    from .evaluation.cli import main as evaluate_main

    argv = ["--checkpoints", *map(str, checkpoints), "--out", str(out), "--device", device, "--threads", str(threads),
            "--cache", str(cache), *eval_args]
    return evaluate_main(argv)


def _per_encoder_s(doc: dict, methods=("random_init",)) -> float:
    """Mean evaluation seconds per encoder of ``methods`` from a report's timings."""
    t, seeds = 0.0, set()
    for k, v in doc.get("timings", {}).items():
        parts = k.split("/")
        if len(parts) >= 3 and parts[1] in methods:
            t += v
            seeds.add((parts[1], parts[2].split("_")[0]))
    return t / max(1, len(seeds))


def _twins(specs) -> int:
    """How many random-init twins the evaluation adds (world_model.evaluation.pipeline.scratch_entries)."""
    from .encoders import load_encoder
    from .evaluation.encoders import EncoderEntry
    from .evaluation.pipeline import scratch_entries

    with torch.device("meta"):
        entries = [EncoderEntry(tc.method, tc.seed, load_encoder(tc.method, seed=tc.seed, model=mc))
                   for mc, tc in specs]
        return len(scratch_entries(entries))


# --- report -------------------------------------------------------------------------------------
def write_training_report(doc: dict, out: Path) -> None:
    """``training.md`` from ``doc["comparison"]`` (the results.json of a comparison)."""
    c = doc["comparison"]
    t = c["train"]
    lines = [f"# Training of the comparison ({c['model_size']}, {len(c['methods'])} methods x {len(c['seeds'])} seeds)",
             "", f"`{c['command']}`", "",
             f"Device: {c['device']}; torch {c['versions'].get('torch')}; {c['threads']} CPU threads; "
             f"{c['created_utc']}. Deadline {c['seconds']} s; total {c['total_s']:.0f} s.", "",
             f"Every run: {t['steps']} steps (planned {t['planned_steps']}"
             + (", **stopped at the training deadline**" if t["stopped_early"] else "")
             + f") of {c['batch']} clips x {c['window']} frames = **{c['frames_per_run']:,} frames per run** "
             f"(mae3d: {c['mae3d_crops']} crops of {c['crop']}^3 per step, the same voxels). All runs together: "
             f"{t['frames_per_s']:,.0f} frames/s over {t['seconds']:.1f} s of training "
             f"({100 * t['data_seconds'] / max(t['seconds'], 1e-9):.0f} % preparing batches).", "",
             "| phase | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in c["phases"].items()]
    p = c["plan"]
    budget = "fixed --frames" if math.isinf(p["train_budget_s"]) else f"{p['train_budget_s']:.0f} s for training"
    lines += ["", f"Plan: {p['seconds_per_step']:.3f} s per step of every run (calibrated), {budget} x safety "
                  f"{p['safety']} -> {p['steps']} steps; predicted evaluation {c['predicted_eval_s']:.0f} s."
              + (f" **{p['warning']}: one step trained.**" if p.get("warning") else ""),
              "", "Training FLOPs (forward + backward, torch.utils.flop_counter): "
              + ("not counted (torch.compile)" if t["flops"] is None else f"{t['flops'] / 1e12:,.2f} TFLOP in "
                 f"{t['seconds']:.1f} s = {t['flops_per_s'] / 1e12:,.3f} TFLOP/s")
              + ("" if t["peak_share"] is None else f" = {100 * t['peak_share']:.1f} % of the device's dense bf16 "
                                                    f"peak ({t['peak_flops'] / 1e12:,.0f} TFLOP/s)") + ".",
              "", "| method | seed | s/step stage 1 | s/step stage 2 | GFLOP/frame stage 1 | GFLOP/frame stage 2 |",
              "|---|---|---|---|---|---|"]
    for r in c["calibration"]["runs"]:
        g = ["" if r[k] is None else f"{r[k] / r['frames_per_step'] / 1e9:.3f}"
             for k in ("stage1_flops", "stage2_flops")]
        lines.append(f"| {r['method']} | {r['seed']} | {r['stage1_s']:.4f} | {r['stage2_s']:.4f} | {g[0]} | {g[1]} |")
    lines += ["", "Calibration: the seconds per step of each run alone (synchronised every step) and the data "
                  "streams' " + ", ".join(f"{k} {v:.4f} s" for k, v in c["calibration"]["data_s"].items())
              + " per batch; every stage's first step untimed (its FLOPs counted)."]
    lines += ["", "| method | seed | frames | stage 1 | final loss | params |", "|---|---|---|---|---|---|"]
    for r in t["runs"]:
        loss = r.get("loss/total")
        lines.append(f"| {r['method']} | {r['seed']} | {r['frames']:,} | {'copied' if r['shared_stage1'] else 'own'} | "
                     f"{'' if loss is None else f'{loss:.4f}'} | {r['params']:,} |")
    lines += ["", "The probes' report: [report.md](report.md). Rebuild both from results.json: "
                  f"`python -m world_model.comparison --rewrite --out {out}`."]
    write_atomic(out / "training.md", "\n".join(lines) + "\n")


@dataclass
class ComparisonOptions:
    """``python -m world_model.comparison`` options."""

    out: str = config_field(help="report folder (report.md, training.md, results.json, plots)")
    seconds: float = config_field(480.0, "wall-clock deadline of the whole command")
    frames: int = config_field(0, "frames per run instead of planning them from --seconds (the deadline then only "
                                  "stops the training)")
    model_size: str = config_field("capable", "model size of every run", choices=tuple(MODEL_SIZES))
    methods: tuple[str, ...] | None = config_field(None, "methods", choices=METHODS, parse=method_id,
                                                   show="every registered one: " + " ".join(METHODS))
    seeds: tuple[int, ...] = config_field((0, 1, 2), "seeds of every method")
    batch: int = config_field(16, "clips per step per run")
    subjects: str = config_field(TrainConfig.subjects, "training subjects spec (their 'train' split)")
    overrides: str = config_field("", "ModelConfig / TrainConfig overrides for every run, e.g. 'size=32 window=4 "
                                      "amp=false'", flag="--set")
    device: str = device_field()
    threads: int = config_field(0, "torch CPU threads (0: all cores on CPU, 4 with CUDA)")
    safety: float = config_field(0.8, "share of the training time the prediction may fill")
    eval_safety: float = config_field(1.5, "the predicted evaluation time is multiplied by it")
    calibration_steps: int = config_field(3, "timed steps per run and stage")
    max_frames: int = config_field(2_000_000, "frames per run at most")
    eval_args: str = config_field(EVAL_ARGS, "world_model.evaluation flags (the protocol; with --model-size capable "
                                             "'--reference-arch capable' is added)")
    runs: str = config_field("", "checkpoints folder", show="a temporary one, removed at the end")
    cache: str = config_field("", "probe-data cache", show="inside --runs")
    keep_checkpoints: bool = config_field(False, "keep --runs (checkpoints never go to --out)")
    quick: bool = config_field(False, "CPU smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()
                                                                   if k != "eval_args")
                               + " and a tiny evaluation (explicit options still win)")
    progress: bool = config_field(True, "progress bar while training")
    rewrite: bool = config_field(False, "rebuild report.md, training.md and plots from --out's results.json "
                                        "(computes nothing)")

    @property
    def overrides_dict(self) -> dict:
        """``--set``'s NAME=VALUE pairs, the values typed (int, float, true/false, else str)."""
        return {k: _value(v) for k, v in (x.split("=", 1) for x in self.overrides.split())}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m world_model.comparison", description=__doc__.split("\n\n")[0])
    add_options(p, ComparisonOptions, unset=True)
    return p


def _options(argv) -> ComparisonOptions:
    """The options; with ``--quick``, :data:`QUICK`'s values where the option was not given."""
    p = _parser()
    ns = p.parse_args(argv)
    a = options_config(ComparisonOptions, ns, base=QUICK if ns.quick else None)
    a.methods = tuple(METHODS) if a.methods is None else a.methods
    if not a.methods:
        p.error("--methods: give at least one method")
    try:
        a.overrides_dict
    except ValueError:
        p.error(f"--set: expected NAME=VALUE pairs, got {a.overrides!r}")
    return a


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def main(argv=None) -> dict:
    a = _options(argv)
    out = Path(a.out)
    if a.rewrite:
        from .evaluation.report import rewrite_report

        doc = rewrite_report(out)
        write_training_report(doc, out)
        print(f"rewrote {out}/report.md, training.md and plots from its results.json")
        return doc
    t_start, wall_start = time.perf_counter(), time.time()
    deadline = wall_start + a.seconds
    log = _log(t_start)
    device = resolve_device(a.device, "--device")
    threads = a.threads or (4 if device.type == "cuda" else os.cpu_count() or 1)
    torch.set_num_threads(threads)
    runs_dir = Path(a.runs) if a.runs else Path(tempfile.mkdtemp(prefix="comparison-runs-"))
    cache = Path(a.cache) if a.cache else runs_dir / "eval_cache"
    eval_args = shlex.split(a.eval_args)
    if a.model_size == "capable" and "--reference-arch" not in eval_args:
        eval_args += ["--reference-arch", "capable"]
    phases = {}
    tick = time.perf_counter
    train_kw = dict(subjects=a.subjects, device=str(device), threads=threads, eval_every=10**9, ckpt_every=10**9)
    try:
        t = tick()
        mc0 = make_config(a.model_size, **a.overrides_dict)[0]
        from .evaluation.cli import main as evaluate_main

        evaluate_main(["--prepare-data", "--size", str(mc0.size), "--cache", str(cache), "--out", str(out),
                       "--threads", str(threads), *eval_args])
        untrained = run_specs(a.model_size, [m for m in a.methods if m == "random_init"], a.seeds, 0, a.batch, runs_dir,
                              a.overrides_dict, **train_kw)
        untrained_rows = train_all(untrained, device, log, progress=False)["runs"] if untrained else []
        phases["setup"] = tick() - t
        predicted_eval = 0.0
        specs = run_specs(a.model_size, [m for m in a.methods if m != "random_init"], a.seeds, 1, a.batch, runs_dir,
                          a.overrides_dict, **train_kw)
        if untrained:
            t = tick()
            doc = _evaluate([tc.out + "/last.pt" for _, tc in untrained], runs_dir / "eval_calibration", eval_args,
                            str(device), threads, cache)
            per = _per_encoder_s(doc)
            units = sum(v for k, v in doc.get("timings", {}).items() if k != "total_s")
            n_more = len(specs) + _twins(specs + untrained)
            predicted_eval = a.eval_safety * (per * n_more + max(0.0, tick() - t - units))
            phases["eval_calibration"] = tick() - t
            log(f"evaluation: {per:.1f} s per encoder; {n_more} more encoders -> predicted {predicted_eval:.0f} s")
        frames_unit = a.batch * mc0.window
        t = tick()
        cal = calibrate(specs, device, a.calibration_steps, log)
        phases["calibration"] = tick() - t
        report_s = 10.0  # plots, loading the encoders, writing
        budget = deadline - time.time() - predicted_eval - report_s
        max_steps = max(1, round(a.frames / frames_unit)) if a.frames else max(1, a.max_frames // frames_unit)
        try:
            plan = plan_steps(cal, budget if not a.frames else math.inf, a.safety, specs[0][1].stage1_frac, max_steps)
        except ValueError as e:  # a report late beats none: one step, said plainly
            log(f"WARNING: {e}; training one step, the deadline will be missed")
            plan = {"steps": 1, "seconds_per_step": seconds_per_step(cal, specs[0][1].stage1_frac),
                    "train_budget_s": budget, "safety": a.safety, "warning": str(e)}
            plan["predicted_train_s"] = plan["seconds_per_step"]
        steps = plan["steps"]
        log(f"plan: {steps} steps = {steps * frames_unit:,} frames per run; predicted "
            f"{plan['predicted_train_s']:.0f} s of training")
        t = tick()
        specs = run_specs(a.model_size, [m for m in a.methods if m != "random_init"], a.seeds, steps, a.batch, runs_dir,
                          a.overrides_dict, **train_kw)
        trained = train_all(specs, device, log, deadline=deadline - predicted_eval - 5.0, progress=a.progress)
        phases["train"] = tick() - t
        t = tick()
        all_specs = sorted(specs + untrained, key=lambda s: (s[1].seed, a.methods.index(s[1].method)))
        doc = _evaluate([tc.out + "/last.pt" for _, tc in all_specs], out, eval_args, str(device), threads, cache)
        phases["evaluate"] = tick() - t
        t = tick()
        doc["comparison"] = {
            "command": " ".join(["python -m world_model.comparison"] + [shlex.quote(x) for x in
                                                                        (sys.argv[1:] if argv is None else argv)]),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": a.seconds,
            "model_size": a.model_size, "model": to_dict(specs[0][0]), "overrides": a.overrides_dict,
            "methods": list(a.methods), "seeds": list(a.seeds), "batch": a.batch, "window": specs[0][0].window,
            "crop": specs[0][0].crop, "mae3d_crops": mae3d_crops(specs[0][0], a.batch),
            "frames_per_run": frames_per_run(*specs[0], trained["steps"]),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
            f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
            "threads": threads, "versions": versions(VERSIONS_OF), "host": platform.node(), "plan": plan, "calibration": cal,
            "predicted_eval_s": predicted_eval, "train": {**trained, "runs": trained["runs"] + untrained_rows},
            "phases": phases, "eval_args": eval_args,
        }
        flops = training_flops(cal, trained["steps"], specs[0][1].stage1_frac)
        rate = None if flops is None else flops / max(trained["seconds"], 1e-9)
        peak = peak_flops(doc["comparison"]["device"]) if device.type == "cuda" else None
        doc["comparison"]["train"].update(flops=flops, flops_per_s=rate, peak_flops=peak,
                                          peak_share=None if peak is None or rate is None else rate / peak)
        phases["report"] = tick() - t
        doc["comparison"]["total_s"] = time.perf_counter() - t_start
        write_atomic(out / "results.json", json.dumps(doc, indent=1, default=float))
        write_training_report(doc, out)
        log(f"done in {doc['comparison']['total_s']:.0f} s of {a.seconds:.0f}: {out}/report.md, {out}/training.md")
        return doc
    finally:
        if not (a.keep_checkpoints or a.runs):
            shutil.rmtree(runs_dir, ignore_errors=True)
        elif a.keep_checkpoints:
            log(f"checkpoints kept in {runs_dir}")


if __name__ == "__main__":
    main()
