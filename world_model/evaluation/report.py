"""The report writer: ``report.md``, ``results.json``, plots and ``readme_snippet.md`` from the rows
of :func:`world_model.evaluation.pipeline.evaluate` (statistics come from :mod:`.stats`)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np

from navgym.files import atomic_path, write_atomic
from navgym.provenance import versions
from world_model.config import DEPRECATED_METHODS

from .encoders import POOLED_PIXELS
from .probes import CLIP_TASKS, FRAME_TASKS, PRIMARY_METRIC
from .stats import compare_methods, intervals_overlap, mean_ci, mean_ci_by_method

__all__ = ["write_report", "rewrite_report", "sanity", "verdict", "VERSIONS_OF"]

REFERENCE_METHOD = "navwm"
REFERENCE_METHODS = ("navwm", "navjump")  # each judged against every other pretrained method (its controls too)
BASELINES = ("mean", POOLED_PIXELS, "supervised")
LEARNABLE_GAIN = 0.10  # the reference must close >= 10% of the mean baseline's error (or of 1 - score)
RENAMED_LABELS = {**DEPRECATED_METHODS, "pixels": POOLED_PIXELS}  # a label in an older results.json -> its label now


#: the packages whose versions a report records (:func:`navgym.provenance.versions`)
VERSIONS_OF = ("torch", "numpy")


def _reference_text(arch: str) -> str:
    """What the supervised reference network is (``EvalConfig.reference_arch``)."""
    if arch == "cnn":
        return "a ResNet-style CNN (16-32-64-128 channels, its map flattened)"
    return (f"the `{arch}` model size's slice encoder alone (its tokenizer's encoder from random init, hidden "
            "map pooled to 4x4 as the world models' features)")


def _primary(task: str) -> str:
    return PRIMARY_METRIC[task[5:] if task.startswith("clip_") else task]


def _find(summary, **kw) -> dict | None:
    for s in summary:
        if all(s.get(k) == v for k, v in kw.items()):
            return s
    return None


def _twin(method: str) -> str:
    """The random-init twin of a method's architecture."""
    if method == "relpose":  # the tokenizer's architecture at the tokenizer's matched width
        return "tokenizer_init"
    return f"{method}_init" if method in ("tokenizer", "mae3d", "mae2d") else "random_init"


def sanity(summary: list[dict]) -> list[dict]:
    """Per task (primary metric): mean baseline, supervised reference, random init (linear probe);
    ``learnable`` when the reference's interval excludes the mean baseline and closes >= 10% of its
    error (clip tasks inherit their frame task's flag; tasks without a reference are not kept);
    ``separated`` when the reference's and random init's intervals do not overlap (None without either)."""
    tasks = sorted({s["task"] for s in summary if s["task"] != "planning"})
    out = []
    for task in tasks:
        metric = _primary(task)
        base_task = task[5:] if task.startswith("clip_") else task
        mean = _find(summary, task=task, probe="mean", metric=metric)
        ref = _find(summary, task=base_task, probe="reference", metric=metric)
        rand = _find(summary, task=task, probe="linear", metric=metric, method="random_init")
        ref_mean = _find(summary, task=base_task, probe="mean", metric=metric)
        learnable = False
        if ref is not None and ref_mean is not None:
            b, r = ref_mean["mean"], ref["mean"]
            gain = (r - b) / max(1e-9, 1 - b) if ref["higher_is_better"] else (b - r) / max(1e-9, b)
            learnable = bool(gain >= LEARNABLE_GAIN and not intervals_overlap(ref, ref_mean))
        out.append({"task": task, "metric": metric, "mean": mean, "reference": ref if base_task == task else None,
                    "random_init": rand, "learnable": learnable, "has_reference": ref is not None,
                    "separated": None if ref is None or rand is None else not intervals_overlap(ref, rand)})
    return out


def verdict(summary: list[dict], kept: list[str]) -> list[dict]:
    """Each pretrained method vs its random-init twin, navwm vs every other pretrained method, and each
    navwm variant (``navwm_joint``) vs its own shuffled/noaction controls, on the kept tasks' primary metrics, for
    every probe (linear, attentive, clip linear, fine-tuning and the linear probe at each N)."""
    methods = sorted({s["method"] for s in summary} - set(BASELINES)
                     - {m for m in {s["method"] for s in summary} if m.endswith("_init")}
                     - {"no_move", "random_actions", "true_pose_model"})
    pairs = [(m, _twin(m)) for m in methods]
    for ref in (r for r in REFERENCE_METHODS if r in methods):  # and against every other pretrained method
        pairs += [(ref, m) for m in methods if m != ref and (m, ref) not in pairs]
    for m in methods:  # a navwm variant against its own controls (navwm_joint: shuffled_joint, noaction_joint)
        if m.startswith(REFERENCE_METHOD + "_"):
            suffix = m[len(REFERENCE_METHOD):]
            pairs += [(m, c + suffix) for c in ("shuffled", "noaction") if c + suffix in methods]
    out = []
    seeded = [s for s in summary if s["n"] >= 2]  # a single seed has no interval: it is not judged
    for m, b in pairs:
        for c in compare_methods(seeded, m, b):
            if c["task"] in kept and c["metric"] == _primary(c["task"]) and c["probe"] in ("linear", "attentive",
                                                                                           "finetune", "linear_n"):
                out.append(c)
    return out


def _fmt(s: dict | None) -> str:
    if s is None:
        return "–"
    m, h = s["mean"], s["ci95"]
    digits = 3 if abs(m) < 10 else 1
    return f"{m:.{digits}f}" + (f" ± {h:.{digits}f}" if np.isfinite(h) and h > 0 else "")


def _order(methods) -> list[str]:
    first = ["navwm", "navwm_joint", "shuffled", "noaction", "shuffled_joint", "noaction_joint", "navjump",
             "shuffled_navjump", "noaction_navjump", "relpose", "tokenizer", "mae2d", "mae3d", "random_init"]
    return sorted(methods, key=lambda m: (first.index(m) if m in first else len(first), m))


def _zoom(ax, stats: list[dict]) -> None:
    """y-limits around the means ± intervals (and seeds) of ``stats``, so differences stay visible."""
    lo = min(min(s["mean"] - np.nan_to_num(s["ci95"]), *s.get("values", [s["mean"]])) for s in stats)
    hi = max(max(s["mean"] + np.nan_to_num(s["ci95"]), *s.get("values", [s["mean"]])) for s in stats)
    pad = 0.08 * (hi - lo) or 0.05 * abs(hi) or 1.0
    ax.set_ylim(lo - pad, hi + pad)


def linear_efficiency_rows(summary: list[dict], n_train: int) -> list[dict]:
    """The frozen linear probe's label-efficiency points: its ``linear_n`` rows and, at N = all
    ``n_train`` labels, the plain ``linear`` rows of the same methods."""
    few = [s for s in summary if s["probe"] == "linear_n"]
    methods = {s["method"] for s in few}
    tasks = {s["task"] for s in few}
    return few + [{**s, "n_labels": n_train} for s in summary if s["probe"] == "linear" and s["method"] in methods
                  and s["task"] in tasks]


def _efficiency_plot(plt, summary: list[dict], eff: list[dict], kept: list[str], path: Path, title: str) -> bool:
    """Metric vs N labels, one line per method with its intervals, a panel per frame task; False
    (nothing written) without rows."""
    tasks = [t for t in FRAME_TASKS if any(s["task"] == t for s in eff)]
    if not tasks:
        return False
    methods = _order({s["method"] for s in eff})
    colors = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 6.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = _primary(task)
        for k, m in enumerate(methods):
            pts = sorted((s["n_labels"], s["mean"], s["ci95"]) for s in eff
                         if s["method"] == m and s["task"] == task and s["metric"] == metric)
            if not pts:
                continue
            n, mu, ci = (np.array(v, float) for v in zip(*pts))
            dodge = 1.04 ** (k - (len(methods) - 1) / 2)  # side by side on the log axis, intervals visible
            ax.errorbar(n * dodge, mu, yerr=np.nan_to_num(ci), marker="o", ms=3, capsize=2, lw=1, label=m,
                        color=colors(k), ls="--" if m.endswith("_init") else "-")
        _zoom(ax, [s for s in eff if s["task"] == task and s["metric"] == metric])
        for probe, style, label in (("mean", ":", "mean baseline"), ("reference", "-.", "supervised (all labels)")):
            s = _find(summary, task=task, probe=probe, metric=metric)
            if s is not None:  # often off the zoomed axis: its value is in the label
                ax.axhline(s["mean"], color="k", ls=style, lw=1, label=f"{label}: {s['mean']:.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("labelled slices N")
        ax.set_title(f"{task}{'' if task in kept else ' (not kept)'}\n{metric}", fontsize=9)
    for ax in axes[0]:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0, -0.18), ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_path(path, lambda p: fig.savefig(p, dpi=110))
    plt.close(fig)
    return True


def _plots(summary: list[dict], kept: list[str], out: Path, n_train: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    ft = [s for s in summary if s["probe"] == "finetune"]
    if _efficiency_plot(plt, summary, ft, kept, out / "label_efficiency.png",
                        "fine-tuned with N labels: mean ± 95% interval over seeds (dashed: random init)"):
        written.append("label_efficiency.png")
    if _efficiency_plot(plt, summary, linear_efficiency_rows(summary, n_train), kept, out / "linear_label_efficiency.png",
                        "frozen linear probe fitted on N labels: mean ± 95% interval over seeds (dashed: random init)"):
        written.append("linear_label_efficiency.png")
    for name, probe_tasks in (("frozen_probes.png", FRAME_TASKS), ("clip_probes.png", tuple(f"clip_{t}" for t in CLIP_TASKS))):
        rows = [s for s in summary if s["task"] in probe_tasks and s["probe"] in ("linear", "attentive")
                and s["metric"] == _primary(s["task"])]
        if not rows:
            continue
        tasks = [t for t in probe_tasks if any(s["task"] == t for s in rows)]
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            order = _order({s["method"] for s in rows})
            sel = sorted((s for s in rows if s["task"] == task), key=lambda s: (order.index(s["method"]), s["probe"]))
            labels = [f"{s['method']}\n{s['probe']}" for s in sel]
            for k, s in enumerate(sel):  # mean ± 95% interval, and each seed
                ax.errorbar([k], [s["mean"]], yerr=[np.nan_to_num(s["ci95"])], fmt="o", ms=4, capsize=3,
                            color="C0" if s["probe"] == "linear" else "C1")
                ax.plot([k] * len(s["values"]), s["values"], "k.", ms=2)
            ax.set_xticks(range(len(sel)), labels, rotation=90, fontsize=6)
            _zoom(ax, sel)
            mean = _find(summary, task=task, probe="mean", metric=_primary(task))
            if mean is not None:
                ax.axhline(mean["mean"], color="k", ls=":", lw=1)
                ax.text(0, 0.99, f"mean baseline {mean['mean']:.3g}", transform=ax.transAxes, fontsize=6, va="top")
            ax.set_title(f"{task}: {_primary(task)}\n(blue linear, orange attentive; ± 95% interval, dots seeds)",
                         fontsize=8)
        fig.tight_layout()
        atomic_path(out / name, lambda p: fig.savefig(p, dpi=110))
        plt.close(fig)
        written.append(name)
    return written


def _markdown(doc: dict) -> str:
    """report.md: one section after another (a section without rows is left out)."""
    kept = [c["task"] for c in doc["sanity"] if c["learnable"]]
    return "\n".join(_header(doc) + _sanity_section(doc) + _prediction_section(doc.get("prediction") or [])
                     + _frozen_sections(doc["summary"], kept) + _clip_section(doc, kept)
                     + _label_efficiency_sections(doc, kept) + _planning_section(doc["summary"])
                     + _verdict_section(doc))


def _header(doc: dict) -> list[str]:
    """Title, command, provenance, encoders, probe data and how numbers are given."""
    cfg, sz = doc["config"], doc["sizes"]
    methods = _order({e["method"] for e in doc["entries"]})
    seeds = {}
    for e in doc["entries"]:
        seeds.setdefault(e["method"], []).append(e["seed"])
    return [
        "# Downstream evaluation report", "",
        f"Command: `{doc['command']}`  ",
        f"Created {doc['created_utc']}; git {doc['versions']['git_commit']}; torch {doc['versions']['torch']}; "
        f"device {doc['device']}; {doc.get('threads', '?')} threads; wall time {doc['timings'].get('total_s', float('nan')):.0f} s "
        f"(units of work finished by earlier runs are reused; the measured time of all units: "
        f"{sum(v for k, v in doc['timings'].items() if k != 'total_s'):.0f} s, per unit in `results.json`).",
        "",
        "Encoders (method: seeds): " + "; ".join(f"**{m}** {sorted(seeds[m])}" for m in methods) + ".  ",
        f"Probe subjects (disjoint, never in pretraining): train {len(doc['subjects']['train'])}, val "
        f"{len(doc['subjects']['val'])}, test {len(doc['subjects']['test'])}; slices train/val/test "
        f"{sz['train']['slices']}/{sz['val']['slices']}/{sz['test']['slices']}, clips "
        f"{sz['train']['clips']}/{sz['val']['clips']}/{sz['test']['clips']} of {cfg['data']['clip_frames']} frames; "
        f"{cfg['data']['size'][0]} px." + ("" if doc["held_out_subjects"] else
                                          " **Splits share subjects (smoke test): only the slices differ.**"),
        "Numbers: mean ± 95% Student-t interval over seeds (pretraining seeds; the supervised reference's own "
        "seeds); `mean` is computed once (exact).", "",
        *([f"**Not computed** (`--cached-only`: the time box ended first): {', '.join(doc['missing_units'])}.", ""]
          if doc.get("missing_units") else []),
    ]


def _sanity_section(doc: dict) -> list[str]:
    """Which tasks a slice can answer (the kept tasks), the mirror-symmetry note and the shuffled-label control."""
    summary, cfg, sz = doc["summary"], doc["config"], doc["sizes"]
    lines = [
        "## Sanity: which tasks a slice can answer", "",
        "`mean` predicts the probe-train mean (majority class); `supervised` is "
        + _reference_text(cfg.get("reference_arch", "cnn")) + f" trained from scratch on all {sz['train']['slices']} probe-train labels "
        f"({cfg['finetune']['reference_steps']} steps × {cfg['finetune']['batch_size']}); `random init` is the untrained "
        "navwm architecture with the frozen linear probe. A task is **kept** for the verdict when the supervised "
        f"reference's interval excludes the mean baseline and closes ≥ {LEARNABLE_GAIN:.0%} of its error "
        "(clip tasks follow their single-slice task; tasks without a reference are reported, not judged).", "",
        "| task | metric | mean | supervised | random init (linear) | kept | supervised vs random init |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in doc["sanity"]:
        sep = "–" if c["reference"] is None or c["random_init"] is None else (
            "separated" if c["separated"] else "**intervals overlap**")
        lines.append(f"| {c['task']} | {c['metric']} {'↑' if (c['mean'] or {}).get('higher_is_better') else '↓'} | "
                     f"{_fmt(c['mean'])} | {_fmt(c['reference'])} | {_fmt(c['random_init'])} | "
                     f"{'yes' if c['learnable'] else 'no'} | {sep} |")
    lines += ["", "Mirror symmetry: the template is left–right symmetric, so one slice cannot tell its hemisphere; "
              "`*_mirror` metrics take the smaller error to the pose (landmark distances) and to its left–right "
              "mirror, and are the primary ones. Raw errors are in the tables below; hemisphere is not a task.", ""]
    ctrl = [s for s in summary if s["probe"] == "linear_shuffled_labels" and s["metric"] == _primary(s["task"])]
    if ctrl:
        lines += [f"Shuffled-label control (linear probe on `{doc['control_method']}` features, probe-train labels "
                  "permuted): " + "; ".join(
                      f"{s['task']} {_fmt(s)} vs mean {_fmt(_find(summary, task=s['task'], probe='mean', metric=s['metric']))}"
                      for s in ctrl) + ".", ""]
    return lines


def _frozen_sections(summary: list[dict], kept: list[str]) -> list[str]:
    """The frozen linear and attentive probes on the frame tasks: per task and metric, every method."""
    lines = []
    frozen_methods = _order({s["method"] for s in summary if s["probe"] in ("linear", "attentive")})
    for probe, title in (("linear", "Frozen linear probes"), ("attentive", "Frozen attentive probes (full spatial map)")):
        keys = sorted({(s["task"], s["metric"]) for s in summary if s["probe"] == probe and not s["task"].startswith("clip_")},
                      key=lambda k: (k[0] not in kept, k))
        if not keys:
            continue
        lines += [f"## {title}", "", "| task | metric | mean | " + " | ".join(frozen_methods) + " | supervised |",
                  "|---|---|---|" + "---|" * (len(frozen_methods) + 1)]
        for task, metric in keys:
            cells = [_fmt(_find(summary, task=task, probe=probe, metric=metric, method=m)) for m in frozen_methods]
            lines.append(f"| {task}{'' if task in kept else ' (not kept)'} | {metric} | "
                         f"{_fmt(_find(summary, task=task, probe='mean', metric=metric))} | " + " | ".join(cells)
                         + f" | {_fmt(_find(summary, task=task, probe='reference', metric=metric))} |")
        lines.append("")
    return lines


def _clip_section(doc: dict, kept: list[str]) -> list[str]:
    """The linear probes on clip features, with each method's kind of clip representation."""
    summary, cfg = doc["summary"], doc["config"]
    clip_keys = sorted({(s["task"], s["metric"]) for s in summary if s["task"].startswith("clip_") and s["probe"] == "linear"})
    if not clip_keys:
        return []
    cm = _order({s["method"] for s in summary if s["task"].startswith("clip_") and s["probe"] == "linear"})
    kinds = {e["method"]: "context" if e["clip_features"] else "frames+actions" for e in doc["entries"]}
    lines = ["## Clip-level probes (linear; pose and landmarks of a clip's last slice)", "",
             f"Input: {cfg['data']['clip_frames']} frames of a `mix`-policy navigation clip and the actions between "
             "them. Dynamics family: `clip_features` (the model's context for the last frame); others: their "
             "per-frame features concatenated with the actions.", "",
             "| task | metric | mean | " + " | ".join(f"{m} ({kinds.get(m, '?')})" for m in cm) + " |",
             "|---|---|---|" + "---|" * len(cm)]
    for task, metric in clip_keys:
        lines.append(f"| {task} | {metric} | {_fmt(_find(summary, task=task, probe='mean', metric=metric))} | "
                     + " | ".join(_fmt(_find(summary, task=task, probe='linear', metric=metric, method=m)) for m in cm) + " |")
    return lines + [""]


def _label_efficiency_sections(doc: dict, kept: list[str]) -> list[str]:
    """Label efficiency: the frozen linear probe and fine-tuning, each at every N labels."""
    summary, sz = doc["summary"], doc["sizes"]
    lines = _efficiency_table(
        linear_efficiency_rows(summary, sz["train"]["slices"]), kept,
        "Label efficiency: frozen linear probe fitted on N labelled slices",
        "The same probe as above on the first N slices of fine-tuning's fixed permutation of probe-train "
        f"(N = {sz['train']['slices']}: all labels, the table above).")
    ft = [s for s in summary if s["probe"] == "finetune"]
    if ft:
        f = doc["config"]["finetune"]
        lines += _efficiency_table(
            ft, kept, "Label efficiency: fine-tuned end to end with N labelled slices",
            "Each encoder (and its architecture from random init: `random_init` for the dynamics family, `<method>_init` "
            "otherwise) + one linear head per task, trained on the same first N slices of a fixed permutation of "
            f"probe-train: {f['steps']} steps × {f['batch_size']}, AdamW lr {f['lr']}, best probe-val step kept.")
    return lines


def _planning_section(summary: list[dict]) -> list[str]:
    """Latent planning: success and final errors per method and baseline."""
    plan = [s for s in summary if s["task"] == "planning"]
    if not plan:
        return []
    pm = _order({s["method"] for s in plan})
    lines = ["## Latent planning (CEM in latent space, executed in the real env)", "",
             "`no_move` = start error, `random_actions` = uniform random actions, `true_pose_model` = the same CEM "
             "with the true pose as latent (the planner's ceiling).", "",
             "| metric | " + " | ".join(pm) + " |", "|---|" + "---|" * len(pm)]
    for metric in ("success_rate", "final_dist_mm", "final_angle_deg"):
        lines.append(f"| {metric} | " + " | ".join(_fmt(_find(plan, metric=metric, method=m)) for m in pm) + " |")
    return lines + [""]


def _verdict_section(doc: dict) -> list[str]:
    """The verdict table and text, the plots and where the raw numbers are."""
    return (["## Verdict", ""] + _verdict_table(doc["comparisons"]) + [
        doc["verdict_text"], "", "Plots: " + ", ".join(f"![{p}]({p})" for p in doc["plots"]), "",
        "Raw numbers per seed, configs, subjects, probe hyper-parameters, versions and timings: `results.json`.", ""])


def prediction_rows(prediction: list[dict]) -> list[dict]:
    """Per method and row of the prediction table (:mod:`world_model.prediction`): each metric's mean ±
    95% interval over seeds, and how many seeds beat copy-last."""
    out = []
    for m in _order({p["method"] for p in prediction}):
        tables = [p["table"] for p in prediction if p["method"] == m]
        for row in [r for r in ("k1", "k4", "k8", "jump", "relpose") if r in tables[0]]:
            vals = [t[row] for t in tables]
            stats = {}
            for k in vals[0]:
                mean, half, n = mean_ci([float(v[k]) for v in vals])
                stats[k] = {"mean": mean, "ci95": half, "n": n}
            out.append({"method": m, "row": row, "headline": row == tables[0]["headline"], "seeds": len(vals),
                        "beats": sum(bool(v.get("beats_copy_last")) for v in vals), **stats})
    return out


def _prediction_section(prediction: list[dict]) -> list[str]:
    """Markdown: the prediction table of every dynamics-family (and relpose) checkpoint, beside the probes."""
    rows = prediction_rows(prediction)
    if not rows:
        return []
    lines = ["## Prediction quality: does the model beat copying the last frame?", "",
             "Held-out 'val' clips of the pretraining subjects (recorded in each checkpoint at its last evaluation; "
             "`world_model.prediction`): open-loop prediction of frame k from frame 0 (`k1`, `k4`, `k8`) and of the "
             "view after one far jump (`jump`), in PSNR (dB) against copy-last (the last seen frame) and the mean "
             "frame on the same clips; `gap` = PSNR with true − with shuffled actions; latent MSE in the model's "
             "own latent space vs copy-last's. **Bold**: the row the method is trained for; ⚠ marks a method that "
             "does not beat copy-last there in every seed (as collapse is flagged, its representation should not "
             "be read as a world model's).", "",
             "| method | row | PSNR | copy-last | mean frame | gap (true − shuffled) | latent MSE | latent copy-last "
             "| beats copy-last |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["row"] == "relpose":
            continue
        name = f"**{r['row']}**" if r["headline"] else r["row"]
        flag = f"{r['beats']}/{r['seeds']}" + (" ⚠" if r["headline"] and r["beats"] < r["seeds"] else "")
        lines.append(f"| {r['method']} | {name} | {_fmt(r['psnr'])} | {_fmt(r['psnr_copy_last'])} | "
                     f"{_fmt(r['psnr_mean'])} | {_fmt(r['gap'])} | {_fmt(r['latent_mse'])} | "
                     f"{_fmt(r['latent_mse_copy_last'])} | {flag} |")
    rel = [r for r in rows if r["row"] == "relpose"]
    if rel:
        lines += ["", "relpose (the inverse: the jump from the slices before and after it; normalised units, 1 = the "
                  "largest jump): " + "; ".join(f"{r['method']} MSE {_fmt(r['pose_mse'])} vs {_fmt(r['pose_mse_zero'])} "
                                                f"for predicting no motion (explained {_fmt(r['explained'])})" for r in rel)
                  + "."]
    return lines + [""]


def _efficiency_table(eff: list[dict], kept: list[str], title: str, intro: str) -> list[str]:
    """Markdown section: per frame task and method, the primary metric at each N of ``eff`` (nothing
    without rows)."""
    if not eff:
        return []
    ns = sorted({s["n_labels"] for s in eff})
    lines = [f"## {title}", "", intro, "",
             "| task | metric | method | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|---|---|" + "---|" * len(ns)]
    for task in [t for t in FRAME_TASKS if any(s["task"] == t for s in eff)]:
        metric = _primary(task)
        for m in _order({s["method"] for s in eff}):
            lines.append(f"| {task}{'' if task in kept else ' (not kept)'} | {metric} | {m} | " + " | ".join(
                _fmt(_find(eff, task=task, metric=metric, method=m, n_labels=n)) for n in ns) + " |")
    return lines + [""]


def _verdict_table(comps: list[dict]) -> list[str]:
    """Markdown rows: per (method, baseline) the comparisons better / worse with non-overlapping intervals."""
    if not comps:
        return []
    lines = ["| method | vs | better | worse | within the intervals |", "|---|---|---|---|---|"]
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for c in comps:
        by_pair.setdefault((c["method"], c["baseline"]), []).append(c)
    for (m, b), cs in by_pair.items():
        win = sum(c["advantage"] > 0 and not c["overlap"] for c in cs)
        lose = sum(c["advantage"] < 0 and not c["overlap"] for c in cs)
        what = f"{b} (random init)" if b == _twin(m) else b
        lines.append(f"| {m} | {what} | {win} | {lose} | {len(cs) - win - lose} |")
    return lines + [""]


def _verdict_text(comps: list[dict], kept: list[str], checks: list[dict]) -> str:
    dropped = [c["task"] for c in checks if not c["learnable"]]
    parts = [f"Kept tasks: {', '.join(kept) or 'none'}" + (f"; left out: {', '.join(dropped)}." if dropped else ".")]
    bad = [c["task"] for c in checks if c["learnable"] and c["reference"] is not None and c["separated"] is False]
    if bad:
        parts.append(f"**The supervised reference and random init overlap on {', '.join(bad)}: the protocol cannot "
                     "separate a good from a bad encoder there.**")
    if not comps:
        parts.append("No comparison is judged: no pretrained encoder has two or more seeds beside another method or "
                     "its random-init twin with two or more seeds.")
        return " ".join(parts)
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for c in comps:
        by_pair.setdefault((c["method"], c["baseline"]), []).append(c)
    for m, b in by_pair:
        cs = by_pair[m, b]
        win = [c for c in cs if c["advantage"] > 0 and not c["overlap"]]
        lose = [c for c in cs if c["advantage"] < 0 and not c["overlap"]]
        desc = lambda xs: ", ".join(  # noqa: E731
            f"{c['task']}/{c['probe']}{'' if c['n_labels'] is None else '@' + str(c['n_labels'])}" for c in xs)
        what = f"{b} (random init, same architecture)" if b == _twin(m) else b
        parts.append(f"**{m}** vs {what} over {len(cs)} comparisons: better with "
                     f"non-overlapping intervals in {len(win)}" + (f" ({desc(win)})" if win else "") +
                     f", worse in {len(lose)}" + (f" ({desc(lose)})" if lose else "") + ", the rest within the intervals.")
    return " ".join(parts)


def _readme_snippet(doc: dict, kept: list[str]) -> str:
    summary = doc["summary"]
    methods = _order({s["method"] for s in summary if s["probe"] == "linear"} | {"supervised", "mean"})
    cols = [t for t in FRAME_TASKS if t in kept] + [f"clip_{t}" for t in CLIP_TASKS if f"clip_{t}" in kept]
    ns = sorted({s["n_labels"] for s in summary if s["probe"] == "finetune"})
    big = ns[-1] if ns else None
    head = [f"{t} ({_primary(t)})" for t in cols] + ([f"pose fine-tuned N={big}"] if big else [])
    lines = ["| encoder | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for m in methods:
        if m == "mean":
            cells = [_fmt(_find(summary, task=t, probe="mean", metric=_primary(t))) for t in cols]
        elif m == "supervised":
            cells = [_fmt(_find(summary, task=t, probe="reference", metric=_primary(t))) for t in cols]
        else:
            cells = [_fmt(_find(summary, task=t, probe="linear", metric=_primary(t), method=m)) for t in cols]
        if big:
            cells.append(_fmt(_find(summary, task="pose", probe="finetune", metric=_primary("pose"), method=m,
                                    n_labels=big)))
        label = {"mean": "predict the mean", "supervised": "supervised reference (all labels)"}.get(m, m)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = ("Frozen linear probes on held-out subjects (mean ± 95% interval over seeds; ↓ errors, ↑ accuracy/AUROC); "
            f"from `{doc['command']}`.\n\n" + "\n".join(lines) + "\n\n" + doc["verdict_text"] + "\n")
    pred = [r for r in prediction_rows(doc.get("prediction") or []) if r["headline"] and r["row"] != "relpose"]
    if pred:
        text += ("\nPrediction quality on the row each method is trained for (PSNR dB, held-out clips; ⚠: does not beat "
                 "copy-last in every seed):\n\n| method | row | PSNR | copy-last | mean frame | gap true − shuffled |\n"
                 "|---|---|---|---|---|---|\n" + "".join(
                     f"| {r['method']} | {r['row']} | {_fmt(r['psnr'])}{' ⚠' if r['beats'] < r['seeds'] else ''} | "
                     f"{_fmt(r['psnr_copy_last'])} | {_fmt(r['psnr_mean'])} | {_fmt(r['gap'])} |\n" for r in pred))
    return text


def write_report(result: dict, cfg, out, command: list[str], extra: dict | None = None) -> dict:
    """Write report.md, results.json, readme_snippet.md and plots into ``out``; returns the document."""
    doc = {"command": " ".join(command), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "versions": versions(VERSIONS_OF), "config": cfg.record(), **(extra or {}), **result}
    return _write(doc, Path(out))


def rewrite_report(out) -> dict:
    """Rebuild ``out``'s report.md, readme_snippet.md, plots and derived fields of results.json from
    the rows in its results.json (after a change to the report code; no encoder is needed).  Method
    labels renamed since (:data:`RENAMED_LABELS`) are written with their name now."""
    out = Path(out)
    doc = _relabel(json.loads((out / "results.json").read_text()), out / "results.json")
    doc["rewritten_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        return _write(doc, out)
    except KeyError as e:
        raise ValueError(f"{out / 'results.json'}: written by an older report format (unknown key {e}); "
                         "re-run the evaluation instead") from None


def _relabel(doc: dict, source) -> dict:
    """``doc`` with every renamed method label (:data:`RENAMED_LABELS`) replaced by its name now, in
    the measured fields (rows, planning, fit info, timings' keys, entries, control method,
    prediction), with a ``DeprecationWarning`` naming ``source`` when there was one."""
    def new(method):
        return RENAMED_LABELS.get(method, method)

    def timing(key: str) -> str:  # "<unit>/<method>/<seed>..._s"
        kind, _, rest = key.partition("/")
        method, sep, tail = rest.partition("/")
        return f"{kind}/{new(method)}{sep}{tail}" if sep else key

    listed = ("rows", "planning", "fit_info", "entries", "scratch_entries", "prediction")
    found = sorted({d["method"] for k in listed for d in doc.get(k) or [] if d["method"] in RENAMED_LABELS}
                   | ({doc["control_method"]} & set(RENAMED_LABELS) if doc.get("control_method") else set()))
    if not found:
        return doc
    warnings.warn(f"{source}: method labels {found} are deprecated; rewritten as "
                  f"{[RENAMED_LABELS[m] for m in found]}", DeprecationWarning, stacklevel=3)
    doc = {**doc, **{k: [{**d, "method": new(d["method"])} for d in doc[k]] for k in listed if doc.get(k)}}
    doc["timings"] = {timing(k): v for k, v in doc["timings"].items()}
    if doc.get("control_method"):
        doc["control_method"] = new(doc["control_method"])
    return doc


def _write(doc: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = mean_ci_by_method(doc["rows"])
    checks = sanity(summary)
    kept = [c["task"] for c in checks if c["learnable"]]
    comps = verdict(summary, kept)
    doc.update(summary=summary, sanity=checks, kept_tasks=kept, comparisons=comps,
               verdict_text=_verdict_text(comps, kept, checks))
    doc["plots"] = _plots(summary, kept, out, doc["sizes"]["train"]["slices"])
    write_atomic(out / "results.json", json.dumps(doc, indent=1, default=float))
    write_atomic(out / "report.md", _markdown(doc))
    write_atomic(out / "readme_snippet.md", _readme_snippet(doc, kept))
    return doc
