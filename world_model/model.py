"""The composed world-model modules: :class:`WorldModel` (slice tokenizer, dynamics, 3D MAE) and what
each method hands downstream.  The training objectives are added by :mod:`world_model.methods`; a
trained one is loaded by :func:`world_model.encoders.load_encoder`.

============================  ========================================================  =====================
method                        ``features``                                                ``spatial_features``
============================  ========================================================  =====================
navwm, shuffled, noaction,    tokenizer hidden map pooled to 4x4 (hidden*16), then the    hidden map and the
their ``*_joint`` variants,   dynamics tokens of the frame alone ("no action", no         tokens upsampled
random                        history; dim * tokens).  ``clip_features``: the same with  (hidden+dim, H/8, 
                              the last frame's context tokens of the clip                 W/8)
tokenizer, mae2d              tokenizer hidden map pooled to 4x4 (width matched)          (hidden, H/8, W/8)
mae3d                         3D encoder on the slice as a thin slab, pooled to 4x4       (2*width, H/4, W/4)
============================  ========================================================  =====================

``hidden`` is the tokenizer's hidden channels: 2*width (``arch=conv``) or 8*width (``arch=resnet``).
``random`` is the navwm architecture untrained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import METHODS, ModelConfig
from .dynamics import Dynamics
from .mae3d import MAE3D, resample
from .tokenizer import make_tokenizer

__all__ = ["WorldModel", "count_params"]


def count_params(m: nn.Module) -> int:
    """The number of parameters of ``m``."""
    return sum(p.numel() for p in m.parameters())


class WorldModel(nn.Module):
    """Slice tokenizer (+ dynamics for the dynamics family), or a 3D MAE; see the module table.
    Built by :func:`world_model.methods.build_method`, whose subclasses add the training objective."""

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
