"""The world-model comparison inside a fixed wall-clock budget on one device (a lent GPU session).

    python benchmarks/wm_timebox.py --model-size capable --seconds 540 --out reports/wm_capable_gpu

1. renders the probe data in the background (``world_model.evaluate --prepare-data``, CPU);
2. measures each method's training throughput alone on the device (``benchmarks/bench_train.py``,
   the second half of ``--calibration-steps`` timed; navwm and navwm_joint in their stage 2);
3. picks the frames per run F (a whole number of steps of ``--batch`` clips) so that every run's
   predicted device time, summed over methods and seeds, fits the training share of the budget times
   ``--safety``, capped at ``--max-frames``: the same F for every run;
4. trains every method x seed with ``benchmarks/wm_report.sh`` (``STAGES=train``, ``CONCURRENCY`` at
   once), stopped at its deadline (runs that did not finish are left out of the evaluation and named);
5. evaluates the finished runs in ``--eval-shards`` processes (``--shard i/K``) until the evaluation
   deadline, then writes the report from what they finished (``--cached-only``; missing units named).

``OUT/timebox.json`` records the plan, the measured rates, F, each stage's wall time and what ran where.
The same report without a time box: ``bash benchmarks/wm_report.sh MODEL_SIZE F OUT``.  On one H200
(reports/wm_capable_gpu) the capable training fit (30 runs in 162 s) and the evaluation did not (8 of
40 encoders in 315 s with 8 shards): time one encoder's probes before choosing ``--eval-seconds``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from navgym.files import write_json_atomic  # noqa: E402
from world_model.config import METHODS, MODEL_SIZES, TrainConfig, make_config  # noqa: E402

# the throughput profile each method's steps run at: (stage-1 share profile, rest profile)
TWO_STAGE = {"navwm": "navwm", "shuffled": "navwm", "noaction": "navwm",
             "navwm_joint": "navwm_joint", "shuffled_joint": "navwm_joint", "noaction_joint": "navwm_joint"}
CALIBRATED = ("tokenizer", "navwm", "navwm_joint", "mae2d", "mae3d")


def mae3d_crops_per_step(size: str, batch: int) -> int:
    """Crops per mae3d step for the same voxels as ``batch`` clips of slices (as wm_report.sh)."""
    m = MODEL_SIZES[size]
    return max(1, round(batch * m.window * m.size ** 2 / m.crop ** 3))


def device_seconds_per_step(method: str, rates: dict, size: str, batch: int, stage1_frac: float) -> float:
    """Predicted device seconds per optimiser step of ``method`` alone on the device, from the
    calibration ``rates`` (frames/s; mae3d: crops/s)."""
    frames = batch * MODEL_SIZES[size].window
    if method == "random":
        return 0.0
    if method == "mae3d":
        return mae3d_crops_per_step(size, batch) / rates["mae3d"]
    if method in TWO_STAGE:
        return frames * (stage1_frac / rates["tokenizer"] + (1 - stage1_frac) / rates[TWO_STAGE[method]])
    return frames / rates[method]


def plan_frames(rates: dict, methods, seeds, size: str, batch: int, seconds: float, safety: float,
                max_frames: int, stage1_frac: float = TrainConfig.stage1_frac) -> dict:
    """The frames per run that fit ``seconds`` x ``safety`` of device time for every run (a whole
    number of steps, at most ``max_frames``)."""
    per_step = sum(device_seconds_per_step(m, rates, size, batch, stage1_frac) for m in methods) * len(seeds)
    frames_per_step = batch * MODEL_SIZES[size].window
    steps = min(int(seconds * safety / per_step) if per_step > 0 else 0, max_frames // frames_per_step)
    if steps < 1:
        raise ValueError(f"not one step fits {seconds:.0f} s x {safety} (predicted {per_step:.2f} device s per "
                         f"step of all runs)")
    return {"steps": steps, "frames": steps * frames_per_step, "device_s_per_step_all_runs": per_step,
            "predicted_train_s": steps * per_step}


def calibrate(size: str, steps: int, batch: int, device: str, log) -> tuple[dict, str]:
    """{profile: frames/s (mae3d crops/s)} of each calibrated method alone on ``device``."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--sizes", size, "--methods", *CALIBRATED,
           "--steps", str(steps), "--batch", str(batch), "--device", device, "--render", "auto", "--threads", "4"]
    log("calibrating: " + " ".join(cmd[1:]))
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"calibration failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    rates = {}
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            row = ast.literal_eval(line)
            rates[row["method"]] = row["frames_per_s"]
    return rates, res.stdout


def run_until(cmd, deadline: float, log, env=None, logfile=None) -> dict:
    """Run ``cmd`` (its own process group) until it ends or ``deadline`` (time.time()); returns
    {"rc", "wall_s", "timed_out"}."""
    t0 = time.time()
    out = open(logfile, "w") if logfile else None
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    timed_out = False
    try:
        p.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        timed_out = True
        log(f"deadline: stopping {' '.join(map(str, cmd[:4]))} ...")
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if out:
        out.close()
    return {"rc": p.returncode, "wall_s": time.time() - t0, "timed_out": timed_out}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-size", default="capable", choices=tuple(MODEL_SIZES))
    p.add_argument("--seconds", type=float, default=540, help="wall-clock budget of the whole job")
    p.add_argument("--eval-seconds", type=float, default=150, help="of which kept for the evaluation")
    p.add_argument("--out", default="reports/wm_timebox", help="report folder")
    p.add_argument("--runs", default="runs/wm_timebox", help="training runs folder")
    p.add_argument("--cache", default="runs/eval_cache", help="probe-data and units cache (evaluate --cache)")
    p.add_argument("--max-frames", type=int, default=2_000_000, help="frames per run at most")
    p.add_argument("--safety", type=float, default=0.7, help="share of the training time the prediction may fill")
    p.add_argument("--calibration-steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=16, help="clips per step (wm_report.sh BATCH)")
    p.add_argument("--concurrency", type=int, default=9, help="trainings at once")
    p.add_argument("--eval-shards", type=int, default=6, help="evaluation processes at once")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--device", default="auto", help="training and evaluation device")
    p.add_argument("--train-args", default="", help="wm_report.sh TRAIN_ARGS")
    p.add_argument("--eval-args", default="--tasks pose landmark_distance landmark_hit region --probes linear "
                                          "--n-labels --linear-n-labels 256 2048 --no-planning --reference-arch capable",
                   help="world_model.evaluate flags (protocol)")
    a = p.parse_args(argv)
    t0 = time.time()
    end = t0 + a.seconds
    out, runs = Path(a.out), Path(a.runs)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join(["python"] + sys.argv), "args": vars(a), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
              "host": platform.node(), "cpus": os.cpu_count(), "stages": {}}
    import torch

    from world_model.evaluation.report import versions

    record["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    record["versions"] = versions()

    def log(msg):
        print(f"[timebox {time.time() - t0:6.1f}s] {msg}", flush=True)

    def save():
        write_json_atomic(out / "timebox.json", record)

    size_px = MODEL_SIZES[a.model_size].size
    threads = str(max(1, (os.cpu_count() or 2) // a.concurrency))  # per training
    eval_threads = str(max(1, (os.cpu_count() or 2) // a.eval_shards))
    prep = subprocess.Popen([sys.executable, "-m", "world_model.evaluate", "--prepare-data", "--size", str(size_px),
                             "--cache", a.cache, "--out", str(out), "--threads", "4"], cwd=ROOT,
                            stdout=open(runs / "prepare_data.log", "w"), stderr=subprocess.STDOUT)
    rates, table = calibrate(a.model_size, a.calibration_steps, a.batch, a.device, log)
    record["calibration"] = {"rates": rates, "output": table[-4000:], "wall_s": time.time() - t0}
    log(f"rates (frames/s, mae3d crops/s): {rates}")
    train_deadline = end - a.eval_seconds
    startup = 45.0  # building subjects, CUDA context, held-out clips: overlapped only partly
    plan = plan_frames(rates, a.methods, a.seeds, a.model_size, a.batch, train_deadline - time.time() - startup,
                       a.safety, a.max_frames)
    record["plan"] = plan
    save()
    log(f"plan: {plan['frames']:,} frames per run = {plan['steps']} steps; predicted {plan['predicted_train_s']:.0f} "
        f"device s of training")
    env = {**os.environ, "CONCURRENCY": str(a.concurrency), "SEEDS": " ".join(map(str, a.seeds)),
           "METHODS": " ".join(a.methods), "BATCH": str(a.batch), "THREADS": threads, "RUNS": str(runs),
           "DEVICE": a.device, "TRAIN_ARGS": a.train_args, "EVAL_ARGS": a.eval_args}
    report = ["bash", "benchmarks/wm_report.sh", a.model_size, str(plan["frames"]), str(out)]
    record["stages"]["train"] = run_until(report, train_deadline, log, {**env, "STAGES": "train"},
                                          runs / "train.log")
    save()
    log(f"training: {record['stages']['train']}")
    try:  # the shards render what is still missing themselves
        prep.wait(timeout=max(1.0, end - a.eval_seconds / 2 - time.time()))
    except subprocess.TimeoutExpired:
        log("probe data still rendering: the evaluation shards render what they lack")
    finished, missing = [], []
    for m in a.methods:
        total = make_config(a.model_size, method=m, steps=plan["steps"])[1].total_steps
        for s in a.seeds:
            summary = runs / f"{m}_s{s}" / "summary.json"
            ok = summary.exists() and json.loads(summary.read_text()).get("step", -1) >= total
            (finished if ok else missing).append(f"{m}_s{s}")
    record["runs"] = {"finished": finished, "missing": missing}
    log(f"finished runs: {len(finished)}; not finished: {missing}")
    evaluate = [sys.executable, "-m", "world_model.evaluate", "--checkpoints",
                *[str(runs / r / "last.pt") for r in finished], "--out", str(out), "--device", a.device,
                "--threads", eval_threads, "--cache", a.cache, *a.eval_args.split()]
    record["stages"]["eval_command"] = " ".join(evaluate[1:])  # + --shard i/K, then + --cached-only
    eval_deadline = end - 25  # the assembly: load the encoders, read the cache, plots
    shards = [subprocess.Popen(evaluate + ["--shard", f"{i}/{a.eval_shards}"], cwd=ROOT,
                               stdout=open(runs / f"eval_shard{i}.log", "w"), stderr=subprocess.STDOUT,
                               start_new_session=True) for i in range(a.eval_shards)]
    t_eval = time.time()
    for sh in shards:
        try:
            sh.wait(timeout=max(1.0, eval_deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(sh.pid, signal.SIGKILL)
            sh.wait()
    record["stages"]["eval_shards"] = {"wall_s": time.time() - t_eval, "rcs": [sh.returncode for sh in shards]}
    save()
    log(f"evaluation shards: {record['stages']['eval_shards']}")
    record["stages"]["assemble"] = run_until(evaluate + ["--cached-only"], end + 60, log, logfile=runs / "assemble.log")
    record["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ")
    record["total_s"] = time.time() - t0
    save()
    log(f"done in {record['total_s']:.0f} s: {out}/report.md")
    return record


if __name__ == "__main__":
    main()
