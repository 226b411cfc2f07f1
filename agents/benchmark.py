"""Benchmark matrix: presets x encoders x algorithms x seeds, plus the oracle and random bounds.

    python -m agents.benchmark --presets AC-near --encoders pixels random-cnn --algos ppo \
        --seeds 0 1 2 --steps 50000 --out runs/agents_bench

Every run trains with :func:`agents.train.train` and is evaluated on the preset's held-out
``test`` subjects with the same fixed starts; the bounds (``oracle``, ``random`` from
:mod:`navgym.policies`) run on the very same episodes.  Writes ``report.md``, ``report.json``
and ``curves_<preset>.png`` (held-out success rate vs training steps, mean over seeds, min-max band).
``--quick``: a tiny smoke configuration (template subjects, 32 px, a few hundred steps).

An encoder is an :class:`world_model.encoders.EncoderSpec`: ``pixels``, ``random-cnn``, ``pooled_pixels``, a
world-model checkpoint or method, optionally as ``LABEL=SPEC``; ``ft:SPEC`` fine-tunes it (frozen otherwise), so one report can hold both
(``navwm=runs/wm/navwm_s{seed}/last.pt navwm-ft=ft:runs/wm/navwm_s{seed}/last.pt``); a ``{seed}``
in the checkpoint path is replaced by the run's seed, so RL seed k uses pretraining seed k.  A run whose ``final_eval.json`` exists with the
same config is reused, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from navgym.configs import add_deprecated_alias, add_options, config_field, options_config, to_dict
from navgym.deprecation import renamed_keyword, warn_deprecated
from navgym.files import atomic_path, write_atomic, write_json_atomic
from navgym.presets import get_preset
from navgym.provenance import load_average
from navgym.stats import bootstrap_median, mean_ci, wilson
from world_model.encoders import EncoderSpec

from .episodes import episode_metrics, policy_act_fn, run_episodes, steps_to
from .train import AgentConfig, add_config_arguments, config_from_args, eval_env, train

__all__ = ["run_benchmark", "summarise_runs", "success_mean_ci", "format_ci", "bound_episodes", "describe_encoder", "BOUNDS",
           "report_presets", "BenchmarkOptions", "main", "summarise"]

BOUNDS = ("oracle", "random")


def bound_episodes(cfg: AgentConfig, name: str, seed: int) -> list[dict]:
    """Episodes of the bound policy ``name`` (:data:`BOUNDS`) on ``cfg``'s held-out evaluation env (its starts)."""
    env = eval_env(replace(cfg, controls="all"))  # pixel observations, 7-d actions: the bounds read the pose from infos
    try:
        return run_episodes(policy_act_fn(name, seed=seed), env, cfg.eval_episodes)
    finally:
        env.close()


def describe_encoder(spec: str, seed: int, finetune: bool, encoder=None) -> dict:
    """Where a run's encoder comes from, for the report: :meth:`EncoderSpec.describe` of ``spec`` (``{seed}``
    already replaced; ``encoder``: it loaded, else loaded here with ``seed``) and whether it trains (``pixels``,
    or ``finetune``)."""
    parsed = EncoderSpec.parse(spec)
    if encoder is None:
        encoder = parsed.load(seed=seed)
    return {"spec": parsed.source, "trains": parsed.kind == "pixels" or finetune, **parsed.describe(encoder)}


def success_mean_ci(rates) -> tuple[float, float, float]:
    """(mean, low, high): success rates over seeds, 95 % t-interval clipped to [0, 1] (one seed: no interval)."""
    m, half, _ = mean_ci(rates)
    half = half if np.isfinite(half) else 0.0
    return m, max(m - half, 0.0), min(m + half, 1.0)


def summarise_runs(runs: list[dict]) -> dict:
    """Aggregate runs of one (preset, method) over seeds.

    success: mean over seeds with a 95% t-interval (clipped to [0, 1]), and the pooled rate with a Wilson interval;
    median final error (pooled episodes, bootstrap 95%); steps to 50% / 80% held-out success
    (median over seeds that reached it, and how many did).
    """
    finals = [r["final"] for r in runs]
    rates = [f["success_rate"] for f in finals]
    k = int(round(sum(f["success_rate"] * f["episodes"] for f in finals)))
    n = int(sum(f["episodes"] for f in finals))
    errors = np.concatenate([r["final_errors"] for r in runs])
    out = {"seeds": len(runs), "success_mean_ci": success_mean_ci(rates), "success_pooled": k / n,
           "success_pooled_ci": wilson(k, n), "median_error_ci": bootstrap_median(errors)}
    for key in ("distance_mm", "angle_deg"):
        vals = [r.get(f"final_{key}") for r in runs]
        if all(v is not None for v in vals):
            out[f"median_{key}_ci"] = bootstrap_median(np.concatenate(vals))
    for thr in (0.5, 0.8):
        reached = [steps_to([c["step"] for c in r["curve"]], [c["success_rate"] for c in r["curve"]], thr)
                   for r in runs if r.get("curve")]
        hit = [s for s in reached if s is not None]
        out[f"steps_to_{int(thr * 100)}"] = {"median": float(np.median(hit)) if hit else None,
                                             "reached": len(hit), "of": len(reached)}
    return out


def summarise(runs: list[dict]) -> dict:
    """Deprecated name of :func:`summarise_runs`."""
    warn_deprecated("agents.benchmark.summarise", "summarise_runs")
    return summarise_runs(runs)


def _final_arrays(eps: list[dict]) -> dict:
    out = {"final_errors": np.array([e["error"] for e in eps])}
    for key in ("distance_mm", "angle_deg"):
        if key in eps[0]:
            out[f"final_{key}"] = np.array([e[key] for e in eps])
    return out


def encoder_label(enc: str) -> tuple[str, str, bool]:
    """(label, spec, finetune) of a ``--encoders`` entry, an :class:`EncoderSpec` ``[LABEL=][ft:]SPEC`` (label: the
    file stem when not given, ``-ft`` appended for ``ft:``, which fine-tunes that encoder)."""
    parsed = EncoderSpec.parse(enc)
    label = parsed.label
    if label is None:
        label = (Path(parsed.source).stem if parsed.kind == "checkpoint" and os.path.exists(parsed.source)
                 else parsed.source) + ("-ft" if parsed.finetune else "")
    return label, parsed.source, parsed.finetune


def _train_or_reuse(cfg: AgentConfig) -> tuple[dict, dict]:
    """(``train(cfg)``, the run's :func:`describe_encoder`): the encoder is loaded once, for the description, the
    check that a world-model checkpoint's pretraining has finished (a benchmark compares finished encoders;
    a run that has finished is reused as saved) and, frozen, the training.  ``train`` returns a finished run's
    saved result and resumes an unfinished one."""
    spec = EncoderSpec.parse(cfg.encoder)
    encoder = spec.load(seed=cfg.seed, size=cfg.size)
    if spec.kind == "checkpoint" and not encoder.finished and not (Path(cfg.out) / "final_eval.json").exists():
        raise ValueError(f"{cfg.encoder}: its pretraining is unfinished; finish it first")
    described = describe_encoder(cfg.encoder, cfg.seed, cfg.finetune, encoder)
    result = train(cfg, encoder=encoder)
    del encoder
    # the finished run's model, envs and subjects sit in reference cycles that the collector reaches late: a
    # 15-run matrix grew to 14 GB and was killed for memory without this
    gc.collect()
    return result, described


def report_presets(report: dict) -> dict:
    """The per-preset results of a benchmark ``report.json``: ``{preset: {"preset", "methods"}}`` (its ``"presets"``;
    ``"tasks"`` in reports of earlier versions)."""
    return report["presets"] if "presets" in report else report["tasks"]


@renamed_keyword("tasks", "presets")
def run_benchmark(presets, encoders, algos, seeds, base: AgentConfig, out: Path, finetune: bool = False,
                  command: str | None = None) -> dict:
    """Train every (preset, encoder, algo, seed), evaluate the bounds, write the report; returns the report dict.

    command : the command line that reproduces the run, quoted in the report; ``tasks=`` is the deprecated name of
    ``presets``."""
    if len(seeds) < 1:
        raise ValueError("need at least one seed")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    report = {"presets": {}, "config": {"encoders": list(encoders), "algos": list(algos), "seeds": list(seeds),
                                        "finetune": finetune, "base": to_dict(base)},
              "command": command, "host": platform.node(), "uptime_start": load_average()}
    for preset in presets:
        get_preset(preset)
        methods: dict[str, list[dict]] = {}
        for name in BOUNDS:
            runs = []
            for seed in seeds:
                cfg = replace(base, preset=preset, seed=seed)
                eps = bound_episodes(cfg, name, seed)
                runs.append({"final": episode_metrics(eps), "curve": [], **_final_arrays(eps)})
            methods[name] = runs
        for algo in algos:
            for enc in encoders:
                name, spec, tune = encoder_label(enc)
                tune = tune or finetune
                label = f"{algo}-{name}" + ("-ft" if finetune and not name.endswith("-ft") else "")
                runs = []
                for seed in seeds:
                    cfg = replace(base, preset=preset, encoder=spec.replace("{seed}", str(seed)), algo=algo, seed=seed,
                                  finetune=tune, out=str(out / "runs" / preset / label / f"seed{seed}"))
                    r, described = _train_or_reuse(cfg)
                    eps = r["final_episodes"]
                    runs.append({"final": r["final"], "curve": r["curve"], "perf": r["perf"], **_final_arrays(eps),
                                 "encoder": described})
                methods[label] = runs
        p = get_preset(preset)
        report["presets"][preset] = {
            "preset": {"success": p.success, "max_episode_steps": p.max_episode_steps, "start": p.start},
            "methods": {m: {"summary": summarise_runs(rs),
                            "runs": [{k: v for k, v in r.items() if not k.startswith("final_")} for r in rs]}
                        for m, rs in methods.items()},
        }
        _plot(preset, methods, out / f"curves_{preset}.png")
    report["wall_s"] = time.time() - t0
    report["uptime_end"] = load_average()
    write_json_atomic(out / "report.json", report)
    _write_markdown(report, out / "report.md")
    return report


def format_ci(t, digits=2, pct=False):
    """``mean [low, high]`` of a (mean, low, high) triple, in percent with ``pct``; ``n/a`` when missing."""
    if t is None or t[0] is None or np.isnan(t[0]):
        return "n/a"
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.{digits}f}")
    return f"{f(t[0])} [{f(t[1])}, {f(t[2])}]"


def _runs_wall(report: dict) -> float:
    return sum(r["perf"]["wall_s"] + r["perf"]["eval_s"] for t in report_presets(report).values()
               for m in t["methods"].values() for r in m["runs"] if "perf" in r)


def _write_markdown(report: dict, path: Path) -> None:
    lines = ["# RL benchmark: anatomical search on held-out subjects", ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`", ""]
    b = report["config"]["base"]
    lines += [f"Seeds {report['config']['seeds']}; {b['steps']} training steps per run; {b['n_envs']} envs; "
              f"{b['size']} px; memory: {b['frames']} frames + {b['actions']} actions; "
              f"pixels CNN: {b.get('cnn', 'nature')}; frozen encoders' features: "
              f"{'standardised per dimension' if b.get('standardize_features', False) else 'raw'}; "
              f"controls: {b.get('controls', 'all')}; "
              f"PPO: initial log std {b.get('log_std_init', 0.0)}, "
              f"{', '.join(f'{k} {v}' for k, v in b['ppo'].items())}; "
              f"reward normalisation: {'on' if b.get('normalize_reward') else 'off'}; learning rate "
              f"{'decaying linearly to 0' if b.get('lr_decay') else 'constant'}; training subjects: "
              f"{b.get('train_subjects') or 'preset train split'}; evaluation: "
              f"{b['eval_envs']} x {b['eval_episodes']} episodes per seed on held-out subjects "
              f"({b['test_subjects'] or 'preset test split'}), the same starts for every method. "
              f"Load average (1/5/15 min) at start {report['uptime_start']}, at end {report['uptime_end']}; "
              f"wall {report['wall_s'] / 60:.1f} min for this invocation; the runs' own training + evaluation wall "
              f"time {_runs_wall(report) / 60:.1f} min (runs finished by an earlier invocation are reused).", ""]
    for preset, t in report_presets(report).items():
        p = t["preset"]
        lines += [f"## {preset} (success {p['success']}, {p['start']} start, limit {p['max_episode_steps']} steps)", "",
                  "| method | success (mean over seeds, 95% t) | success (pooled, Wilson 95%) | median final error [95% bootstrap] "
                  "| median distance mm | median angle deg | steps to 50% | steps to 80% | steps/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m, d in t["methods"].items():
            s = d["summary"]
            sps = [r["perf"]["steps_per_s"] for r in d["runs"] if "perf" in r]

            def reach(key):
                r = s[key]
                if m in BOUNDS:
                    return "-"
                return f"{r['median']:.0f} ({r['reached']}/{r['of']})" if r["median"] is not None else f"never (0/{r['of']})"
            lines.append(
                f"| {m} | {format_ci(s['success_mean_ci'], pct=True)} | {format_ci((s['success_pooled'], *s['success_pooled_ci']), pct=True)} "
                f"| {format_ci(s['median_error_ci'], 1)} | {format_ci(s.get('median_distance_mm_ci'), 1)} "
                f"| {format_ci(s.get('median_angle_deg_ci'), 1)} | {reach('steps_to_50')} | {reach('steps_to_80')} "
                f"| {f'{np.mean(sps):.0f}' if sps else '-'} |")
        lines += ["", f"![learning curves](curves_{preset}.png)", ""]
        lines += _encoder_lines(t["methods"])
    write_atomic(path, "\n".join(lines) + "\n")


def _encoder_lines(methods: dict) -> list[str]:
    """The 'Encoders' table: where each method's encoder comes from (per seed where the seeds differ)."""
    rows = []
    for m, d in methods.items():
        encs = [r["encoder"] for r in d["runs"] if "encoder" in r]
        if not encs:
            continue
        e = encs[0]
        where = ", ".join(f"`{s}`" for s in sorted({x["spec"] for x in encs}))
        if e["kind"] != "world model":
            rows.append(f"| {m} | {e['kind']} | {where} | - | - | - | {'trained' if e['trains'] else 'frozen'} |")
            continue
        budget = (f"{e['pretrain_steps']:,} steps, {e['pretrain_frames']:,} frames on {e['pretrain_subjects']}"
                  if e["pretrain_steps"] is not None else "untrained (random init, the run's seed)")
        rows.append(f"| {m} | {e['method']} ({e['model_size']}, {e['arch']}) | {where} | {e['params']:,} "
                    f"| {e['feature_dim']} per frame | {budget} | {'fine-tuned' if e['trains'] else 'frozen'} |")
    if not rows:
        return []
    return ["### Encoders", "", "| method | encoder | spec | parameters | features | pretraining | in RL |",
            "|---|---|---|---|---|---|---|", *rows, ""]


def _plot(preset: str, methods: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, runs in methods.items():
        if m in BOUNDS:
            rate = np.mean([r["final"]["success_rate"] for r in runs])
            ax.axhline(rate, ls="--" if m == "oracle" else ":", color="k" if m == "oracle" else "gray", label=f"{m} ({rate:.2f})")
            continue
        # seeds may differ in evaluation steps (a resumed run adds one at its resume point): the sparsest
        # seed's steps, each seed's curve interpolated there
        steps = np.array([c["step"] for c in min((r["curve"] for r in runs), key=len)])
        vals = np.array([np.interp(steps, [c["step"] for c in r["curve"]], [c["success_rate"] for c in r["curve"]])
                         for r in runs])
        ax.plot(steps, vals.mean(0), label=m)
        ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.2)
    ax.set_xlabel("training steps")
    ax.set_ylabel("held-out success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(preset)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_path(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


QUICK = dict(steps=256, n_envs=4, size=40, eval_every=128, eval_episodes=1, eval_envs=4, checkpoint_every=10_000,
             train_subjects="template", test_subjects="template", progress=False,
             ppo={"n_steps": 32, "batch_size": 64, "n_epochs": 1, "learning_rate": 3e-4, "gamma": 0.99,
                  "gae_lambda": 0.95, "ent_coef": 0.0, "clip_range": 0.2},
             sac={"buffer_size": 2_000, "learning_starts": 64, "batch_size": 32, "train_freq": 1,
                  "gradient_steps": 1, "learning_rate": 3e-4, "gamma": 0.99})


@dataclass(frozen=True)
class BenchmarkOptions:
    """``python -m agents.benchmark`` options (beside every run's :class:`AgentConfig` options)."""

    presets: tuple[str, ...] = config_field(("AC-near",), "task presets")
    encoders: tuple[str, ...] = config_field(("pixels", "random-cnn"), "[LABEL=][ft:]SPEC, SPEC: pixels | random-cnn "
                                             "| a world-model checkpoint ({seed}: the run's seed) or method; ft: "
                                             "fine-tunes it", metavar="ENCODER")
    algos: tuple[str, ...] = config_field(("ppo",), "RL algorithms", choices=("ppo", "sac"))
    seeds: tuple[int, ...] = config_field((0, 1, 2), "seeds of every (preset, encoder, algo)")
    finetune: bool = config_field(False, "fine-tune every pretrained encoder (or ft: per entry)")
    quick: bool = config_field(False, "tiny smoke configuration (for tests): " + ", ".join(
        f"{k}={v}" for k, v in QUICK.items() if not isinstance(v, dict)))
    out: str = config_field("runs/agents_bench", "report folder")


_RUN_FIELDS = ("preset", "encoder", "algo", "seed", "out", "finetune")  # set per run by the matrix


def parser(base: AgentConfig | None = None) -> argparse.ArgumentParser:
    """``python -m agents.benchmark`` options: :class:`BenchmarkOptions` and every :class:`AgentConfig` field but
    those the matrix sets per run (defaults from ``base``); ``--tasks`` is the deprecated name of ``--presets``."""
    p = argparse.ArgumentParser(prog="python -m agents.benchmark", description=__doc__.split("\n\n")[0])
    add_options(p, BenchmarkOptions)
    add_deprecated_alias(p, "--tasks", "--presets")
    add_config_arguments(p.add_argument_group("every run (AgentConfig)"), skip=_RUN_FIELDS, base=base)
    return p


def parse_args(argv=None) -> tuple[BenchmarkOptions, AgentConfig]:
    """(the matrix options, every run's base config) of the command line (``--quick``: :data:`QUICK`'s settings
    under the options given); a bad option is refused with ``parser.error``."""
    first = argparse.ArgumentParser(add_help=False)  # --quick alone, so that --help shows the quick defaults
    add_options(first, BenchmarkOptions, skip=[f.name for f in fields(BenchmarkOptions) if f.name != "quick"])
    quick = first.parse_known_args(argv)[0].quick
    base = AgentConfig(**QUICK) if quick else AgentConfig()
    p = parser(base)
    ns = p.parse_args(argv)
    a = options_config(BenchmarkOptions, ns)
    for name in ("presets", "encoders", "algos", "seeds"):
        if not getattr(a, name):
            p.error(f"--{name}: give at least one")
    for preset in a.presets:
        try:
            get_preset(preset)
        except ValueError as e:
            p.error(f"--presets: {e}")
    for enc in a.encoders:
        try:
            EncoderSpec.parse(enc)
        except ValueError as e:
            p.error(f"--encoders: {e}")
    try:
        return a, config_from_args(ns, base)
    except ValueError as e:
        p.error(str(e))


def main(argv=None) -> None:
    a, base = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    command = "python -m agents.benchmark " + " ".join(shlex.quote(x) for x in argv)
    run_benchmark(a.presets, a.encoders, a.algos, a.seeds, base, Path(a.out), finetune=a.finetune, command=command)
    print((Path(a.out) / "report.md").read_text())


if __name__ == "__main__":
    main()
