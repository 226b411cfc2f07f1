"""The world-model module of every method and the representation entry point :func:`load_encoder`.

Features each method exposes (frames: (B, H, W) or (B, 1, H, W), uint8 0..255 or float 0..1):

============  ==============================================================  ===================
method        ``features`` (B, feature_dim)                                    ``spatial_features``
============  ==============================================================  ===================
navwm,        tokenizer hidden map average-pooled to 4x4 (2*width*16) followed  hidden map and the
shuffled,     by the dynamics transformer's output tokens for the frame alone   tokens upsampled:
noaction,     ("no action" embedding; dim * tokens)                             (2*width+dim, H/8,
random                                                                          W/8)
tokenizer     tokenizer hidden map pooled to 4x4 (width matched to navwm)       (2*width, H/8, W/8)
mae3d         3D encoder on the slice as a thin slab, pooled to 4x4             (2*width, H/4, W/4)
============  ==============================================================  ===================

The dynamics family also has ``clip_features(frames (B, T, H, W), actions (B, T, 7))`` (features of
the last frame in the context of the clip; action t follows frame t), and the latent-planning
protocol ``encode(frames) -> (B, latent, H/8, W/8)`` / ``predict(latents (B, T, ...), actions
(B, T, 7)) -> (B, latent, H/8, W/8)``.  mae3d has ``plane_spatial_features(volume, centers,
rotations, fovs, size)`` (its 3D map of the whole volume sampled along the slice plane; needs the
volume and pose): the downstream probes use it, pooled to 4x4 like ``features``.  ``random`` is the navwm architecture untrained.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .config import METHODS, ModelConfig, TrainConfig, config_from_dict
from .dynamics import Dynamics
from .mae3d import MAE3D, resample
from .tokenizer import Tokenizer

__all__ = ["WorldModel", "build_model", "load_encoder", "count_params"]

DYNAMIC = ("navwm", "shuffled", "noaction", "random")


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


class WorldModel(nn.Module):
    """Tokenizer + dynamics (dynamics family), a tokenizer alone, or a 3D MAE; see the module table."""

    def __init__(self, model: ModelConfig, method: str, width: int | None = None):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method, self.cfg, self.seed = method, model, None
        self.grid = model.size // 8
        w = model.width if width is None else width
        self.tokenizer = self.dynamics = self.mae = None
        if method == "mae3d":
            self.mae = MAE3D(w, model.mask_ratio)
        else:
            self.tokenizer = Tokenizer(w, model.latent)
        if method in DYNAMIC:
            self.dynamics = Dynamics(model.latent, self.grid, model.patch, model.dim, model.depth, model.heads,
                                     model.window)
        self.width = w
        with torch.no_grad():
            self.feature_dim = int(self.features(torch.zeros(1, model.size, model.size, dtype=torch.uint8)).shape[1])

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
        """frames (B, T, H, W), actions (B, T, 7) normalised -> (B, feature_dim) for the last frame."""
        self._need_dynamics()
        b, t = frames.shape[:2]
        h = self.tokenizer.hidden(frames.reshape(b * t, *frames.shape[2:]))
        z = self.tokenizer.to_latent(h).reshape(b, t, *self.latent_shape)
        tok = self.dynamics.context(z, actions)[:, -1]
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
        return self.dynamics(latents[:, -t:], None if self.method == "noaction" else actions[:, -t:])[:, -1]

    def _need_dynamics(self):
        if self.dynamics is None:
            raise TypeError(f"method {self.method!r} has no dynamics model")


def _matched_width(model: ModelConfig, method: str, target: int) -> int:
    """Width of the tokenizer / 3D MAE whose parameter count is closest to ``target``."""
    make = (lambda w: MAE3D(w, model.mask_ratio)) if method == "mae3d" else (lambda w: Tokenizer(w, model.latent))
    best, err = model.width, None
    for w in range(2, 8 * model.width + 1):
        n = count_params(make(w))
        if err is None or abs(n - target) < err:
            best, err = w, abs(n - target)
        if n > target:
            break
    return best


def build_model(model: ModelConfig, method: str) -> WorldModel:
    """The method's module; tokenizer and mae3d widths are chosen so their parameter count matches
    the navwm model's (closest width; within 20%), unless ``model.mae3d_width`` is set for mae3d."""
    if method in DYNAMIC:
        return WorldModel(model, method)
    target = count_params(WorldModel(model, "navwm"))
    if method == "mae3d" and model.mae3d_width:
        return WorldModel(model, method, model.mae3d_width)
    return WorldModel(model, method, _matched_width(model, method, target))


def load_encoder(checkpoint, seed: int = 0, map_location="cpu") -> WorldModel:
    """A trained world model in eval mode from a checkpoint written by ``world_model.train``
    (loaded with ``weights_only=True``), or a randomly initialised one from a method name
    (``"random"`` or any method, tiny preset, ``torch.manual_seed(seed)``).  Attributes ``method``,
    ``seed``, ``feature_dim`` (checkpoints also ``train_config`` and ``finished``); see the module
    docstring for the features."""
    if isinstance(checkpoint, str) and checkpoint in METHODS and not os.path.exists(checkpoint):
        from .config import PRESETS

        torch.manual_seed(seed)
        m = build_model(PRESETS["tiny"], checkpoint)
        m.seed = seed
        return m.eval()
    state = torch.load(checkpoint, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise ValueError(f"{checkpoint}: not a world-model checkpoint (no config/model entries)")
    model_cfg, train_cfg = config_from_dict(state["config"])
    m = build_model(model_cfg, train_cfg.method)
    m.load_state_dict(state["model"])
    m.seed = train_cfg.seed
    m.train_config: TrainConfig = train_cfg
    m.finished = int(state["step"]) >= train_cfg.total_steps  # False: a checkpoint of an unfinished run
    return m.eval()
