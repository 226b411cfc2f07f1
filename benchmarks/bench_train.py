"""World-model training throughput: frames/s and the share of time spent waiting for data.

    python benchmarks/bench_train.py [--sizes tiny small] [--methods navwm tokenizer mae3d]
        [--steps 60] [--threads 2] [--workers 0] [--device cpu] [--render auto] [--batch 16]
        [--subjects template] [--out benchmarks/results/bench_train.md]

Each (model size, method) trains ``--steps`` optimiser steps with :func:`world_model.train.train` on
streamed clips (``--batch`` clips of the model size's window; ``--render device`` renders them
with navgym.TorchRenderer on the training device, the GPU data path) and reports the last logging window (the second
half of the steps, so start-up and compilation are excluded): frames/s (mae3d: volume crops/s),
seconds per step and ``perf/data_wait_frac``.  navwm runs its stage 2 (dynamics on the frozen
tokenizer) in that window (``stage1_frac`` 0.25), the phase that dominates a real run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import torch

from navgym.files import write_atomic
from world_model.config import make_config
from world_model.train import train


def measure(size: str, method: str, steps: int, threads: int, workers: int, device: str, subjects: str,
            root: str, render: str = "auto", batch: int = 16) -> dict:
    half = steps // 2
    model_cfg, cfg = make_config(size, method=method, steps=steps, subjects=subjects, log_every=half, eval_every=10 * steps,
                                 ckpt_every=10 * steps, stage1_frac=0.25, threads=threads, workers=workers,
                                 device=device, render=render, batch=batch, out=os.path.join(root, f"{size}_{method}"))
    s = train(model_cfg, cfg, progress=False)
    fps = s["perf/frames_per_s"]
    per_step = (max(1, cfg.batch // 4) if method == "mae3d" else cfg.batch * model_cfg.window) / fps
    return {"size": size, "method": method, "params": s["params"], "frames_per_s": fps, "s_per_step": per_step,
            "data_wait": s["perf/data_wait_frac"], "unit": "crops" if method == "mae3d" else "frames"}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"], help="model sizes")
    p.add_argument("--methods", nargs="+", default=["navwm", "tokenizer", "mae3d"])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers rendering clips")
    p.add_argument("--device", default="cpu")
    p.add_argument("--render", default="auto", help="cpu, device or auto (device on CUDA)")
    p.add_argument("--batch", type=int, default=16, help="clips per step")
    p.add_argument("--subjects", default="template", help="training subjects (rendering cost per frame is the same)")
    p.add_argument("--out", default=None, help="also write the markdown table here (atomically)")
    a = p.parse_args(argv)
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for size in a.sizes:
            for method in a.methods:
                rows.append(measure(size, method, a.steps, a.threads, a.workers, a.device, a.subjects, root, a.render,
                                    a.batch))
                print(rows[-1], flush=True)
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    lines = [f"Device: {dev}; torch {torch.__version__}; {a.threads} threads, {a.workers} data workers; "
             f"render {a.render}, batch {a.batch}; {a.steps} steps per run, last {a.steps // 2} timed; load average before/after "
             f"{' '.join(f'{x:.2f}' for x in load0)} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "| model size | method | parameters | frames/s | s/step | data wait |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['method']} | {r['params']:,} | {r['frames_per_s']:,.1f} {r['unit']}/s "
                     f"| {r['s_per_step']:.2f} | {100 * r['data_wait']:.0f}% |")
    table = "\n".join(lines) + "\n"
    print(table)
    if a.out:
        write_atomic(a.out, f"`python {' '.join(sys.argv)}`\n\n" + table)


if __name__ == "__main__":
    main()
