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
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from navgym.configs import add_options, config_field, options_config

from .data import ProbeDataConfig, cached_probe_data, probe_subjects
from ..device import device_field, resolve_device
from .encoders import load_encoder_entry, image_size
from .finetune import REFERENCE_ARCHS, FinetuneConfig
from .pipeline import EvalConfig, Progress, evaluate_encoders
from .planning import PlanConfig
from .probes import PROBE_TASKS, ProbeConfig
from .report import rewrite_report, write_report

__all__ = ["main", "parse_args", "parser", "EvaluationOptions", "QUICK_CONFIG", "quick_entries"]

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


_D, _F, _P = EvalConfig(), FinetuneConfig(), ProbeDataConfig()


@dataclass(frozen=True)
class EvaluationOptions:
    """``python -m world_model.evaluation`` options."""

    out: str = config_field(help="report folder, e.g. reports/eval_v2")
    checkpoints: tuple[str, ...] = config_field((), "encoders: checkpoint paths, METHOD:SEED=path, or METHOD:SEED "
                                                    "(that architecture untrained; random_init = the navwm architecture)")
    subjects: str = config_field("synthetic:240", "navgym subject spec: probe-train/val subjects from its 'val' "
                                                  "split, probe-test from its 'test' split (pretraining uses only "
                                                  "'train'); 'template' for a smoke test")
    train_subjects: int = config_field(24, "probe-train subjects")
    val_subjects: int = config_field(4, "probe-val subjects")
    test_subjects: int = config_field(6, "probe-test subjects")
    train_per_subject: int = config_field(_P.train_per_subject, "slices per probe-train subject")
    eval_per_subject: int = config_field(_P.eval_per_subject, "slices per probe-val/test subject")
    size: int | None = config_field(None, "slice pixels", show="the encoders' training size")
    tasks: tuple[str, ...] = config_field(_D.tasks, "probe tasks", choices=list(PROBE_TASKS))
    probes: tuple[str, ...] = config_field(_D.probes, "frozen probes", choices=["linear", "attentive"])
    n_labels: tuple[int, ...] = config_field(_F.n_labels, "label-efficiency N list (fine-tuning); none: no "
                                                          "fine-tuning")
    linear_n_labels: tuple[int, ...] = config_field(_D.linear_n_labels, "label efficiency of the frozen linear probe: "
                                                                        "also fit it on N labelled slices for each N")
    budget: float = config_field(1.0, "multiplies every training budget (attentive probe, fine-tuning, reference "
                                      "steps)")
    reference_seeds: tuple[int, ...] = config_field(_D.reference_seeds, "seeds of the supervised reference (none: "
                                                                        "skip it)")
    reference_arch: str = config_field(_D.reference_arch, "the supervised reference's network: cnn (small "
                                                          "ResNet-style CNN) or a world-model size's slice encoder "
                                                          "(capable: the ResNet-18 one)", choices=list(REFERENCE_ARCHS))
    no_clips: bool = config_field(False, "skip the clip-level probes")
    no_planning: bool = config_field(False, "skip latent planning")
    device: str = device_field()
    threads: int = config_field(2, "torch CPU threads")
    cache: str = config_field("runs/eval_cache", "probe-data cache folder ('' = no cache)")
    shard: tuple[int, int] | None = config_field(
        None, "compute only every K-th unit of work from the I-th (0-based) into the cache and write no report: K "
              "processes with the same other arguments share the work, then a run without --shard assembles the "
              "report from the cache", parse=_shard, metavar="I/K")
    cached_only: bool = config_field(False, "compute nothing: write the report from the units already in the cache "
                                            "(the report lists the missing ones)")
    rewrite: bool = config_field(False, "rebuild the report in --out from its results.json (after a change to the "
                                        "report code; computes nothing, needs no encoder)")
    prepare_data: bool = config_field(False, "render and cache the probe data, then exit (needs --size when no "
                                             "--checkpoints)")
    quick: bool = config_field(False, "end to end in minutes: trains tiny navwm models itself, few subjects, small "
                                      "budgets")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m world_model.evaluation", description=__doc__.split("\n\n")[0])
    add_options(p, EvaluationOptions)
    return p


def parse_args(argv=None, p: argparse.ArgumentParser | None = None) -> EvaluationOptions:
    p = p or parser()
    return options_config(EvaluationOptions, p.parse_args(argv))


def main(argv=None) -> dict:
    p = parser()
    args = parse_args(argv, p)
    if args.rewrite:
        doc = rewrite_report(args.out)
        print(f"rewrote {args.out}/report.md, readme_snippet.md, {len(doc['plots'])} plots from its results.json")
        return doc
    torch.set_num_threads(args.threads)
    log = Progress()
    t_start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = ["python", "-m", "world_model.evaluation"] + argv
    device = resolve_device(args.device, "--device")
    extra = {"device": str(device), "threads": args.threads}
    if args.quick:
        cfg, subj_args = QUICK_CONFIG, QUICK_SUBJECTS
        entries, runs = quick_entries(Path(args.out) / "checkpoints", log)
        extra.update(runs)
        entries += [load_encoder_entry(s) for s in args.checkpoints]
    else:
        if not args.checkpoints and not (args.prepare_data and args.size):
            p.error("nothing to evaluate: give --checkpoints (or --quick, or --prepare-data with --size)")
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
        p.error(f"the encoders were trained on different slice sizes {sorted(sizes)}; evaluate them apart")
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
