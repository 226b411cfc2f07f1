"""Pose simulation speed: ms per ``simulate`` call of 16 clips x 8 steps (the clip stream's chunk), one core.

    OMP_NUM_THREADS=1 python benchmarks/bench_simulate.py [--episodes 16] [--steps 8] [--repeats 200]

Reports the median over ``--rounds`` rounds of the mean ms per call (subjects built and the first
call made before timing), and the share spent in the episode resets (``Navigator.reset_many``).
To compare two checkouts, run it with each one's ``PYTHONPATH``, alternating.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from navgym.policies import make_policy
from navgym.simulator import NavConfig, Navigator, simulate
from navgym.subjects import load_subjects
from navgym.tasks import make_task


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=16, help="episodes (clips) per call (default: %(default)s)")
    p.add_argument("--steps", type=int, default=8, help="steps per episode (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=100, help="calls per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default: %(default)s)")
    a = p.parse_args(argv)
    subjects = load_subjects("synthetic:8", "train")
    resident = np.arange(a.episodes) % 4
    for s in range(4):
        subjects[s].volume.brain_center  # built and cached before timing
    task, config = make_task("explore"), NavConfig(size=(64, 64))
    policy = make_policy("mix")

    def call(c):
        simulate(subjects, policy, task, config, a.episodes, a.steps, np.random.SeedSequence([0, c]), resident)

    reset = getattr(Navigator, "reset_many", None)

    def resets(c):
        nav, rng = Navigator(a.episodes, subjects, task, config), np.random.default_rng(c)
        if reset is not None:
            nav.reset_many(np.arange(a.episodes), rng, resident)
        else:  # a checkout from before reset_many
            for i in range(a.episodes):
                nav.reset(i, rng, resident[i])

    out = {}
    for name, fn in (("simulate_ms", call), ("resets_ms", resets)):
        fn(0)
        rounds = []
        for r in range(a.rounds):
            t = time.perf_counter()
            for c in range(a.repeats):
                fn(r * a.repeats + c)
            rounds.append((time.perf_counter() - t) / a.repeats * 1e3)
        out[name] = round(float(np.median(rounds)), 3)
    out.update(episodes=a.episodes, steps=a.steps, reset_many=reset is not None)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
