"""Pretrain a world model or a baseline: set-up, resume, the loop and checkpoints (every method's
objective is its ``compute_loss``, :mod:`world_model.methods`).  :class:`Run` is one run's model,
optimiser, step, logging and checkpoints; :func:`train` loops one, :mod:`world_model.comparison`
many at once.

    python -m world_model.train --method navwm --model-size tiny --steps 300 --out runs/navwm_tiny
    torchrun --nproc_per_node 2 -m world_model.train --method navwm --model-size tiny --device cpu ...

Methods: navwm, shuffled, noaction (two-stage), navwm_joint, shuffled_joint, noaction_joint
(encoder trained by the prediction too), tokenizer, mae2d, mae3d, random_init, navjump, shuffled_navjump,
noaction_navjump (the view after one far jump), relpose (the jump between two slices); every method gets the
same steps, batch and training subjects.  ``--device auto`` trains on CUDA when there is one, and
then renders the clips there too (``--render auto``).

Logs (TensorBoard under OUT/tb): ``loss/*``, ``eval/*`` (held-out 'val' clips: reconstruction PSNR,
one-step prediction PSNR with the true and with shuffled actions, their gap ``eval/delta_psnr``,
collapse diagnostics), ``pred/<row>/*`` (dynamics family and relpose: the prediction-quality table of
:mod:`world_model.prediction`, also in summary.json and the checkpoint as ``prediction``), ``perf/*``
(frames/s, share of time waiting for data), images of true vs predicted decoded next slices.  ``OUT/last.pt`` (atomic) holds config, model, optimiser, step and
RNG; an existing one is resumed exactly (batches depend only on (seed, rank, step)), a larger ``--steps``
extends it, and other settings are refused.  ``OUT/config.json`` holds the settings: ``--config
OUT/config.json`` (or ``OUT/last.pt``) starts from them, options given on top.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from navgym.configs import to_dict
from navgym.deprecation import warn_deprecated
from navgym.files import RunFolderError, atomic_path, differences, write_json_atomic

from .config import ModelConfig, TrainConfig, add_arguments, as_dict, config_from_dict, make_config
from .data import clip_batches, held_out_config, render_device
from .device import resolve_device
from .checkpoint import load_checkpoint
from .methods import build_method
from .model import count_params
from .prediction import prediction_batch
from .tokenizer import to_unit

__all__ = ["train", "Run", "eval_clips", "main", "parse_args", "parser"]


def _lr(cfg: TrainConfig, step: int, start: int, end: int) -> float:
    """Linear warmup then cosine decay, restarted at each stage boundary ``start``."""
    k, n = step - start, max(1, end - start)
    if k < cfg.warmup:
        return cfg.lr * (k + 1) / (cfg.warmup + 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (k - cfg.warmup) / max(1, n - cfg.warmup))))


def _allreduce_grads(model, world: int) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if world == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    i = 0
    for g in grads:
        g.copy_(flat[i:i + g.numel()].view_as(g))
        i += g.numel()


def eval_clips(cfg: TrainConfig, model_cfg: ModelConfig, device: torch.device, prediction: bool = True) -> dict:
    """The held-out 'val' data every run of seed ``cfg.seed`` is evaluated on: ``clips`` (16 clips of
    ``window`` frames) and, with ``prediction``, ``prediction`` (:func:`world_model.prediction.prediction_batch`)."""
    eval_cfg = held_out_config(cfg, 16)
    batch = next(clip_batches(eval_cfg, model_cfg, split="val", seed_salt=999, device=render_device(eval_cfg, device)))
    out = {"clips": {k: v.to(device) for k, v in batch.items()}}
    if prediction:
        out["prediction"] = prediction_batch(cfg, model_cfg, device)
    return out


class Run:
    """One training run: the method's model and optimiser (resumed from ``OUT/last.pt`` when there is
    one), its learning-rate schedule, step, logging and checkpoints.  :func:`train` loops one over its
    own data; :mod:`world_model.comparison` steps many in one loop on shared data.

    No host synchronisation inside :meth:`step`: the last step's losses stay on the device until
    :meth:`flush` (every ``log_every`` steps) reads them."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device, rank: int = 0, world: int = 1,
                 log=lambda msg: None, tensorboard: bool = True):
        cfg.validate(model_cfg)
        self.model_cfg, self.cfg, self.device, self.rank, self.world = model_cfg, cfg, device, rank, world
        self.out = Path(cfg.out)
        self.ckpt = self.out / "last.pt"
        torch.manual_seed(cfg.seed)
        model = build_method(model_cfg, cfg.method, cfg, rank).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.seed = cfg.seed
        self.model = model
        fused = {"fused": True} if cfg.fused_adam else {}
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
        self.start = 0
        if self.ckpt.exists():
            state = load_checkpoint(self.ckpt, map_location=device)
            old_m, old_t = config_from_dict(state["config"])
            diffs = differences(as_dict(old_m, replace(old_t, steps=0)), as_dict(model_cfg, replace(cfg, steps=0)))
            if diffs:
                raise RunFolderError(f"{self.ckpt} was written with other settings ({'; '.join(diffs)}); use a new "
                                     f"--out, or the saved settings (--config {self.ckpt}) to resume or extend it")
            log(f"resuming from {self.ckpt}")
            model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optim"])
            torch.set_rng_state(state["torch_rng"])
            self.start = int(state["step"])
            model.prediction_quality = state.get("prediction")
        if rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.out / "config.json", as_dict(model_cfg, cfg))  # read back by --config
        self.steps = cfg.total_steps
        self.amp = cfg.amp and device.type == "cuda"
        if cfg.compile:
            for part in (model.tokenizer, model.dynamics, model.mae):
                for child in (part.children() if part is not None else ()):
                    child.compile(mode=cfg.compile_mode)
        self.writer = None
        if rank == 0 and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"))
            self.writer.add_text("config", json.dumps(as_dict(model_cfg, cfg)), self.start)
        self.losses, self.last, self.lr, self.data_stats = {}, {}, cfg.lr, {}
        self.frames_done = 0

    def step(self, batch: dict, step: int) -> None:
        """One optimiser step of ``step`` on ``batch`` (already on the device)."""
        model, opt = self.model, self.opt
        lo, hi = model.stage(step)
        self.lr = _lr(self.cfg, step, lo, hi)
        for g in opt.param_groups:
            g["lr"] = self.lr
        model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            losses = model.compute_loss(batch, step)
        loss = losses.pop("loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _allreduce_grads(model, self.world)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        self.losses = {"loss/total": loss.detach(), **{f"loss/{k}": v for k, v in losses.items()}}
        self.frames_done += model.frames_per_batch() * self.world

    def copy_from(self, other: "Run") -> None:
        """Take ``other``'s weights and optimiser state (a shared stage trained once)."""
        self.model.load_state_dict(other.model.state_dict())
        self.opt.load_state_dict(copy.deepcopy(other.opt.state_dict()))

    def flush(self, done: int, seconds: float, data_seconds: float = 0.0) -> dict:
        """Read the last step's losses (one host sync) and log them with the throughput over the
        ``seconds`` since the last flush; returns the scalars."""
        self.last = {k: float(v) for k, v in self.losses.items()}
        _check_finite(self.last, done, self.ckpt)
        self.last.update({"perf/frames_per_s": self.frames_done / max(seconds, 1e-9),
                          "perf/data_wait_frac": data_seconds / max(seconds, 1e-9), "perf/lr": self.lr})
        if self.writer is not None:
            for k, v in self.last.items():
                self.writer.add_scalar(k, v, done)
        self.frames_done = 0
        return self.last

    def log_held_out(self, batch: dict, done: int) -> None:
        """Held-out metrics on an :func:`eval_clips` batch (``eval/*``: logged, and kept for the
        summary), and the prediction-quality table of the models that have one
        (``pred/<row>/<metric>``; in the summary and the checkpoint)."""
        self.last.update(_log_held_out_metrics(self.model, batch["clips"], self.writer, done))
        if self.model.predicts:
            table = self.model.prediction_quality = self.model.prediction(batch["prediction"])
            self.data_stats = _action_stats(batch["prediction"])
            rows = {row: metrics for row, metrics in table.items() if row != "headline"}
            for row, metrics in rows.items() if self.writer is not None else ():
                for k, v in metrics.items():
                    self.writer.add_scalar(f"pred/{row}/{k}", float(v), done)

    def evaluate(self, batch: dict, done: int) -> None:
        """Deprecated name of :meth:`log_held_out` (kept one release)."""
        warn_deprecated("Run.evaluate", "Run.log_held_out")
        self.log_held_out(batch, done)

    def checkpoint(self, done: int) -> None:
        _check_finite_weights(self.model, done, self.ckpt)
        _checkpoint(self.model, self.opt, self.model_cfg, self.cfg, done, self.ckpt, self.rank)

    def finish(self, done: int) -> dict:
        """Close the logs and write ``summary.json`` (rank 0); returns the summary."""
        if self.writer is not None:
            self.writer.close()
        if self.rank != 0:
            return {}
        summary = {"checkpoint": str(self.ckpt), "params": count_params(self.model), "step": done, **self.data_stats,
                   **self.last, "prediction": getattr(self.model, "prediction_quality", None)}
        write_json_atomic(self.out / "summary.json", summary)
        return summary


def train(model_cfg: ModelConfig, cfg: TrainConfig, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run (or resume) training; returns the final logged scalars (rank 0) and the checkpoint path.

    stop_after : leave (with a checkpoint) after this many steps of this call, as an interrupted
    job would; a later call with the same config resumes."""
    cfg.validate(model_cfg)
    rank, world, device = _join(cfg)
    log = _logger(rank == 0 and progress)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log(f"building {cfg.method} ({cfg.model_size}) on {device}")
    run = Run(model_cfg, cfg, device, rank, world, log)
    start, steps = run.start, run.steps
    log(f"starting the data stream ({cfg.data}, subjects {cfg.subjects}; building subjects can take ~20 s)")
    data = run.model.batches(rank, world, start, device) if start < steps else None
    held_out = _held_out_batch(run, log)
    bar = _progress_bar(run) if rank == 0 and progress else None
    _loop(run, data, range(start, steps if stop_after is None else min(steps, start + stop_after)), held_out, bar)
    if steps == 0 or start >= steps:
        run.checkpoint(max(start, steps))
    if bar is not None:
        bar.close()
    return run.finish(max(start, steps))


def _join(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """This process's rank, the number of processes (torchrun's environment, 1 without) and its
    device; joins the process group (NCCL on CUDA, gloo on the CPU) when there are several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(cfg.device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return rank, world, device


def _logger(on: bool):
    """Progress messages to stderr (``on``), else nothing."""
    if not on:
        return lambda msg: None
    return lambda msg: print(f"[world_model.train] {msg}", file=sys.stderr, flush=True)


def _held_out_batch(run: Run, log) -> dict | None:
    """Rank 0's :func:`eval_clips` batch for :meth:`Run.log_held_out` (None on other ranks, for a
    model without a tokenizer and for a run without steps)."""
    if run.rank != 0 or run.model.tokenizer is None or run.steps == 0:
        return None
    log("rendering held-out 'val' clips for evaluation")
    return eval_clips(run.cfg, run.model_cfg, run.device, prediction=run.model.predicts)


def _progress_bar(run: Run):
    from tqdm import tqdm

    return tqdm(total=run.steps, initial=min(run.start, run.steps), desc=f"{run.cfg.method}/{run.model_cfg.size}px",
                dynamic_ncols=True)


def _loop(run: Run, data, steps: range, held_out: dict | None, bar) -> None:
    """Train ``run`` for ``steps`` on ``data``: losses and throughput logged every ``log_every`` steps
    (held-out metrics and checkpoints left out of the throughput), held-out metrics every
    ``eval_every`` and at the run's last step, a checkpoint every ``ckpt_every`` and at the end."""
    cfg, device, lead = run.cfg, run.device, run.rank == 0
    t_data, t_flush = 0.0, time.perf_counter()
    for step in steps:
        t0 = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in next(data).items()}
        t_data += time.perf_counter() - t0
        run.step(batch, step)
        done = step + 1
        if lead and (done % cfg.log_every == 0 or done == steps.stop):
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # once per log interval: the throughput is the device's
            last = run.flush(done, time.perf_counter() - t_flush, t_data)
            t_data, t_flush = 0.0, time.perf_counter()
            if bar is not None:
                bar.set_postfix(loss=f"{last['loss/total']:.4f}")
        t1 = time.perf_counter()
        if lead and held_out is not None and (done % cfg.eval_every == 0 or done == run.steps):
            run.log_held_out(held_out, done)
        if bar is not None:
            bar.update(1)
        if done % cfg.ckpt_every == 0 or done == steps.stop:
            run.checkpoint(done)
        t_flush += time.perf_counter() - t1


def _log_held_out_metrics(model, batch, writer, step) -> dict:
    """The model's held-out metrics on a clip batch as ``eval/*`` scalars, logged with images of true
    vs predicted next slices when ``writer``."""
    frames = batch["frames"]
    c = model.held_out_metrics(batch)
    scalars = {f"eval/{k}": v for k, v in c.items() if not k.startswith("_")}
    if writer is None:
        return scalars
    for k, v in scalars.items():
        writer.add_scalar(k, v, step)
    if "_img_true" in c:
        n = min(4, len(frames))
        true = to_unit(frames[:n, 1:].flatten(0, 1)).reshape(n, -1, *frames.shape[2:])
        rows = [true, c["_img_true"][:n, :, 0], c["_img_shuffled"][:n, :, 0]]
        # blocks top to bottom: true next frames, predicted (true actions), predicted (shuffled); clips x time
        grid = torch.cat([r.clamp(0, 1).permute(0, 2, 1, 3).reshape(n * r.shape[2], -1) for r in rows], 0)
        writer.add_image("images/true_pred_shuffled", grid[None].float().cpu(), step)
    return scalars


def _action_stats(batch: dict) -> dict:
    """The held-out clips' action statistics for the summary: lag-1 autocorrelation of the policy's actions
    and the correlation of each far jump with the action before it (both ~0 when unpredictable)."""
    from navgym.policies import action_autocorrelation

    last, jump = batch["actions"][:, -1].double().cpu(), batch["jump_actions"].double().cpu()
    corr = torch.stack([torch.corrcoef(torch.stack([last[:, i], jump[:, i]]))[0, 1] for i in range(7)])
    return {"actions_lag1_autocorr": action_autocorrelation(batch["actions"].cpu().numpy()),
            "jump_vs_last_action_corr": float(corr[torch.isfinite(corr)].mean())}


def _check_finite(losses: dict[str, float], step: int, ckpt: Path) -> None:
    """Stop the run at a non-finite loss (NaN weights would follow), naming the step and the loss terms;
    ``ckpt`` keeps the last checkpoint written before it."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"step {step}: non-finite loss ({', '.join(f'{k}={v}' for k, v in bad.items())}); stopped without "
            f"saving, {ckpt} keeps the last good checkpoint (if any). Check the data for NaN/inf (actions, poses) "
            f"or lower --lr")


def _check_finite_weights(model, step: int, ckpt: Path) -> None:
    """Refuse to checkpoint non-finite weights (one host sync per checkpoint)."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        names = [k for k, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        raise FloatingPointError(f"step {step}: {len(names)} weight tensors are non-finite (e.g. {names[:3]}); "
                                 f"stopped without saving, {ckpt} keeps the last good checkpoint (if any)")


def _checkpoint(model, opt, model_cfg, cfg, step, ckpt, rank):
    if rank != 0:
        return
    state = {"config": as_dict(model_cfg, cfg), "model": model.state_dict(), "optim": opt.state_dict(),
             "step": step, "torch_rng": torch.get_rng_state(), "prediction": getattr(model, "prediction_quality", None)}
    atomic_path(ckpt, lambda tmp: torch.save(state, tmp))


def parser() -> argparse.ArgumentParser:
    """``python -m world_model.train`` options (:func:`world_model.config.add_arguments`) and ``--config``."""
    p = argparse.ArgumentParser(prog="python -m world_model.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, metavar="FILE",
                   help="start from a run's settings: its checkpoint (OUT/last.pt) or a JSON file "
                        '{"model": {...}, "train": {...}}; options given here override them (default: none)')
    add_arguments(p)
    return p


def parse_args(argv=None) -> tuple[ModelConfig, TrainConfig]:
    p = parser()
    a = vars(p.parse_args(argv))
    config, size = a.pop("config"), a.pop("model_size")
    given = {k: v for k, v in a.items() if v is not None}
    try:
        if config is not None:
            saved = (json.loads(Path(config).read_text()) if config.endswith(".json")
                     else load_checkpoint(config)["config"])
            saved_m, saved_t = config_from_dict(saved)
            base = {k: v for k, v in to_dict(saved_t).items() if k != "model_size"}
            if size in (None, saved_t.model_size):  # the saved model; another --model-size takes that size's model
                base.update(to_dict(saved_m))
            given = {**base, **given}
        return make_config(size or "tiny", **given)
    except (OSError, KeyError, TypeError, ValueError) as e:
        p.error(f"{config}: {e}" if config is not None and not isinstance(e, ValueError) else str(e))


def main(argv=None) -> dict:
    model_cfg, cfg = parse_args(argv)
    try:
        summary = train(model_cfg, cfg)
    except RunFolderError as e:
        parser().error(str(e))
    if summary:
        print(json.dumps({k: v for k, v in summary.items()}, indent=1))
    if dist.is_initialized():
        # every rank reaches the end before any tears gloo down: a rank that left early while rank 0 still
        # checkpointed aborted in gloo's teardown ("terminate called without an active exception")
        dist.barrier()
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
