"""Core speed benchmark: renderer vs scipy / torch, env steps/s, memory of N envs.

Prints one markdown table and writes it (atomically) to ``--out`` if given::

    python benchmarks/bench_core.py --out runs/bench_core.md

(the figures quoted in the docs are ``benchmarks/results/bench_core.md``; regenerate them with
``--out benchmarks/results/bench_core.md``).

What is measured (every figure is the median of ``--reps`` runs after a warm-up):

* slices/s on the same random oblique planes through the MNI152 template (197 x 233 x 189,
  1 mm, float32), fov 180 mm, centres within 20 mm of the brain centre, at 64^2 and 128^2,
  with 1 and 2 threads, one slice per call unless stated:
  ``navgym.render_slice`` (float32), ``navgym.render_slices`` into uint8 (what the env
  observes; also all planes in one call, the vector env's path, parallel over rows when
  threads > 1), ``scipy.ndimage.map_coordinates(order=1)`` and torch ``grid_sample``
  (bilinear, zeros padding); for scipy and torch the voxel coordinates / sampling grid are
  precomputed, so only their sampling is timed;
* env steps/s: ``gym.make("MRINav-v0", size=...)`` (wrappers included), random actions,
  resets included, 1 thread; ``MRINavVectorEnv`` (``num_envs`` 16 and 64) at 64^2, 1 and 2
  threads (numba and torch threads);
* memory: resident-set growth of a fresh process after creating, resetting and stepping 8
  envs on the default volume, against 1 env (and the volume's own size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from navgym.files import write_atomic


def _median_rate(fn, count: int, reps: int) -> float:
    """Median over ``reps`` runs of ``count / seconds`` for ``fn()`` (after one warm-up run)."""
    fn()
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        rates.append(count / (time.perf_counter() - t))
    return float(np.median(rates))


def _set_threads(n: int) -> None:
    import numba
    import torch

    numba.set_num_threads(n)
    torch.set_num_threads(n)


def _oblique_planes(vol, n: int, seed: int = 0):
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    centers = vol.brain_center + rng.uniform(-20, 20, (n, 3))
    return centers, Rotation.random(n, random_state=seed).as_matrix(), np.full(n, 180.0)


def bench_renderers(sizes, threads, reps: int, n_planes: int, libs, progress, rows=None) -> list[dict]:
    """Slices/s per (size, threads) for ``libs`` ("navgym", "scipy", "torch"), added to ``rows``.

    torch is measured apart (last): after each op its OpenMP threads spin for a while and would
    take the second core from whatever runs next.
    """
    import torch
    from scipy.ndimage import map_coordinates

    import navgym
    from navgym.anatomy import load_template
    from navgym.geometry import pixel_to_voxel

    vol = load_template()
    data = np.asarray(vol.data)
    tdata = torch.from_numpy(data.copy())[None, None]
    centers, rotations, fovs = _oblique_planes(vol, n_planes)
    poses = [navgym.SlicePose(c, r, f) for c, r, f in zip(centers, rotations, fovs)]
    rows = rows if rows is not None else [{"size": s, "threads": t} for s in sizes for t in threads]
    for res in rows:
        h = w = res["size"]
        _set_threads(res["threads"])
        if "navgym" in libs:
            u8 = np.empty((1, h, w), np.uint8)
            u8_all = np.empty((n_planes, h, w), np.uint8)
            res["render_slice"] = _median_rate(lambda: [navgym.render_slice(vol, p, (h, w)) for p in poses], n_planes, reps)
            res["render_slices_u8"] = _median_rate(
                lambda: [
                    navgym.render_slices(vol, centers[i : i + 1], rotations[i : i + 1], fovs[i : i + 1], (h, w), out=u8)
                    for i in range(n_planes)
                ],
                n_planes,
                reps,
            )
            res["batch_u8"] = _median_rate(
                lambda: navgym.render_slices(vol, centers, rotations, fovs, (h, w), out=u8_all), n_planes, reps
            )
        m = pixel_to_voxel(vol.inverse_affine, centers, rotations, fovs, (h, w))
        r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        coords = [np.stack([mm[a, 0] * r + mm[a, 1] * c + mm[a, 2] for a in range(3)]) for mm in m]  # (3, H, W)
        if "scipy" in libs:
            res["scipy"] = _median_rate(
                lambda: [map_coordinates(data, x, order=1, mode="constant", cval=0.0) for x in coords], n_planes, reps
            )
        if "torch" in libs:
            scale = torch.tensor([2.0 / (s - 1) for s in vol.shape], dtype=torch.float64)
            grids = [(torch.from_numpy(np.moveaxis(x, 0, -1)) * scale - 1).flip(-1).float()[None, None] for x in coords]
            with torch.inference_mode():
                res["torch"] = _median_rate(
                    lambda: [
                        torch.nn.functional.grid_sample(tdata, g, mode="bilinear", padding_mode="zeros", align_corners=True)
                        for g in grids
                    ],
                    n_planes,
                    reps,
                )
        progress.update(1)
    return rows


def bench_env(sizes, steps: int, reps: int, progress) -> list[dict]:
    import gymnasium as gym

    import navgym  # noqa: F401  (registers MRINav-v0)

    _set_threads(1)
    rows = []
    for size in sizes:
        env = gym.make("MRINav-v0", size=size)
        env.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-1, 1, (steps, 7)).astype(np.float32)

        def run():
            for a in actions:
                _, _, terminated, truncated, _ = env.step(a)
                if terminated or truncated:
                    env.reset()

        rows.append({"size": size, "steps_per_s": _median_rate(run, steps, reps)})
        env.close()
        progress.update(1)
    return rows


def bench_vector(num_envs, threads, size: int, batches: int, reps: int, progress) -> list[dict]:
    from navgym.env import MRINavVectorEnv

    rows = []
    for n in num_envs:
        env = MRINavVectorEnv(num_envs=n, size=size)
        env.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-1, 1, (batches, n, 7)).astype(np.float32)
        for t in threads:
            _set_threads(t)

            def run():
                for a in actions:
                    env.step(a)

            rows.append({"num_envs": n, "threads": t, "size": size, "steps_per_s": _median_rate(run, batches * n, reps)})
            progress.update(1)
        env.close()
    return rows


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def memory_child(n_envs: int) -> None:
    """Run in a fresh process: RSS after 1 env, then after ``n_envs`` envs, on the default volume (JSON)."""
    import gymnasium as gym

    import navgym  # noqa: F401
    from navgym.anatomy import load_template

    _set_threads(1)
    vol = load_template()
    envs = []

    def add():
        env = gym.make("MRINav-v0")
        env.reset(seed=len(envs))
        for _ in range(5):
            env.step(env.action_space.sample())
        envs.append(env)

    add()
    one = _rss_mb()
    while len(envs) < n_envs:
        add()
    print(json.dumps({"rss_1": one, "rss_n": _rss_mb(), "n": n_envs, "volume_mb": vol.data.nbytes / 2**20}))


def bench_memory(n_envs: int = 8) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", str(n_envs)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spin(n: int) -> int:
    s = 0
    for i in range(n):
        s += i
    return s


def core_capacity(n: int = 2_000_000) -> float:
    """How many cores two busy processes actually get (2.0 on an idle 2-core machine)."""
    import multiprocessing as mp

    t = time.perf_counter()
    _spin(n)
    one = time.perf_counter() - t
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_spin, [1000] * 2)  # start the workers
        t = time.perf_counter()
        pool.map(_spin, [n] * 2)
        two = time.perf_counter() - t
    return 2 * one / two


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def table(render_rows, env_rows, vec_rows, mem, meta) -> str:
    lines = [
        f"Machine: {meta['machine']}; load average before/after: {meta['load_before']} / {meta['load_after']}; "
        f"cores two busy processes got before/after: {meta['cores_before']:.2f} / {meta['cores_after']:.2f}; "
        f"numba {meta['numba']}, torch {meta['torch']}, scipy {meta['scipy']}. Medians of {meta['reps']} runs.",
    ]
    if render_rows:
        lines += [
            "",
            "| renderer, slices/s | size | threads | navgym `render_slice` (float32) | navgym uint8, 1 per call (env path) "
            f"| navgym uint8, {meta['planes']} per call | scipy `map_coordinates` | torch `grid_sample` "
            "| `render_slice` vs scipy | vs torch |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in render_rows:
        lines.append(
            f"| oblique planes, fov 180 mm | {r['size']}² | {r['threads']} | {r['render_slice']:,.0f} "
            f"| {r['render_slices_u8']:,.0f} | {r['batch_u8']:,.0f} | {r['scipy']:,.0f} | {r['torch']:,.0f} "
            f"| {r['render_slice'] / r['scipy']:.1f}x | {r['render_slice'] / r['torch']:.1f}x |"
        )
    if env_rows or vec_rows:
        lines += ["", "| environment | size | envs | threads | steps/s |", "|---|---|---|---|---|"]
    for r in env_rows:
        lines.append(f"| `gym.make(\"MRINav-v0\")` (wrappers, resets included) | {r['size']}² | 1 | 1 | {r['steps_per_s']:,.0f} |")
    for r in vec_rows:
        lines.append(f"| `MRINavVectorEnv` | {r['size']}² | {r['num_envs']} | {r['threads']} | {r['steps_per_s']:,.0f} |")
    if mem:
        grow = mem["rss_n"] - mem["rss_1"]
        lines += [
            "",
            f"Memory: {mem['n']} envs on the default volume ({mem['volume_mb']:.0f} MiB float32) use "
            f"{mem['rss_n']:.0f} MiB RSS vs {mem['rss_1']:.0f} MiB for 1 env: +{grow:.1f} MiB in all, "
            f"{grow / (mem['n'] - 1):.1f} MiB per extra env (the volume and its render store are shared).",
        ]
    return "\n".join(lines) + "\n"


PARTS = ("render", "env", "vector", "memory")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", help="also write the markdown table here (atomically), e.g. runs/bench_core.md")
    p.add_argument("--reps", type=int, default=7, help="runs per figure (median reported)")
    p.add_argument("--planes", type=int, default=32, help="oblique planes per renderer run")
    p.add_argument("--steps", type=int, default=2000, help="env steps per single-env run")
    p.add_argument("--batches", type=int, default=100, help="vector-env steps per run")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="numba/torch thread counts to measure")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement (a subprocess)")
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return

    import numba
    import scipy
    import torch
    from tqdm import tqdm

    meta = {
        "machine": machine(), "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()), "reps": args.reps,
        "cores_before": core_capacity(),
        "planes": args.planes,
        "numba": numba.__version__, "torch": torch.__version__, "scipy": scipy.__version__,
    }  # fmt: skip
    sizes = [64, 128]
    vec_envs = [16, 64]
    parts = set(args.parts) - ({"memory"} if args.no_memory else set())
    total = (
        2 * len(sizes) * len(args.threads) * ("render" in parts) + len(sizes) * ("env" in parts)
        + len(vec_envs) * len(args.threads) * ("vector" in parts) + ("memory" in parts)
    )  # fmt: skip
    render_rows, env_rows, vec_rows, mem = [], [], [], None
    with tqdm(total=total, desc="bench_core", file=sys.stderr) as progress:
        if "render" in parts:
            render_rows = bench_renderers(sizes, args.threads, args.reps, args.planes, ("navgym", "scipy"), progress)
        if "env" in parts:
            env_rows = bench_env(sizes, args.steps, args.reps, progress)
        if "vector" in parts:
            vec_rows = bench_vector(vec_envs, args.threads, 64, args.batches, args.reps, progress)
        if "render" in parts:  # torch last: its OpenMP threads keep spinning after each op
            bench_renderers(sizes, args.threads, args.reps, args.planes, ("torch",), progress, render_rows)
        if "memory" in parts:
            mem = bench_memory(8)
            progress.update(1)
    meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["cores_after"] = core_capacity()
    text = table(render_rows, env_rows, vec_rows, mem, meta)
    print(text)
    if args.out:
        write_atomic(args.out, text)


if __name__ == "__main__":
    main()
