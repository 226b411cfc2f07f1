"""Every pretraining method in one registry: its modules and its objective (``compute_loss``).

Each method is a :class:`~world_model.model.WorldModel` subclass that adds the training side
(the IRIS / DIAMOND pattern): ``batches(...)`` (its data), ``stage(step)`` (the learning-rate
segment and which parts train), ``compute_loss(batch, step) -> {"loss": tensor, name: scalar}``
and ``held_out_metrics(batch)`` (held-out scalars).  ``world_model.train`` only sets up, resumes, loops and
checkpoints.  Randomness inside a step comes from ``step_generator(seed, step, rank)``.

===================  ==========================================================================
method               objective
===================  ==========================================================================
navwm                stage 1 (``stage1_frac`` of the steps): tokenizer by reconstruction; stage 2:
                     dynamics on the frozen tokenizer's latents: teacher-forced one-step latent
                     MSE + ``rollout_weight`` x the mean MSE of ``rollout_steps - 1`` fed-back passes
shuffled, noaction   as navwm with actions permuted across the batch / the "no action" embedding only
navwm_joint          stage 1 as navwm; stage 2 trains tokenizer and dynamics together: reconstruction
(shuffled_joint,     + the same prediction losses scored in pixel space through the shared decoder
noaction_joint)      (``joint_loss=pixel``); ``joint_loss=latent`` scores against the encoder's own
                     latents, which collapses (kept as the collapse control)
tokenizer            reconstruction only, all steps (width matched)
mae2d                2D masked autoencoder on the same slices (:mod:`world_model.mae2d`, width matched)
mae3d                3D masked autoencoder on volume crops (:mod:`world_model.mae3d`, width matched)
random_init          the navwm architecture, untrained (no steps)
navjump              the view after one far jump (tens of mm and degrees, unpredictable from the
(shuffled_navjump,   context; :func:`navgym.geometry.random_jumps`) from ``jump_context`` clip frames
noaction_navjump)    and the jump as the last action, trained end to end from step 0: reconstruction
                     of the context + the predicted latent decoded and scored against the rendered
                     view (``jump_target=pixel``) or MSE to an EMA encoder's latent of it (``latent``);
                     controls as navwm's (jumps permuted across the batch / "no action")
relpose              the inverse: the relative pose (normalised jump) between the last context frame
                     and the view after the jump, regressed from their tokenizer maps (Agrawal et al.
                     2015, "Learning to see by moving"; width matched, + a 13 k-parameter head)
===================  ==========================================================================

Collapse diagnostics (:func:`collapse_diagnostics`, logged as ``eval/*`` and in the run summary):
per-channel latent standard deviation (min, mean) and the effective rank of the latents (Roy &
Vetterli); ``eval/collapsed`` is 1 when the mean std falls below :data:`COLLAPSE_STD` or the
effective rank below :data:`COLLAPSE_RANK` of its maximum.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from navgym.deprecation import warn_deprecated

from .config import ModelConfig, TrainConfig, method_id
from .data import VolumeCrops, clip_batches, render_device, step_generator
from .model import WorldModel, count_params
from .mae2d import masked_slice_loss
from .mae3d import MAE3D
from .prediction import prediction_table
from .tokenizer import Tokenizer, make_tokenizer, psnr, to_unit

__all__ = ["build_method", "build_model", "data_stream", "controllability", "collapse_diagnostics", "COLLAPSE_STD", "COLLAPSE_RANK"]

COLLAPSE_STD = 0.02  # mean per-channel latent std below this: collapsed (trained tokenizers: ~0.2 to 1)
COLLAPSE_RANK = 0.05  # effective rank below this share of min(samples, latent dims): collapsed


class Method(WorldModel):
    """The training side shared by every method; see the module docstring.

    ``stream`` names the data :meth:`batches` yields: methods with the same ``stream`` must yield
    identical batches for the same TrainConfig (apart from ``method``), so :mod:`world_model.comparison`
    feeds them from one stream; a method with other data sets its own name ("jumps": clips of
    ``jump_context`` frames with one far jump each; "crops": 3D volume crops; one that overrides
    ``batches`` without naming a stream gets its own: :func:`data_stream`); None: no data.
    ``predicts``: :meth:`prediction` has a table (it is given a ``prediction_batch``).
    ``stage1_group``: methods with the same group (and seed, stream and ``stage1_steps``) train
    bit-identically during their first ``stage1_steps`` steps, so the comparison trains that stage
    once and copies it (None: nothing shared)."""

    stream: str | None = "clips"
    stage1_group: str | None = None

    def configure(self, train: TrainConfig, rank: int = 0) -> "Method":
        self.train_config, self.rank = train, rank
        return self

    @property
    def stage1_steps(self) -> int:
        return 0

    def stage(self, step: int) -> tuple[int, int]:
        """[start, end) of the training stage holding ``step`` (the learning-rate schedule restarts
        there); also sets which parameters train."""
        return 0, self.train_config.steps

    def batches(self, rank: int, world: int, start: int, device: torch.device):
        """Endless batches from step ``start`` (None: the method takes no data)."""
        return clip_batches(self.train_config, self.cfg, rank, world, start,
                            device=render_device(self.train_config, device))

    def frames_per_batch(self) -> int:
        return self.train_config.batch * self.cfg.window

    def held_out_metrics(self, batch: dict) -> dict:
        """Held-out scalars (reconstruction and prediction PSNR, collapse diagnostics;
        :func:`controllability`) and ``_img_*`` tensors on a clip batch."""
        return controllability(self, batch["frames"], batch["actions"])

    def evaluate(self, batch: dict) -> dict:
        """Deprecated name of :meth:`held_out_metrics` (kept one release)."""
        warn_deprecated("Method.evaluate", "Method.held_out_metrics")
        return self.held_out_metrics(batch)

    @property
    def predicts(self) -> bool:
        return self.dynamics is not None

    def prediction(self, batch: dict) -> dict:
        """The prediction-quality table (:mod:`world_model.prediction`) on a ``prediction_batch`` (models
        that ``predicts``)."""
        return prediction_table(self, batch, min(self.train_config.jump_context, self.cfg.window))

    def _gen(self, step: int, salt: int = 1) -> torch.Generator:
        """The step's generator, on the model's device when that is CUDA and ``device_rng``."""
        device = next(self.parameters()).device
        on_device = self.train_config.device_rng and device.type == "cuda"
        return step_generator(self.train_config.seed, step, self.rank, salt, device if on_device else None)


def _flat(frames: torch.Tensor) -> torch.Tensor:
    return frames.reshape(-1, *frames.shape[2:])


def _recon(tokenizer: Tokenizer, frames: torch.Tensor) -> dict:
    loss, logs = tokenizer.compute_loss(_flat(frames))
    return {"loss": loss, **logs}


def _permuted(actions: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``actions`` shuffled across the batch (the ``shuffled`` controls), the permutation drawn from ``gen``."""
    return actions[torch.randperm(len(actions), generator=gen, device=gen.device).to(actions.device)]


def data_stream(model: Method) -> str | None:
    """The name of the data ``model`` trains on (see :class:`Method`): its ``stream``, unless its class
    overrides :meth:`~Method.batches` below the class that declared the stream; then its own name
    (a method with new data that forgot to name its stream is never fed another method's batches)."""
    mro = type(model).__mro__
    batches = next(c for c in mro if "batches" in vars(c))
    declared = next(c for c in mro if "stream" in vars(c))
    return model.stream if "stream" in vars(model) or issubclass(declared, batches) else model.method


class TokenizerMethod(Method):
    def compute_loss(self, batch: dict, step: int) -> dict:
        return _recon(self.tokenizer, batch["frames"])


class MAE2DMethod(Method):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.mask_value = nn.Parameter(torch.zeros(1))

    def compute_loss(self, batch: dict, step: int) -> dict:
        loss, logs = masked_slice_loss(self.tokenizer, self.mask_value, _flat(batch["frames"]), self.cfg.mask_ratio,
                                       self._gen(step))
        return {"loss": loss, **logs}


class MAE3DMethod(Method):
    stream = "crops"

    def batches(self, rank, world, start, device):
        crops, n, train = VolumeCrops(self.train_config, self.cfg), self.frames_per_batch(), self.train_config
        step = start
        while True:
            yield {"crops": crops.batch(n, step_generator(train.seed, step, rank, 1))}
            step += 1

    def frames_per_batch(self) -> int:
        return max(1, self.train_config.batch // 4)

    def compute_loss(self, batch: dict, step: int) -> dict:
        loss, logs = self.mae.compute_loss(batch["crops"], self._gen(step))
        return {"loss": loss, **logs}

    def held_out_metrics(self, batch: dict) -> dict:
        return {}


class DynamicsMethod(Method):
    """navwm, shuffled, noaction (two-stage), their ``*_joint`` variants, and random_init (untrained)."""

    stream = "clips"

    def __init__(self, model: ModelConfig, method: str):
        super().__init__(model, method, dynamics=True)
        self.joint = method.endswith("_joint")
        self.action_mode = method.split("_")[0]  # navwm / shuffled / noaction / random (random_init)
        if method == "random_init":
            self.stream = None

    @property
    def stage1_group(self) -> str | None:
        """Stage 1 (the tokenizer by reconstruction) is the same for every method of this class that
        keeps its stage and loss (a subclass that changes them shares nothing unless it says so)."""
        same = type(self).compute_loss is DynamicsMethod.compute_loss and type(self).stage is DynamicsMethod.stage
        return "tokenizer" if same and self.method != "random_init" and self.stage1_steps > 0 else None

    @property
    def stage1_steps(self) -> int:
        return int(self.train_config.stage1_frac * self.train_config.steps)

    def stage(self, step):
        s1 = self.stage1_steps
        if step < s1:
            return 0, s1
        self.tokenizer.requires_grad_(self.joint)
        return s1, self.train_config.steps

    def batches(self, rank, world, start, device):
        return None if self.method == "random_init" else super().batches(rank, world, start, device)

    def compute_loss(self, batch: dict, step: int) -> dict:
        frames, train = batch["frames"], self.train_config
        if step < self.stage1_steps:
            return _recon(self.tokenizer, frames)
        gen = self._gen(step)
        actions, drop = batch["actions"], None
        if self.action_mode == "shuffled":
            actions = _permuted(actions, gen)
        if self.action_mode == "noaction":
            actions = None
        elif train.action_dropout > 0:
            drop = torch.rand(actions.shape[:2], generator=gen, device=gen.device) < train.action_dropout
            drop = drop.to(actions.device)
        b, t = frames.shape[:2]
        x = to_unit(_flat(frames))
        logs = {}
        with torch.set_grad_enabled(self.joint and torch.is_grad_enabled()):
            z_flat = self.tokenizer.encode(x)
        z = z_flat.reshape(b, t, *self.latent_shape)
        preds = self.dynamics.open_loop(z, actions, drop, train.rollout_steps)
        pixel = self.joint and train.joint_loss == "pixel"
        target = z if self.joint else z.detach()
        x = x.reshape(b, t, *x.shape[1:])
        errs = []
        for j, pred in enumerate(preds):  # pass j + 1: entries t >= j are (j + 1)-step predictions
            p = pred[:, j:-1]
            if pixel:
                img = self.tokenizer.decode(p.flatten(0, 1)).reshape(x[:, j + 1:].shape)
                errs.append(F.mse_loss(img, x[:, j + 1:]))
            else:
                errs.append(F.mse_loss(p, target[:, j + 1:]))
        loss = errs[0] + (train.rollout_weight * torch.stack(errs[1:]).mean() if len(errs) > 1 else 0.0)
        logs["pred_mse" if pixel else "dyn_mse"] = errs[0].detach()
        if len(errs) > 1:
            logs["rollout_mse"] = torch.stack(errs[1:]).mean().detach()
        if self.joint:
            rec = F.mse_loss(self.tokenizer.decode(z_flat), _flat(x))
            loss = loss + rec
            logs.update(recon_mse=rec.detach(), recon_psnr=psnr(rec.detach()))
        return {"loss": loss, **logs}


def jump_scale(train: TrainConfig) -> torch.Tensor:
    """(7,) the largest jump per component in normalised action units (mm x3, degrees x3, ln-zoom)."""
    from navgym.simulator import NavConfig

    big = np.array([train.jump_mm] * 3 + [train.jump_deg] * 3 + [np.log1p(train.jump_zoom_pct / 100)])
    return torch.from_numpy(np.maximum(big, 1e-6) / NavConfig().action_scale()).float()


class JumpMethod(Method):
    """navjump, shuffled_navjump, noaction_navjump (see the module docstring)."""

    stream = "jumps"

    def __init__(self, model: ModelConfig, method: str):
        super().__init__(model, method, dynamics=True)
        self.action_mode = method.split("_")[0]  # navjump / shuffled / noaction
        self.ema_tokenizer = None

    def configure(self, train: TrainConfig, rank: int = 0) -> "JumpMethod":
        super().configure(train, rank)
        if train.jump_target == "latent" and self.ema_tokenizer is None:
            self.ema_tokenizer = copy.deepcopy(self.tokenizer).requires_grad_(False)
        return self

    def batches(self, rank, world, start, device):
        return clip_batches(self.train_config, self.cfg, rank, world, start, frames=self.train_config.jump_context,
                            jumps=True, device=render_device(self.train_config, device))

    def frames_per_batch(self) -> int:
        return self.train_config.batch * (self.train_config.jump_context + 1)

    def jump_inputs(self, batch: dict, step: int):
        """(context frames (B, c, H, W), actions (B, c, 7) whose last entry is the jump, or None)."""
        actions = torch.cat([batch["actions"][:, :-1], batch["jump_actions"][:, None]], 1)
        if self.action_mode == "shuffled":
            actions = _permuted(actions, self._gen(step))
        return batch["frames"], None if self.action_mode == "noaction" else actions

    def compute_loss(self, batch: dict, step: int) -> dict:
        frames, actions = self.jump_inputs(batch, step)
        b, c = frames.shape[:2]
        x = to_unit(_flat(frames))
        z_flat = self.tokenizer.encode(x)
        pred = self.dynamics(z_flat.reshape(b, c, *self.latent_shape), actions)[:, -1]  # the view after the jump
        rec = F.mse_loss(self.tokenizer.decode(z_flat), x)
        y = to_unit(batch["jump_frames"])
        if self.train_config.jump_target == "pixel":
            err = F.mse_loss(self.tokenizer.decode(pred), y)
            logs = {"jump_mse": err.detach(), "jump_psnr": psnr(err.detach())}
        else:
            with torch.no_grad():
                d = self.train_config.ema_decay
                for pe, p in zip(self.ema_tokenizer.parameters(), self.tokenizer.parameters()):
                    pe.lerp_(p.detach(), 1 - d)  # the EMA of the weights after every earlier step
                target = self.ema_tokenizer.encode(y)
            err = F.mse_loss(pred, target)
            logs = {"jump_latent_mse": err.detach()}
        return {"loss": rec + err, "recon_mse": rec.detach(), "recon_psnr": psnr(rec.detach()), **logs}


class RelPoseMethod(Method):
    """relpose (see the module docstring): features of both slices -> the normalised jump."""

    stream, predicts = "jumps", True

    def __init__(self, model: ModelConfig, method: str, width: int):
        super().__init__(model, method, width)
        h = self.tokenizer.hidden_dim
        self.pose_head = nn.Sequential(nn.Conv2d(2 * h, 32, 1), nn.GELU(), nn.Conv2d(32, 32, 3, 2, 1), nn.GELU(),
                                       nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 7))

    batches = JumpMethod.batches
    frames_per_batch = JumpMethod.frames_per_batch

    def relative_pose(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Slices (B, H, W) before and after a jump -> the jump / :func:`jump_scale` (B, 7)."""
        return self.pose_head(torch.cat([self.tokenizer.hidden(before), self.tokenizer.hidden(after)], 1))

    def compute_loss(self, batch: dict, step: int) -> dict:
        target = batch["jump_actions"] / jump_scale(self.train_config).to(batch["jump_actions"].device)
        err = F.mse_loss(self.relative_pose(batch["frames"][:, -1], batch["jump_frames"]), target)
        return {"loss": err, "pose_mse": err.detach()}

    @torch.no_grad()
    def prediction(self, batch: dict) -> dict:
        """Held-out relative-pose errors (normalised units: 1 = the largest jump) vs predicting no motion
        (the jumps' mean, 0): ``pose_mse`` and ``pose_mse_zero`` per component; ``explained`` = 1 - their ratio."""
        was = self.training
        self.eval()
        target = batch["jump_actions"] / jump_scale(self.train_config).to(batch["jump_actions"].device)
        mse = float(F.mse_loss(self.relative_pose(batch["frames"][:, -1], batch["jump_frames"]), target))
        zero = float((target ** 2).mean())
        self.train(was)
        return {"relpose": {"pose_mse": mse, "pose_mse_zero": zero, "explained": 1 - mse / max(zero, 1e-12)},
                "headline": "relpose"}


_CLASSES = {"navwm": DynamicsMethod, "shuffled": DynamicsMethod, "noaction": DynamicsMethod,
            "navwm_joint": DynamicsMethod, "shuffled_joint": DynamicsMethod, "noaction_joint": DynamicsMethod,
            "random_init": DynamicsMethod, "tokenizer": TokenizerMethod, "mae2d": MAE2DMethod, "mae3d": MAE3DMethod,
            "navjump": JumpMethod, "shuffled_navjump": JumpMethod, "noaction_navjump": JumpMethod,
            "relpose": RelPoseMethod}


def _matched_width(model: ModelConfig, method: str, target: int) -> int:
    """Width of the tokenizer / 3D MAE whose parameter count is closest to ``target`` (counted on the
    meta device; a bisection, as the count grows with the width; resnet widths in steps of 8 so
    GroupNorm groups divide the channels)."""
    if method == "mae3d":
        make, step = (lambda w: MAE3D(w, model.mask_ratio)), 1
    else:
        make, step = (lambda w: make_tokenizer(model.arch, w, model.latent)), 8 if model.arch == "resnet" else 1

    def count(w: int) -> int:
        with torch.device("meta"):
            return count_params(make(w))

    widths = list(range(step if step > 1 else 2, 8 * model.width + 1, step))
    lo, hi = 0, len(widths) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(widths[mid]) <= target else (lo, mid)
    return min((widths[lo], widths[hi]), key=lambda w: abs(count(w) - target))


def build_method(model: ModelConfig, method: str, train: TrainConfig | None = None, rank: int = 0) -> Method:
    """The method's module (configured for training with ``train`` when given).  Tokenizer, mae2d
    and mae3d widths are chosen so their parameter count matches the navwm model's (closest width;
    within 20 %, tested), unless ``model.mae3d_width`` is set for mae3d."""
    method = method_id(method)
    if method not in _CLASSES:
        raise ValueError(f"method must be one of {tuple(_CLASSES)}, got {method!r}")
    cls = _CLASSES[method]
    if cls in (DynamicsMethod, JumpMethod):
        m = cls(model, method)
    else:
        target = count_params(DynamicsMethod(model, "navwm"))
        if method == "mae3d":
            w = model.mae3d_width or _matched_width(model, method, target)
            m = cls(model, method, w, tokenizer=False, mae3d=True)
        else:
            m = cls(model, method, _matched_width(model, "tokenizer" if method == "relpose" else method, target))
    return m.configure(train or TrainConfig(method=method), rank)


def build_model(*args, **kwargs) -> Method:
    """Deprecated name of :func:`build_method`."""
    warn_deprecated("world_model.methods.build_model", "build_method")
    return build_method(*args, **kwargs)


def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of the centred rows ``x`` (N, D) (Roy & Vetterli 2007)."""
    s = torch.linalg.svdvals((x - x.mean(0)).double())
    p = s / s.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


def collapse_diagnostics(z: torch.Tensor) -> dict:
    """Latents (N, C, g, g) -> per-channel std (min, mean), effective rank of the flattened latents
    (and its maximum min(N, C*g*g)) and ``collapsed`` (1.0 or 0.0; see the module docstring)."""
    z = z.float()
    std = z.transpose(0, 1).reshape(z.shape[1], -1).std(1)
    flat = z.flatten(1)
    rank, top = effective_rank(flat), min(flat.shape)
    collapsed = float(std.mean()) < COLLAPSE_STD or rank < COLLAPSE_RANK * top
    return {"latent_std_min": float(std.min()), "latent_std_mean": float(std.mean()), "latent_eff_rank": rank,
            "latent_eff_rank_max": float(top), "collapsed": float(collapsed)}


@torch.no_grad()
def controllability(model: WorldModel, frames: torch.Tensor, actions: torch.Tensor, seed: int = 0) -> dict:
    """One-step prediction quality on clips with the true actions vs actions shuffled across the batch.

    Returns decoded-slice PSNR (dB) of the predicted next frames ``psnr_true`` / ``psnr_shuffled``,
    their gap ``delta_psnr`` (Genie's Delta-PSNR analogue), latent MSEs ``latent_mse_true`` /
    ``latent_mse_shuffled``, the tokenizer's ``recon_psnr`` and the :func:`collapse_diagnostics`."""
    was = model.training
    model.eval()
    b, t = frames.shape[:2]
    x = to_unit(_flat(frames)).reshape(b, t, 1, *frames.shape[2:])
    z = model.encode(_flat(frames)).reshape(b, t, *model.latent_shape)
    rec = model.decode(z.flatten(0, 1)).reshape(x.shape)
    out = {"recon_psnr": float(psnr(F.mse_loss(rec, x))), **collapse_diagnostics(z.flatten(0, 1))}
    if model.dynamics is not None:
        perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed)).to(actions.device)
        for name, a in (("true", actions), ("shuffled", actions[perm])):
            pred = model.dynamics(z, a if model.uses_actions else None)[:, :-1]
            img = model.decode(pred.flatten(0, 1)).reshape(x[:, 1:].shape)
            out[f"latent_mse_{name}"] = float(F.mse_loss(pred, z[:, 1:]))
            out[f"psnr_{name}"] = float(psnr(F.mse_loss(img, x[:, 1:])))
            out[f"_img_{name}"] = img
        out["delta_psnr"] = out["psnr_true"] - out["psnr_shuffled"]
    model.train(was)
    return out
