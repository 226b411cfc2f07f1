"""The encoders under evaluation and their frozen features.

* :class:`EncoderEntry`: one encoder (method, pretraining seed, module); :func:`load_encoder_entry`
  reads a checkpoint path, ``METHOD:SEED=path`` or ``METHOD:SEED`` with METHOD = ``random`` or
  any world-model method name (that architecture, untrained; ``random`` = the navwm architecture).
* :class:`PixelEncoder`: the non-learned baseline (16 x 16 average-pooled intensities).
* :func:`frozen_features`: per split ``frames``/``pair`` (N, D) and ``spatial`` (N, C, h, w).
  The 3D MAE reads each slice's own volume: its 3D feature map sampled along the plane.
* :func:`clip_features`: a clip's representation: ``clip_features(frames, actions)`` for the
  dynamics family, otherwise the per-frame features concatenated with the actions -- every
  encoder sees the same frames and actions.  The action after the last frame is zeroed (it says
  where the clip goes next, not where it is).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from navgym.geometry import unpack_poses

from .data import PROBE_SPLITS, ClipSet, ProbeSet

__all__ = ["EncoderEntry", "PixelEncoder", "load_encoder_entry", "frozen_features", "clip_features", "image_size",
           "has_clip_features", "device_of"]


@dataclass
class EncoderEntry:
    """One encoder under evaluation.

    encoder : module with ``features((B, H, W) uint8) -> (B, D)`` and ``spatial_features`` (B, C, h, w).
    latent_model : the encoder itself when it has working ``encode``/``predict`` (latent planning).
    """

    method: str
    seed: int
    encoder: Any
    checkpoint: str | None = None
    latent_model: Any = None


class PixelEncoder(torch.nn.Module):
    """Non-learned baseline: ``spatial_features`` (B, 1, 16, 16) average-pooled intensities in
    [0, 1]; ``features`` the same flattened (B, 256)."""

    feature_dim = 256

    def spatial_features(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(frames.float()[:, None] / 255.0, 16)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.spatial_features(frames).flatten(1)


def device_of(module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    params = module.parameters() if hasattr(module, "parameters") else iter(())
    return next(iter(params), torch.empty(0)).device


def image_size(encoder) -> int | None:
    """The slice size (pixels) an encoder was trained on, if it says (``cfg.size``)."""
    size = getattr(getattr(encoder, "cfg", None), "size", None)
    return int(size) if size else None


_SPEC = re.compile(r"^(?P<method>[A-Za-z0-9_]+):(?P<seed>\d+)(=(?P<path>.+))?$")


def load_encoder_entry(spec: str) -> EncoderEntry:
    """An entry from a checkpoint path (its stored config names method and seed),
    ``METHOD:SEED=path`` (refused unless the checkpoint's config says the same) or ``METHOD:SEED`` (untrained,
    ``world_model.load_encoder(METHOD, seed)``)."""
    from world_model import load_encoder

    m = _SPEC.match(spec)
    if m and m["path"] is None:
        return _entry(m["method"], int(m["seed"]), spec, load_encoder(m["method"], seed=int(m["seed"])))
    path = m["path"] if m else spec
    if not os.path.exists(path):
        raise FileNotFoundError(f"--checkpoints: no checkpoint {path}")
    encoder = load_encoder(path)
    trained = getattr(encoder, "train_config", None)
    own_method = trained.label if trained is not None else getattr(encoder, "method", None)
    own_seed = getattr(encoder, "seed", None)
    if m and (own_method, own_seed) != (None, None) and (m["method"], int(m["seed"])) != (own_method, own_seed):
        raise ValueError(f"--checkpoints {spec}: the label {m['method']}:{m['seed']} differs from the checkpoint's own "
                         f"config ({own_method}:{own_seed}); pass {own_method}:{own_seed}={path}, or just {path}")
    method = m["method"] if m else own_method
    seed = int(m["seed"]) if m else own_seed
    if method is None or seed is None:
        raise ValueError(f"cannot tell the method/seed of {path}; pass it as METHOD:SEED={path}")
    return _entry(method, int(seed), path, encoder)


@torch.no_grad()
def _entry(method: str, seed: int, source: str, encoder) -> EncoderEntry:
    latent = None
    if hasattr(encoder, "encode") and hasattr(encoder, "predict"):
        size = image_size(encoder) or 64
        try:
            encoder.predict(encoder.encode(torch.zeros(1, size, size, dtype=torch.uint8))[:, None], torch.zeros(1, 1, 7))
            latent = encoder
        except TypeError:  # a method without slice latents or dynamics (tokenizer, mae3d)
            pass
    return EncoderEntry(method=method, seed=seed, encoder=encoder, checkpoint=str(source), latent_model=latent)


@torch.no_grad()
def _batched(fn, frames: np.ndarray, batch: int, device, on_device: bool = False):
    """``fn`` over ``frames`` in batches on ``device``: float32 NumPy, or a tensor left on ``device``."""
    out = torch.cat([fn(torch.from_numpy(frames[i: i + batch]).to(device)).float()
                     for i in range(0, len(frames), batch)])
    return out if on_device else out.cpu().numpy()


@torch.no_grad()
def _plane_features(encoder, subjects, ps: ProbeSet, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 3D MAE's volume map sampled along each slice's plane and its pair's (one map per subject)."""
    out = None
    for i in range(len(subjects)):
        sel = np.flatnonzero(ps.subject == i)
        if len(sel) == 0:
            continue
        centers, rotations, fovs = unpack_poses(np.concatenate([ps.pose[sel], ps.pair_pose[sel]]))
        f = encoder.plane_spatial_features(subjects[i].volume, centers, rotations, fovs, size).float().cpu().numpy()
        if out is None:
            out = np.zeros((2, len(ps), *f.shape[1:]), np.float32)
        out[0, sel], out[1, sel] = f[: len(sel)], f[len(sel):]
    return out[0], out[1]


def _pool(spatial: np.ndarray) -> np.ndarray:
    return torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(spatial), 4).flatten(1).numpy()


def frozen_features(encoder, sets: dict[str, ProbeSet], subjects: dict | None = None, batch: int = 256,
                    device="cpu", spatial: bool = True, pairs: bool = True,
                    on_device: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """{split: {"frames", "pair" (N, D) when ``pairs``, "spatial" (N, C, h, w) when ``spatial``}} from the frozen
    encoder.  A 3D MAE (``mae`` attribute) with ``subjects`` given samples its volume map along
    each slice plane (spatial at H/4; the vector features are that map pooled to 4 x 4).
    ``on_device``: ``frames``/``pair`` are float32 tensors kept on ``device`` (the linear probes' input,
    extracted once), ``spatial`` stays NumPy."""
    if hasattr(encoder, "eval"):
        encoder.eval()
    out = {}
    if subjects is not None and getattr(encoder, "mae", None) is not None:
        size = sets["train"].frames.shape[1] // 4
        for s in PROBE_SPLITS:
            sp, pair = _plane_features(encoder, subjects[s], sets[s], size)
            vec = {"frames": _pool(sp), "pair": _pool(pair)}
            out[s] = {k: torch.from_numpy(v).to(device) if on_device else v for k, v in vec.items()}
            if spatial:
                out[s]["spatial"] = sp
        return out
    for s in PROBE_SPLITS:
        out[s] = {"frames": _batched(encoder.features, sets[s].frames, batch, device, on_device)}
        if pairs:
            out[s]["pair"] = _batched(encoder.features, sets[s].pair_frames, batch, device, on_device)
        if spatial:
            out[s]["spatial"] = _batched(encoder.spatial_features, sets[s].frames, batch, device)
    return out


@torch.no_grad()
def has_clip_features(encoder) -> bool:
    """Whether ``clip_features`` works (the dynamics family); others raise TypeError or lack it."""
    if not hasattr(encoder, "clip_features"):
        return False
    size, dev = image_size(encoder) or 64, device_of(encoder)
    try:
        encoder.clip_features(torch.zeros(1, 2, size, size, dtype=torch.uint8, device=dev), torch.zeros(1, 2, 7, device=dev))
        return True
    except TypeError:
        return False


@torch.no_grad()
def clip_features(encoder, clips: ClipSet, batch: int = 64, device="cpu", on_device: bool = False):
    """(N, D) clip representations (see the module docstring): float32 NumPy, or with ``on_device`` a
    tensor kept on ``device``."""
    if hasattr(encoder, "eval"):
        encoder.eval()
    actions = clips.actions.copy()
    actions[:, -1] = 0
    n, k = clips.frames.shape[:2]
    if has_clip_features(encoder):
        out = torch.cat([encoder.clip_features(torch.from_numpy(clips.frames[i: i + batch]).to(device),
                                               torch.from_numpy(actions[i: i + batch]).to(device)).float()
                         for i in range(0, n, batch)])
    else:
        per_frame = _batched(encoder.features, clips.frames.reshape(n * k, *clips.frames.shape[2:]), 4 * batch,
                             device, on_device=True)
        out = torch.cat([per_frame.reshape(n, -1), torch.from_numpy(actions[:, :-1].reshape(n, -1)).to(device)], 1)
    return out if on_device else out.cpu().numpy()
