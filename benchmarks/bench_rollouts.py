"""Rollout throughput at 64^2: writing shards, reading random training windows, streaming windows.

    python benchmarks/bench_rollouts.py [--workers 2] [--episodes 1024] [--subjects template]

Targets (2 cores): write >= 10,000 frames/s, read >= 20,000 frames/s, stream >= 10,000 frames/s.
``write_frames_per_cpu_s`` divides by the CPU time used (this process + pool workers), a figure
that other processes' load does not change.  Each figure is steady state: compilation and subject building are warmed up first (a subject
spec other than "template" also reports the cold write, which includes building subjects).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import numpy as np
import torch

from navgym.configs import to_dict
from navgym.rollouts import RolloutConfig, RolloutWindows, StreamingWindows, write_rollouts


def bench_write(args, root):
    cfg = RolloutConfig(subjects=args.subjects, split=args.split, policy="mix", episodes=args.episodes,
                        steps=64, size=64, episodes_per_shard=64, seed=0)
    warm = RolloutConfig(**{**to_dict(cfg), "episodes": 2 * args.workers, "episodes_per_shard": 1})
    write_rollouts(warm, os.path.join(root, "warm"), workers=args.workers, progress=False)
    cpu0 = _cpu_s()
    t = time.perf_counter()
    card = write_rollouts(cfg, os.path.join(root, "data"), workers=args.workers, progress=False)
    dt = time.perf_counter() - t
    frames = card["counts"]["frames"]
    return frames / dt, dt, frames / (_cpu_s() - cpu0)


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the pool's workers, once joined)."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def _frames_per_s(loader, warmup: int, batches: int, window: int) -> float:
    """Frames/s a DataLoader of windows yields over ``batches`` batches, after ``warmup`` batches."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += next(it)["frames"].shape[0] * window
    return n / (time.perf_counter() - t)


def bench_read(args, root, window=16, batch=64, batches=200):
    ds = RolloutWindows(os.path.join(root, "data"), window=window)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=args.workers,
                                         persistent_workers=args.workers > 0)
    return _frames_per_s(loader, 5, batches, window)


def bench_stream(args, window=16, batch=64, batches=60):
    ds = StreamingWindows(args.subjects, split=args.split, policy="mix", window=window, size=64, seed=0,
                          batch_size=batch, episodes_per_chunk=64, episode_steps=64)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=args.workers)
    return _frames_per_s(loader, 4 * max(args.workers, 1), batches, window)


def main():
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--workers", type=int, default=2, help="rollout-writer processes and DataLoader workers")
    p.add_argument("--episodes", type=int, default=1024, help="episodes written (64 steps of 64x64 frames each)")
    p.add_argument("--subjects", default="template", help="a navgym.subjects.load_subjects spec")
    p.add_argument("--split", default=None, help="train, val or test (None: all)")
    p.add_argument("--keep", default=None, help="write the data here and keep it (None: a temporary folder)")
    a = p.parse_args()
    root = a.keep or tempfile.mkdtemp(prefix="bench_rollouts_")
    try:
        write, dt, per_cpu = bench_write(a, root)
        out = {
            "workers": a.workers, "subjects": a.subjects, "episodes": a.episodes, "load_1min": os.getloadavg()[0],
            "write_frames_per_s": round(write), "write_s": round(dt, 2),
            "write_frames_per_cpu_s": round(per_cpu),  # load-independent: x2 is what 2 idle cores give
            "read_frames_per_s": round(bench_read(a, root)),
            "stream_frames_per_s": round(bench_stream(a)),
        }
        print(json.dumps(out, indent=1))
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
