"""Training cost in process CPU time (robust on a shared, loaded machine, where wall-clock figures swing 2x).

    OMP_NUM_THREADS=1 python benchmarks/bench_train_cpu.py [--methods navwm] [--steps 5 25]

For each method: ``world_model.train.train`` of A and of B steps (tiny size, template subjects, batch 16,
``stage1_frac`` 0.25, one thread) twice each in this process; the CPU seconds per step are
(best of B - best of A) / (B - A), so start-up cancels.  To compare two checkpoints of the code, run it
with each one's ``PYTHONPATH``, alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile

import torch

from world_model.config import make_config
from world_model.train import train


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["navwm"], help="methods (default: %(default)s)")
    p.add_argument("--steps", nargs=2, type=int, default=[5, 25], metavar=("A", "B"),
                   help="the two run lengths (default: %(default)s)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    lo, hi = a.steps
    out = {}
    with tempfile.TemporaryDirectory() as root:
        for method in a.methods:
            cost = {lo: [], hi: []}
            for k, n in enumerate((lo, hi, lo, hi)):
                mc, tc = make_config("tiny", method=method, steps=n, subjects="template", stage1_frac=0.25,
                                     log_every=1000, eval_every=10**6, ckpt_every=10**6, threads=1, device="cpu",
                                     out=os.path.join(root, f"{method}_{k}"))
                c0 = _cpu()
                train(mc, tc, progress=False)
                cost[n].append(_cpu() - c0)
            per = (min(cost[hi]) - min(cost[lo])) / (hi - lo)
            frames = max(1, tc.batch // 4) if method == "mae3d" else tc.batch * mc.window
            out[method] = {"cpu_s_per_step": round(per, 4), "frames_per_cpu_s": round(frames / per, 1)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
