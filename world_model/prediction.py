"""The prediction-quality table of a dynamics-family model, against the trivial predictors.

On held-out clips of ``max(HORIZONS) + 1`` frames with one far jump after the last frame
(:func:`prediction_batch`), a model with a dynamics module predicts

* ``k1``, ``k4``, ``k8``: frame k from frame 0 alone, open loop (its own predictions fed back, the
  true actions after each frame; the last ``window`` entries when the history is longer);
* ``jump``: the view after the far jump from the clip's last ``jump_context`` frames, the jump being
  the last action (:func:`navgym.geometry.random_jumps`; normalised action units, so it exceeds 1).

Each row scores the decoded prediction in PSNR (dB, peak 1, of the batch's mean squared error) and
in the model's own latent space (MSE to the encoder's latent of the true frame), with the same
prediction from actions permuted across the clips (``psnr_shuffled``; ``gap`` = true - shuffled,
the controllability gap) and two baselines on the same clips: copy the last seen frame (frame 0 for
``k*``, the last context frame for ``jump``) and the mean frame of the batch (every frame of every
clip).  ``beats_copy_last`` is ``psnr > psnr_copy_last``; ``headline`` names the row the method is
trained for (``jump`` for the navjump family, else ``k1``), whose flag the report shows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ModelConfig, TrainConfig
from .data import clip_batches, held_out_config, render_device
from .tokenizer import psnr, to_unit

__all__ = ["HORIZONS", "prediction_batch", "prediction_table", "headline_row"]

HORIZONS = (1, 4, 8)


def prediction_batch(train: TrainConfig, model: ModelConfig, device: torch.device, clips: int = 32) -> dict:
    """``clips`` held-out ('val' split) clips of ``max(HORIZONS) + 1`` frames of ``train.policy``, each with
    one far jump after its last frame (:func:`world_model.data.clip_batches`); fixed for a run's seed."""
    cfg = held_out_config(train, clips)
    batch = next(clip_batches(cfg, model, split="val", seed_salt=998, device=render_device(cfg, device),
                              frames=max(HORIZONS) + 1, jumps=True))
    return {k: v.to(device) for k, v in batch.items()}


def headline_row(method: str) -> str:
    return "jump" if method.endswith("navjump") else "k1"


def _row(pred_img, pred_img_shuffled, target, copy, mean_img, pred_z, z_target, z_copy, z_mean) -> dict:
    score = lambda a, b: float(psnr(F.mse_loss(a, b)))  # noqa: E731
    row = {"psnr": score(pred_img, target), "psnr_shuffled": score(pred_img_shuffled, target),
           "psnr_copy_last": score(copy, target), "psnr_mean": score(mean_img.expand_as(target), target),
           "latent_mse": float(F.mse_loss(pred_z, z_target)),
           "latent_mse_copy_last": float(F.mse_loss(z_copy, z_target)),
           "latent_mse_mean": float(F.mse_loss(z_mean.expand_as(z_target), z_target))}
    row["gap"] = row["psnr"] - row["psnr_shuffled"]
    row["beats_copy_last"] = row["psnr"] > row["psnr_copy_last"]
    return row


@torch.no_grad()
def prediction_table(model, batch: dict, context: int, seed: int = 0) -> dict:
    """The table (see the module docstring) of ``model`` (with ``dynamics``) on a :func:`prediction_batch`;
    ``context``: frames before the jump.  Returns {row: {metric: value}, "headline": row}."""
    was = model.training
    model.eval()
    frames, actions = batch["frames"], batch["actions"]
    b, t = frames.shape[:2]
    if t < max(HORIZONS) + 1:
        raise ValueError(f"prediction clips need {max(HORIZONS) + 1} frames, got {t}")
    x = to_unit(frames.flatten(0, 1)).reshape(b, t, 1, *frames.shape[2:])
    z = model.encode(x.flatten(0, 1)).reshape(b, t, *model.latent_shape)
    mean_img, z_mean = x.mean((0, 1)), z.mean((0, 1))
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed)).to(frames.device)
    jump_actions = torch.cat([actions[:, t - context:-1], batch["jump_actions"][:, None]], 1)
    w = model.cfg.window
    preds = {}
    for name, acts, jump_acts in (("true", actions, jump_actions), ("shuffled", actions[perm], jump_actions[perm])):
        ctx, steps = z[:, :1], {}
        for k in range(1, max(HORIZONS) + 1):
            a = acts[:, max(0, k - w):k] if model.uses_actions else None
            p = model.dynamics(ctx[:, -w:], a)[:, -1]
            steps[k], ctx = p, torch.cat([ctx, p[:, None]], 1)
        steps["jump"] = model.dynamics(z[:, t - context:], jump_acts if model.uses_actions else None)[:, -1]
        preds[name] = steps
    decode = model.decode
    table = {}
    for k in HORIZONS:
        table[f"k{k}"] = _row(decode(preds["true"][k]), decode(preds["shuffled"][k]), x[:, k], x[:, 0], mean_img,
                              preds["true"][k], z[:, k], z[:, 0], z_mean)
    y = to_unit(batch["jump_frames"])
    z_jump = model.encode(y)
    table["jump"] = _row(decode(preds["true"]["jump"]), decode(preds["shuffled"]["jump"]), y, x[:, -1], mean_img,
                         preds["true"]["jump"], z_jump, z[:, -1], z_mean)
    table["headline"] = headline_row(model.method)
    model.train(was)
    return table
