"""``python -m world_model.evaluation``: the downstream evaluation report for world-model encoders.

Examples::

    python -m world_model.evaluation --checkpoints runs/wm/navwm_s{0,1,2}/last.pt runs/wm/tokenizer_s{0,1,2}/last.pt \\
        --out reports/eval_v2
    python -m world_model.evaluation --checkpoints random_init:0 random_init:1 random_init:2 --out reports/untrained
    python -m world_model.evaluation --quick --out /tmp/quick    # trains tiny models itself; minutes

Writes ``report.md``, ``results.json`` (rows per seed, command, configs, subjects, versions, device,
timings), ``readme_snippet.md`` and plots.  Probe data are rendered once and cached (``--cache``);
finished units (an encoder's probes, its fine-tuning, a reference seed) are kept under
``<cache>/parts/``, so a rerun resumes, and adding checkpoints to a finished report evaluates only them.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from .data import ProbeDataConfig, cached_probe_data, probe_subjects
from .encoders import load_encoder_entry, image_size, resolve_device
from .finetune import REFERENCE_ARCHS, FinetuneConfig
from .pipeline import EvalConfig, Progress, evaluate_encoders
from .planning import PlanConfig
from .probes import PROBE_TASKS, ProbeConfig
from .report import rewrite_report, write_report

__all__ = ["main", "parse_args", "QUICK_CONFIG", "quick_entries"]

QUICK_METHODS = ("navwm",)
QUICK_SEEDS = (0, 1)
QUICK_STEPS = 30
QUICK_SUBJECTS = dict(spec="synthetic:40", n_train=3, n_val=1, n_test=1)
QUICK_CONFIG = EvalConfig(
    data=ProbeDataConfig(train_per_subject=200, eval_per_subject=100, train_clips_per_subject=30,
                         eval_clips_per_subject=20),
    probe=ProbeConfig(attentive_steps=60, eval_every=30, logistic_iters=30),
    finetune_cfg=FinetuneConfig(n_labels=(64, 512), steps=40, eval_every=20, reference_steps=80),
    plan=PlanConfig(episodes=4, steps=3, population=16, elites=4, iterations=1),
    reference_seeds=(0, 1),
)


def quick_entries(workdir: Path, log) -> tuple[list, dict]:
    """Train ``QUICK_METHODS`` x ``QUICK_SEEDS`` tiny world models for ``QUICK_STEPS`` steps with the
    world-model trainer and load them (the pipeline check behind ``--quick``)."""
    from world_model.config import make_config
    from world_model.train import train

    entries, runs = [], []
    for method in QUICK_METHODS:
        for seed in QUICK_SEEDS:
            model_cfg, train_cfg = make_config(
                "tiny", method=method, seed=seed, steps=QUICK_STEPS, batch=8, out=str(Path(workdir) / f"{method}_s{seed}"),
                eval_every=QUICK_STEPS, ckpt_every=QUICK_STEPS, log_every=QUICK_STEPS, threads=torch.get_num_threads())
            t0 = time.perf_counter()
            summary = train(model_cfg, train_cfg, progress=False)
            runs.append({"method": method, "seed": seed, "steps": QUICK_STEPS, "seconds": time.perf_counter() - t0})
            entries.append(load_encoder_entry(summary["checkpoint"]))
            log(f"quick: trained {method} seed {seed}")
    return entries, {"quick_training": runs}


def _shard(text: str) -> tuple[int, int]:
    """argparse type of --shard: 'I/K' with 0 <= I < K."""
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/K such as 0/4, got {text!r}") from None
    if not 0 <= i < k:
        raise argparse.ArgumentTypeError(f"I/K needs 0 <= I < K, got {text!r}")
    return i, k


def parse_args(argv=None) -> argparse.Namespace:
    d, f, p = EvalConfig(), FinetuneConfig(), ProbeDataConfig()
    ap = argparse.ArgumentParser(prog="python -m world_model.evaluation", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoints", nargs="*", default=[],
                    help="encoders: checkpoint paths, METHOD:SEED=path, or METHOD:SEED (that architecture untrained; "
                         "random_init = the navwm architecture)")
    ap.add_argument("--out", required=True, help="report folder, e.g. reports/eval_v2")
    ap.add_argument("--subjects", default="synthetic:240",
                    help="navgym subject spec: probe-train/val subjects from its 'val' split, probe-test from its "
                         "'test' split (pretraining uses only 'train'); 'template' for a smoke test")
    ap.add_argument("--train-subjects", type=int, default=24, help="probe-train subjects")
    ap.add_argument("--val-subjects", type=int, default=4, help="probe-val subjects")
    ap.add_argument("--test-subjects", type=int, default=6, help="probe-test subjects")
    ap.add_argument("--train-per-subject", type=int, default=p.train_per_subject, help="slices per probe-train subject")
    ap.add_argument("--eval-per-subject", type=int, default=p.eval_per_subject, help="slices per probe-val/test subject")
    ap.add_argument("--size", type=int, default=None, help="slice pixels (default: the encoders' training size)")
    ap.add_argument("--tasks", nargs="*", default=list(d.tasks), choices=list(PROBE_TASKS), help="probe tasks")
    ap.add_argument("--probes", nargs="*", default=list(d.probes), choices=["linear", "attentive"],
                    help="frozen probes")
    ap.add_argument("--n-labels", type=int, nargs="*", default=list(f.n_labels),
                    help="label-efficiency N list (fine-tuning); none: no fine-tuning")
    ap.add_argument("--linear-n-labels", type=int, nargs="*", default=list(d.linear_n_labels),
                    help="label efficiency of the frozen linear probe: also fit it on N labelled slices for each N")
    ap.add_argument("--budget", type=float, default=1.0,
                    help="multiplies every training budget (attentive probe, fine-tuning, reference steps)")
    ap.add_argument("--reference-seeds", type=int, nargs="*", default=list(d.reference_seeds),
                    help="seeds of the supervised reference (none: skip it)")
    ap.add_argument("--reference-arch", default=d.reference_arch, choices=list(REFERENCE_ARCHS),
                    help="the supervised reference's network: cnn (small ResNet-style CNN) or a world-model size's "
                         "slice encoder (capable: the ResNet-18 one)")
    ap.add_argument("--no-clips", action="store_true", help="skip the clip-level probes")
    ap.add_argument("--no-planning", action="store_true", help="skip latent planning")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--cache", default="runs/eval_cache", help="probe-data cache folder ('' = no cache)")
    ap.add_argument("--shard", type=_shard, default=None, metavar="I/K",
                    help="compute only every K-th unit of work from the I-th (0-based) into the cache and write no "
                         "report: K processes with the same other arguments share the work, then a run without "
                         "--shard assembles the report from the cache")
    ap.add_argument("--cached-only", action="store_true",
                    help="compute nothing: write the report from the units already in the cache (the report "
                         "lists the missing ones)")
    ap.add_argument("--rewrite", action="store_true",
                    help="rebuild the report in --out from its results.json (after a change to the report code; "
                         "computes nothing, needs no encoder)")
    ap.add_argument("--prepare-data", action="store_true",
                    help="render and cache the probe data, then exit (needs --size when no --checkpoints)")
    ap.add_argument("--quick", action="store_true",
                    help="end to end in minutes: trains tiny navwm models itself, few subjects, small budgets")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.rewrite:
        doc = rewrite_report(args.out)
        print(f"rewrote {args.out}/report.md, readme_snippet.md, {len(doc['plots'])} plots from its results.json")
        return doc
    torch.set_num_threads(args.threads)
    log = Progress()
    t_start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = ["python", "-m", "world_model.evaluation"] + argv
    device = resolve_device(args.device)
    extra = {"device": str(device), "threads": args.threads}
    if args.quick:
        cfg, subj_args = QUICK_CONFIG, QUICK_SUBJECTS
        entries, runs = quick_entries(Path(args.out) / "checkpoints", log)
        extra.update(runs)
        entries += [load_encoder_entry(s) for s in args.checkpoints]
    else:
        if not args.checkpoints and not (args.prepare_data and args.size):
            raise SystemExit("nothing to evaluate: give --checkpoints (or --quick, or --prepare-data with --size)")
        entries = [load_encoder_entry(s) for s in args.checkpoints]
        data = replace(EvalConfig().data, train_per_subject=args.train_per_subject,
                       eval_per_subject=args.eval_per_subject)
        cfg = replace(EvalConfig(), data=data, tasks=tuple(args.tasks), probes=tuple(args.probes),
                      finetune=bool(args.n_labels), linear_n_labels=tuple(args.linear_n_labels),
                      reference_seeds=tuple(args.reference_seeds),
                      reference_arch=args.reference_arch,
                      clips=not args.no_clips, planning=not args.no_planning,
                      finetune_cfg=replace(FinetuneConfig(), n_labels=tuple(args.n_labels) or FinetuneConfig().n_labels))
        cfg = cfg.scaled(args.budget)
        subj_args = dict(spec=args.subjects, n_train=args.train_subjects, n_val=args.val_subjects,
                         n_test=args.test_subjects)
    sizes = {image_size(e.encoder) for e in entries} - {None}
    if len(sizes) > 1 and not args.size:
        raise SystemExit(f"the encoders were trained on different slice sizes {sorted(sizes)}; evaluate them apart")
    size = args.size or (sizes.pop() if sizes else cfg.data.size[0])
    cfg = replace(cfg, data=replace(cfg.data, size=size), plan=replace(cfg.plan, size=size))
    subjects = probe_subjects(**subj_args)
    data = cached_probe_data(subjects, cfg.data, cfg.data_seed, args.cache or None, log)
    log(f"probe data ready: {', '.join(f'{s} {len(d.slices)} slices' for s, d in data.items())}")
    if args.prepare_data:
        return {}
    parts_dir = Path(args.cache or args.out) / "parts"
    if args.shard is not None:
        result = evaluate_encoders(entries, data, cfg, subjects, device, log, parts_dir, shard=args.shard)
        print(f"shard {args.shard[0]}/{args.shard[1]}: units in {parts_dir} "
              f"in {time.perf_counter() - t_start:.0f} s; no report (run without --shard to write it)")
        return {}
    result = evaluate_encoders(entries, data, cfg, subjects, device, log, parts_dir, cached_only=args.cached_only)
    result["timings"]["total_s"] = time.perf_counter() - t_start
    doc = write_report(result, cfg, Path(args.out), command, extra)
    print(f"wrote {args.out}/report.md, results.json, readme_snippet.md, {len(doc['plots'])} plots "
          f"in {result['timings']['total_s']:.0f} s")
    return doc


if __name__ == "__main__":
    main()
