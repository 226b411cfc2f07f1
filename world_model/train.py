"""Pretrain a world model or a baseline: set-up, resume, the loop and checkpoints (every method's
objective is its ``compute_loss``, :mod:`world_model.methods`).

    python -m world_model.train --method navwm --model-size tiny --steps 300 --out runs/navwm_tiny
    torchrun --nproc_per_node 2 -m world_model.train --method navwm --model-size tiny --device cpu ...

Methods: navwm, shuffled, noaction (two-stage), navwm_joint, shuffled_joint, noaction_joint
(encoder trained by the prediction too), tokenizer, mae2d, mae3d, random; every method gets the
same steps, batch and training subjects.  ``--device auto`` trains on CUDA when there is one, and
then renders the clips there too (``--render auto``).

Logs (TensorBoard under OUT/tb): ``loss/*``, ``eval/*`` (held-out 'val' clips: reconstruction PSNR,
one-step prediction PSNR with the true and with shuffled actions, their gap ``eval/delta_psnr``,
collapse diagnostics), ``perf/*`` (frames/s, share of time waiting for data), images of true vs
predicted decoded next slices.  ``OUT/last.pt`` (atomic) holds config, model, optimiser, step and
RNG; an existing one is resumed exactly (batches depend only on (seed, rank, step)), a larger ``--steps``
extends it, and other settings are refused.  ``OUT/config.json`` holds the settings: ``--config
OUT/config.json`` (or ``OUT/last.pt``) starts from them, options given on top.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from navgym.files import RunFolderError, atomic_path, differences, write_json_atomic

from .config import ModelConfig, TrainConfig, add_arguments, as_dict, config_from_dict, make_config
from .data import clip_batches, render_device
from .checkpoint import load_checkpoint
from .encoders import count_params
from .methods import build_model
from .tokenizer import to_unit

__all__ = ["train", "main", "parse_args"]


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


def train(model_cfg: ModelConfig, cfg: TrainConfig, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run (or resume) training; returns the final logged scalars (rank 0) and the checkpoint path.

    stop_after : leave (with a checkpoint) after this many steps of this call, as an interrupted
    job would; a later call with the same config resumes."""
    cfg.validate(model_cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    log = (lambda msg: print(f"[world_model.train] {msg}", file=sys.stderr, flush=True)) if rank == 0 and progress \
        else (lambda msg: None)
    device = torch.device("cuda" if (cfg.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    ckpt = out / "last.pt"
    log(f"building {cfg.method} ({cfg.model_size}) on {device}")
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, cfg.method, cfg, rank).to(device)
    model.seed = cfg.seed
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if ckpt.exists():
        state = load_checkpoint(ckpt, map_location=device)
        old_m, old_t = config_from_dict(state["config"])
        diffs = differences(as_dict(old_m, replace(old_t, steps=0)), as_dict(model_cfg, replace(cfg, steps=0)))
        if diffs:
            raise RunFolderError(f"{ckpt} was written with other settings ({'; '.join(diffs)}); use a new --out, or "
                                 f"the saved settings (--config {ckpt}) to resume or extend it")
        log(f"resuming from {ckpt}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "config.json", as_dict(model_cfg, cfg))  # read back by --config
    steps = cfg.total_steps
    amp = cfg.amp and device.type == "cuda"
    if cfg.compile:
        for part in (model.tokenizer, model.dynamics, model.mae):
            for child in (part.children() if part is not None else ()):
                child.compile()
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        writer.add_text("config", json.dumps(as_dict(model_cfg, cfg)), start)
    log(f"starting the data stream ({cfg.data}, subjects {cfg.subjects}; building subjects can take ~20 s)")
    data = model.batches(rank, world, start, device) if start < steps else None
    eval_batch = None
    if rank == 0 and model.tokenizer is not None and steps > 0:
        log("rendering held-out 'val' clips for evaluation")
        eval_cfg = TrainConfig(**{**cfg.__dict__, "data": "stream", "batch": 16, "workers": 0, "stride": 1})
        eval_batch = next(clip_batches(eval_cfg, model_cfg, split="val", seed_salt=999,
                                       device=render_device(eval_cfg, device)))
        eval_batch = {k: v.to(device) for k, v in eval_batch.items()}
    last, t_data, t_total, frames_done = {}, 0.0, 0.0, 0
    bar = None
    if rank == 0 and progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=min(start, steps), desc=f"{cfg.method}/{model_cfg.size}px", dynamic_ncols=True)
    stop = steps if stop_after is None else min(steps, start + stop_after)
    for step in range(start, stop):
        t0 = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in next(data).items()}
        t1 = time.perf_counter()
        lo, hi = model.stage(step)
        lr = _lr(cfg, step, lo, hi)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            losses = model.compute_loss(batch, step)
        loss = losses.pop("loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _allreduce_grads(model, world)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        t_data, t_total = t_data + (t1 - t0), t_total + (t2 - t0)
        frames_done += model.frames_per_batch() * world
        last = {"loss/total": float(loss.detach()), **{f"loss/{k}": float(v) for k, v in losses.items()}}
        done = step + 1
        if rank == 0:
            if done % cfg.log_every == 0 or done == steps:
                last.update({"perf/frames_per_s": frames_done / max(t_total, 1e-9),
                             "perf/data_wait_frac": t_data / max(t_total, 1e-9), "perf/lr": lr})
                for k, v in last.items():
                    writer.add_scalar(k, v, done)
                t_data = t_total = frames_done = 0
            if eval_batch is not None and (done % cfg.eval_every == 0 or done == steps):
                last.update(_evaluate(model, eval_batch, writer, done))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if done % cfg.ckpt_every == 0 or done == stop:
            _checkpoint(model, opt, model_cfg, cfg, done, ckpt, rank)
    if steps == 0 or start >= steps:
        _checkpoint(model, opt, model_cfg, cfg, max(start, steps), ckpt, rank)
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    if rank == 0:
        summary = {"checkpoint": str(ckpt), "params": count_params(model), "step": max(start, steps), **last}
        write_json_atomic(out / "summary.json", summary)
        return summary
    return {}


def _evaluate(model, batch, writer, step) -> dict:
    frames = batch["frames"]
    c = model.evaluate(batch)
    scalars = {f"eval/{k}": v for k, v in c.items() if not k.startswith("_")}
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


def _checkpoint(model, opt, model_cfg, cfg, step, ckpt, rank):
    if rank != 0:
        return
    state = {"config": as_dict(model_cfg, cfg), "model": model.state_dict(), "optim": opt.state_dict(),
             "step": step, "torch_rng": torch.get_rng_state()}
    atomic_path(ckpt, lambda tmp: torch.save(state, tmp))


def parse_args(argv=None) -> tuple[ModelConfig, TrainConfig]:
    p = argparse.ArgumentParser(prog="python -m world_model.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, metavar="FILE",
                   help="start from a run's settings: its checkpoint (OUT/last.pt) or a JSON file "
                        '{"model": {...}, "train": {...}}; options given here override them (default: none)')
    add_arguments(p)
    a = vars(p.parse_args(argv))
    config, size = a.pop("config"), a.pop("model_size")
    given = {k: v for k, v in a.items() if v is not None}
    try:
        if config is not None:
            saved = (json.loads(Path(config).read_text()) if config.endswith(".json")
                     else load_checkpoint(config)["config"])
            saved_m, saved_t = config_from_dict(saved)
            base = {k: v for k, v in saved_t.__dict__.items() if k != "model_size"}
            if size in (None, saved_t.model_size):  # another --model-size takes that size's model
                size, base = saved_t.model_size, {**base, **saved_m.__dict__}
            given = {**base, **given}
        return make_config(size or "tiny", **given)
    except (OSError, KeyError, TypeError, ValueError) as e:
        p.error(f"{config}: {e}" if config is not None and not isinstance(e, ValueError) else str(e))


def main(argv=None) -> dict:
    model_cfg, cfg = parse_args(argv)
    try:
        summary = train(model_cfg, cfg)
    except RunFolderError as e:
        raise SystemExit(f"world_model.train: {e}") from None
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
