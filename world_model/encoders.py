"""The representation every method hands downstream, and its entry point :func:`load_encoder`.

Contract (stable; the evaluation and the RL agents rely on it).  ``load_encoder(checkpoint_or_method,
seed=0, map_location="cpu")`` returns an ``nn.Module`` in eval mode with attributes ``method``,
``seed``, ``feature_dim``, ``finished`` and ``train_config`` (None for an untrained model), and

* ``features(frames) -> (B, feature_dim)`` and ``spatial_features(frames) -> (B, C, h, w)``, frames
  (B, H, W) or (B, 1, H, W), uint8 0..255 or float 0..1; both differentiable (fine-tuning);
* dynamics family: ``clip_features(frames (B, T, H, W), actions (B, T, 7)) -> (B, feature_dim)``,
  the features of the last frame in the context of the clip (action t follows frame t; T <= window);
* models with a slice tokenizer: the latent-planning protocol ``latent_shape``, ``encode(frames)
  -> (B, latent, H/8, W/8)``, ``decode(latents) -> (B, 1, H, W)``; dynamics family also
  ``predict(latents (B, T, ...), actions (B, T, 7)) -> (B, latent, H/8, W/8)``;
* mae3d: ``plane_spatial_features(volume, centers, rotations, fovs, size)`` (its 3D map of the
  whole volume sampled along the slice plane; needs the volume and pose).

============================  ========================================================  =====================
method                        ``features``                                                ``spatial_features``
============================  ========================================================  =====================
navwm, shuffled, noaction,    tokenizer hidden map pooled to 4x4 (hidden*16), then the    hidden map and the
their ``*_joint`` variants,   dynamics tokens of the frame alone ("no action", no         tokens upsampled
random_init                   history; dim * tokens).  ``clip_features``: the same with  (hidden+dim, H/8, 
                              the last frame's context tokens of the clip                 W/8)
tokenizer, mae2d              tokenizer hidden map pooled to 4x4 (width matched)          (hidden, H/8, W/8)
mae3d                         3D encoder on the slice as a thin slab, pooled to 4x4       (2*width, H/4, W/4)
============================  ========================================================  =====================

``hidden`` is the tokenizer's hidden channels: 2*width (``arch=conv``) or 8*width (``arch=resnet``).
``random_init`` is the navwm architecture untrained.  The objectives live in :mod:`world_model.methods`.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .config import DEPRECATED_METHODS, METHODS, MODEL_SIZES, ModelConfig, TrainConfig, config_from_dict, method_id
from .dynamics import Dynamics
from .mae3d import MAE3D, resample
from .tokenizer import make_tokenizer

__all__ = ["WorldModel", "load_encoder", "count_params"]


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


class WorldModel(nn.Module):
    """Slice tokenizer (+ dynamics for the dynamics family), or a 3D MAE; see the module table.
    Built by :func:`world_model.methods.build_model`, whose subclasses add the training objective."""

    def __init__(self, model: ModelConfig, method: str, width: int | None = None, tokenizer: bool = True,
                 dynamics: bool = False, mae3d: bool = False):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method, self.cfg, self.seed = method, model, None
        self.train_config, self.finished = None, False
        self.uses_actions = dynamics and not method.startswith("noaction")  # noaction: "no action" only
        self.grid = model.size // 8
        w = model.width if width is None else width
        self.tokenizer = make_tokenizer(model.arch, w, model.latent) if tokenizer else None
        self.dynamics = Dynamics(model.latent, self.grid, model.patch, model.dim, model.depth, model.heads,
                                 model.window) if dynamics else None
        self.mae = MAE3D(w, model.mask_ratio) if mae3d else None
        self.width = w
        hidden = (self.mae or self.tokenizer).hidden_dim
        self.feature_dim = hidden * 16 + (model.dim * self.dynamics.tokens if dynamics else 0)  # see features()

    # --- representation ---------------------------------------------------------------------
    def spatial_features(self, frames: torch.Tensor) -> torch.Tensor:
        if self.mae is not None:
            return self.mae.spatial_features(frames)
        h = self.tokenizer.hidden(frames)
        if self.dynamics is None:
            return h
        tok = self.dynamics.context(self.tokenizer.to_latent(h)[:, None], None)[:, 0]  # (B, N, dim)
        n = self.grid // self.cfg.patch
        tok = tok.transpose(1, 2).reshape(len(h), -1, n, n)
        return torch.cat([h, F.interpolate(tok, size=h.shape[-2:], mode="nearest")], 1)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        if self.mae is not None:
            return F.adaptive_avg_pool2d(self.mae.spatial_features(frames), 4).flatten(1)
        h = self.tokenizer.hidden(frames)
        pooled = F.adaptive_avg_pool2d(h, 4).flatten(1)
        if self.dynamics is None:
            return pooled
        tok = self.dynamics.context(self.tokenizer.to_latent(h)[:, None], None)[:, 0]
        return torch.cat([pooled, tok.flatten(1)], 1)

    def plane_spatial_features(self, volume, centers, rotations, fovs, size: int) -> torch.Tensor:
        """mae3d only: its 3D feature map of ``volume`` (a navgym Volume, resampled to ``voxel_mm``)
        sampled on a size x size grid of each slice plane (centers (N, 3) world mm, rotations
        (N, 3, 3) columns u, v, n, fovs (N,) mm) -> (N, 2*width, size, size)."""
        if self.mae is None:
            raise TypeError(f"method {self.method!r} has no 3D feature map")
        vol, affine = resample(volume, self.cfg.voxel_mm)
        fmap = self.mae.volume_map(vol.to(self.mae.mask_token.device))
        return self.mae.plane_features(fmap, affine, centers, rotations, fovs, size)

    def clip_features(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """frames (B, T, H, W), actions (B, T, 7) normalised -> (B, feature_dim) for the last frame
        (the last ``window`` frames are used)."""
        self._need_dynamics()
        frames, actions = frames[:, -self.cfg.window:], actions[:, -self.cfg.window:]
        b, t = frames.shape[:2]
        h = self.tokenizer.hidden(frames.reshape(b * t, *frames.shape[2:]))
        z = self.tokenizer.to_latent(h).reshape(b, t, *self.latent_shape)
        tok = self.dynamics.context(z, actions if self.uses_actions else None)[:, -1]
        pooled = F.adaptive_avg_pool2d(h.reshape(b, t, *h.shape[1:])[:, -1], 4).flatten(1)
        return torch.cat([pooled, tok.flatten(1)], 1)

    # --- latent planning protocol -----------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.cfg.latent, self.grid, self.grid)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        if self.tokenizer is None:
            raise TypeError("mae3d has no slice latents")
        return self.tokenizer.encode(frames)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode(z)

    def predict(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """History latents (B, T, C, g, g) and the actions after each (B, T, 7) -> next latent (B, C, g, g)."""
        self._need_dynamics()
        t = self.cfg.window
        return self.dynamics(latents[:, -t:], actions[:, -t:] if self.uses_actions else None)[:, -1]

    def _need_dynamics(self):
        if self.dynamics is None:
            raise TypeError(f"method {self.method!r} has no dynamics model")


def load_encoder(checkpoint, seed: int = 0, map_location="cpu", model: ModelConfig | None = None) -> WorldModel:
    """A trained world model in eval mode from a checkpoint written by ``world_model.train``
    (loaded with ``weights_only=True``), or a randomly initialised one from a method name
    (``"random_init"`` or any method, ``torch.manual_seed(seed)``, architecture ``model``, by default the
    tiny model size).  See the module docstring for what it offers."""
    from .checkpoint import load_checkpoint
    from .methods import build_model

    named = isinstance(checkpoint, str) and checkpoint in METHODS + tuple(DEPRECATED_METHODS)
    if named and not os.path.exists(checkpoint):
        torch.manual_seed(seed)
        m = build_model(model or MODEL_SIZES["tiny"], method_id(checkpoint))
        m.seed = seed
        return m.eval()
    state = load_checkpoint(checkpoint, map_location)
    model_cfg, train_cfg = config_from_dict(state["config"])
    m = build_model(model_cfg, train_cfg.method, train_cfg)
    m.load_state_dict(state["model"])
    m.seed = train_cfg.seed
    m.train_config: TrainConfig = train_cfg
    m.finished = int(state["step"]) >= train_cfg.total_steps  # False: a checkpoint of an unfinished run
    m.prediction_quality = state.get("prediction")  # world_model.prediction's table at the last evaluation
    return m.eval()

