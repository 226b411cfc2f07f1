"""PPO training throughput with pixels: CNN x (epochs, minibatch) settings, one short run each.

    python benchmarks/bench_agents.py --steps 10240 --threads 1 --out runs/bench_agents.json

Each setting trains ``agents.train`` on AC-near (64 px, 16 envs, 4 frames) for ``--steps`` steps without
intermediate evaluations and records steps/s (evaluation time excluded), the env and rollout shares of
the wall time, the process's CPU seconds per step (less sensitive to other jobs than wall time; with one
thread it is the wall time the run would take on an idle core), and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from dataclasses import replace

from agents.train import PPO_DEFAULTS, AgentConfig, train
from navgym.files import write_json_atomic

#: (cnn, n_epochs, batch_size): the old default first
SETTINGS = (("nature", 4, 256), ("small", 3, 512), ("nature", 3, 512), ("small", 4, 256))


def _load() -> list[str]:
    return open("/proc/loadavg").read().split()[:3]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_agents.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10240, help="training steps per setting (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    p.add_argument("--out", default="runs/bench_agents.json", help="JSON results (default: %(default)s)")
    a = p.parse_args(argv)
    rows = []
    for cnn, epochs, batch in SETTINGS:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = replace(AgentConfig(), cnn=cnn, steps=a.steps, eval_every=10 * a.steps, eval_envs=2, eval_episodes=1,
                          checkpoint_every=10 * a.steps, threads=a.threads, device=a.device, progress=False, out=tmp,
                          ppo={**PPO_DEFAULTS, "n_epochs": epochs, "batch_size": batch})
            before = _load()
            perf = train(cfg)["perf"]
        row = {"cnn": cnn, "n_epochs": epochs, "batch_size": batch, "load_before": before, "load_after": _load(), **perf}
        rows.append(row)
        cpu_ms = 1e3 * perf["cpu_s"] / perf["steps"]
        row["cpu_ms_per_step"] = cpu_ms
        print(f"{cnn:7s} epochs {epochs} batch {batch}: {perf['steps_per_s']:.0f} steps/s wall, {cpu_ms:.2f} CPU-ms/step "
              f"(1M steps: {1e6 / perf['steps_per_s'] / 60:.0f} min wall, {cpu_ms * 1e3 / 60:.0f} CPU-min), "
              f"env {perf['env_fraction']:.0%}, "
              f"rollout {perf['rollout_fraction']:.0%}, load {before} -> {row['load_after']}", flush=True)
        write_json_atomic(a.out, {"host": platform.node(), "cpus": os.cpu_count(), "steps": a.steps, "rows": rows})


if __name__ == "__main__":
    main()
