"""Pretrain a world model or a baseline.

    python -m world_model.train --method navwm --config tiny --data stream --steps 300 --out runs/navwm_tiny
    torchrun --nproc_per_node 2 -m world_model.train --method navwm --config tiny --device cpu ...

Methods: ``navwm`` (stage 1 tokenizer, stage 2 action-conditioned dynamics on the frozen tokenizer,
``--joint true`` to fine-tune it with the dynamics loss), ``shuffled`` (actions permuted across the
batch), ``noaction`` (the "no action" embedding only), ``tokenizer`` (reconstruction only, width
matched), ``mae3d`` (3D MAE on volume crops, width matched), ``random`` (no training: writes the
initialised navwm model).  Every method gets the same steps, batch and training subjects.

Logs (TensorBoard under OUT/tb): ``loss/*``, ``eval/*`` (held-out 'val' clips: reconstruction PSNR,
one-step prediction PSNR with the true and with shuffled actions, and their gap
``eval/delta_psnr``), ``perf/*`` (frames/s, share of time waiting for data), images of true vs
predicted decoded next slices.  ``OUT/last.pt`` (atomic) holds config, model, optimiser, step and
RNG; an existing one is resumed exactly (batches depend only on (seed, rank, step)).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .config import ModelConfig, TrainConfig, add_arguments, as_dict, config_from_dict, make_config
from .data import VolumeCrops, clip_batches, step_generator
from .encoders import DYNAMIC, WorldModel, build_model, count_params
from .tokenizer import psnr, to_unit

__all__ = ["train", "main", "controllability"]


def _lr(cfg: TrainConfig, step: int, start: int, end: int) -> float:
    """Linear warmup then cosine decay, restarted at each stage boundary ``start``."""
    k, n = step - start, max(1, end - start)
    if k < cfg.warmup:
        return cfg.lr * (k + 1) / (cfg.warmup + 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (k - cfg.warmup) / max(1, n - cfg.warmup))))


def _stage1_steps(cfg: TrainConfig) -> int:
    return int(cfg.stage1_frac * cfg.steps) if cfg.method in DYNAMIC else cfg.steps


def _latents(model: WorldModel, frames: torch.Tensor, grad: bool) -> torch.Tensor:
    b, t = frames.shape[:2]
    with torch.set_grad_enabled(grad):
        return model.tokenizer.encode(frames.reshape(b * t, *frames.shape[2:])).reshape(b, t, *model.latent_shape)


def step_loss(model: WorldModel, cfg: TrainConfig, batch, step: int, rank: int = 0, volumes=None):
    """Loss and logged scalars of training step ``step`` (randomness from (seed, step, rank))."""
    gen = step_generator(cfg.seed, step, rank, 1)
    if cfg.method == "mae3d":
        crops = volumes.batch(max(1, cfg.batch // 4), gen).to(next(model.parameters()).device)
        return model.mae.compute_loss(crops, gen)
    frames = batch["frames"]
    stage2 = cfg.method in DYNAMIC and step >= _stage1_steps(cfg)
    if not stage2:
        b, t = frames.shape[:2]
        return model.tokenizer.compute_loss(frames.reshape(b * t, *frames.shape[2:]))
    actions = batch["actions"]
    if cfg.method == "shuffled":
        actions = actions[torch.randperm(len(actions), generator=gen).to(actions.device)]
    drop = None
    if cfg.method == "noaction":
        actions = None
    elif cfg.action_dropout > 0:
        drop = (torch.rand(actions.shape[:2], generator=gen) < cfg.action_dropout).to(actions.device)
    z = _latents(model, frames, cfg.joint)
    target = z.detach()
    out = model.dynamics.losses(target if not cfg.joint else z, actions, drop)
    loss = F.mse_loss(out["pred"][:, :-1], target[:, 1:]) + cfg.rollout_weight * out.get("rollout_mse", 0.0)
    logs = {"dyn_mse": out["dyn_mse"].detach()}
    if "rollout_mse" in out:
        logs["rollout_mse"] = out["rollout_mse"].detach()
    if cfg.joint:
        b, t = frames.shape[:2]
        rec, rlogs = model.tokenizer.compute_loss(frames.reshape(b * t, *frames.shape[2:]))
        loss = loss + rec
        logs.update(rlogs)
    return loss, logs


@torch.no_grad()
def controllability(model: WorldModel, frames: torch.Tensor, actions: torch.Tensor, seed: int = 0) -> dict:
    """One-step prediction quality on clips with the true actions vs actions shuffled across the batch.

    Returns decoded-slice PSNR (dB) of the predicted next frames ``psnr_true`` / ``psnr_shuffled``,
    their gap ``delta_psnr`` (Genie's Delta-PSNR analogue), and latent MSEs ``latent_mse_true`` /
    ``latent_mse_shuffled``; plus ``recon_psnr`` of the tokenizer."""
    model.eval()
    b, t = frames.shape[:2]
    x = to_unit(frames.reshape(b * t, *frames.shape[2:])).reshape(b, t, 1, *frames.shape[2:])
    z = _latents(model, frames, False)
    rec = model.tokenizer.decode(z.flatten(0, 1)).reshape(x.shape)
    out = {"recon_psnr": float(psnr(F.mse_loss(rec, x)))}
    if model.dynamics is None:
        return out
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed)).to(actions.device)
    for name, a in (("true", actions), ("shuffled", actions[perm])):
        pred = model.dynamics(z, None if model.method == "noaction" else a)[:, :-1]
        img = model.tokenizer.decode(pred.flatten(0, 1)).reshape(x[:, 1:].shape)
        out[f"latent_mse_{name}"] = float(F.mse_loss(pred, z[:, 1:]))
        out[f"psnr_{name}"] = float(psnr(F.mse_loss(img, x[:, 1:])))
        out[f"_img_{name}"] = img
    out["delta_psnr"] = out["psnr_true"] - out["psnr_shuffled"]
    return out


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, cfg.method).to(device)
    model.seed = cfg.seed
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        old_m, old_t = config_from_dict(state["config"])
        if old_m != model_cfg or {**old_t.__dict__, "steps": 0} != {**cfg.__dict__, "steps": 0}:
            raise ValueError(f"{ckpt} was written with another config; use a new --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    steps = cfg.total_steps
    s1 = _stage1_steps(cfg)
    amp = cfg.amp and device.type == "cuda"
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        writer.add_text("config", json.dumps(as_dict(model_cfg, cfg)), start)
    volumes = VolumeCrops(cfg, model_cfg) if cfg.method == "mae3d" else None
    data = None if cfg.method in ("mae3d", "random") else clip_batches(cfg, model_cfg, rank, world, start)
    eval_batch = None
    if rank == 0 and cfg.method in DYNAMIC or cfg.method == "tokenizer":
        eval_cfg = TrainConfig(**{**cfg.__dict__, "data": "stream", "batch": 16, "workers": 0})
        eval_batch = next(clip_batches(eval_cfg, model_cfg, split="val", seed_salt=999))
    last, t_data, t_total, frames_done = {}, 0.0, 0.0, 0
    bar = None
    if rank == 0 and progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=min(start, steps), desc=f"{cfg.method}/{model_cfg.size}px", dynamic_ncols=True)
    frames_per_batch = (max(1, cfg.batch // 4) if cfg.method == "mae3d" else cfg.batch * model_cfg.window)
    stop = steps if stop_after is None else min(steps, start + stop_after)
    for step in range(start, stop):
        t0 = time.perf_counter()
        batch = None
        if data is not None:
            batch = {k: v.to(device, non_blocking=True) for k, v in next(data).items()}
        t1 = time.perf_counter()
        stage2 = cfg.method in DYNAMIC and step >= s1
        if stage2 and not cfg.joint:
            model.tokenizer.requires_grad_(False)
        lr = _lr(cfg, step, s1 if stage2 else 0, steps if stage2 or cfg.method not in DYNAMIC else s1)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, logs = step_loss(model, cfg, batch, step, rank, volumes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _allreduce_grads(model, world)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        t_data, t_total, frames_done = t_data + (t1 - t0), t_total + (t2 - t0), frames_done + frames_per_batch * world
        last = {"loss/total": float(loss.detach()), **{f"loss/{k}": float(v) for k, v in logs.items()}}
        done = step + 1
        if rank == 0:
            if done % cfg.log_every == 0 or done == steps:
                last.update({"perf/frames_per_s": frames_done / max(t_total, 1e-9),
                             "perf/data_wait_frac": t_data / max(t_total, 1e-9), "perf/lr": lr})
                for k, v in last.items():
                    writer.add_scalar(k, v, done)
                t_data = t_total = frames_done = 0
            if eval_batch is not None and (done % cfg.eval_every == 0 or done == steps):
                last.update(_evaluate(model, eval_batch, writer, done, device))
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
        with open(out / "summary.json.tmp", "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(out / "summary.json.tmp", out / "summary.json")
        return summary
    return {}


def _evaluate(model, batch, writer, step, device) -> dict:
    frames, actions = batch["frames"].to(device), batch["actions"].to(device)
    c = controllability(model, frames, actions)
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
    _save(ckpt, {"config": as_dict(model_cfg, cfg), "model": model.state_dict(), "optim": opt.state_dict(),
                 "step": step, "torch_rng": torch.get_rng_state()})


def parse_args(argv=None) -> tuple[ModelConfig, TrainConfig]:
    p = argparse.ArgumentParser(prog="python -m world_model.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny", help="preset: tiny, small or base")
    add_arguments(p)
    a = vars(p.parse_args(argv))
    preset = a.pop("config")
    try:
        return make_config(preset, **{k: v for k, v in a.items() if v is not None})
    except ValueError as e:
        p.error(str(e))


def main(argv=None) -> dict:
    model_cfg, cfg = parse_args(argv)
    summary = train(model_cfg, cfg)
    if summary:
        print(json.dumps({k: v for k, v in summary.items()}, indent=1))
    if dist.is_initialized():
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
