"""The encoders under evaluation and their frozen features.

* :class:`EncoderEntry`: one encoder (method, pretraining seed, module); :func:`load_encoder_entry`
  loads one :class:`world_model.encoders.EncoderSpec`: a checkpoint path, ``METHOD:SEED=path``,
  ``METHOD:SEED`` (that architecture, untrained; ``random_init`` = the navwm architecture),
  ``pooled_pixels`` or ``random-cnn``.  The non-learned baseline :data:`POOLED_PIXELS` is
  :class:`world_model.encoders.PooledPixels` (16 x 16 average-pooled intensities); results written
  when it was labelled ``pixels`` are rewritten with the label now (:data:`world_model.evaluation.report.RENAMED_LABELS`).
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

from navgym.deprecation import moved_names
from navgym.geometry import unpack_poses

from ..encoders import EncoderSpec
from .data import PROBE_SPLITS, ClipSet, ProbeSet

__all__ = ["EncoderEntry", "POOLED_PIXELS", "load_encoder_entry", "frozen_features", "clip_features", "image_size",
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


#: the method label of the pooled-intensity baseline (:class:`world_model.encoders.PooledPixels`)
POOLED_PIXELS = "pooled_pixels"
__getattr__ = moved_names(__name__, {"PixelEncoder": "world_model.encoders.PooledPixels"})


def device_of(module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    params = module.parameters() if hasattr(module, "parameters") else iter(())
    return next(iter(params), torch.empty(0)).device


def image_size(encoder) -> int | None:
    """The slice size (pixels) an encoder was trained on, if it says (``cfg.size``)."""
    size = getattr(getattr(encoder, "cfg", None), "size", None)
    return int(size) if size else None


_LABEL = re.compile(r"(?P<method>[A-Za-z0-9_]+):(?P<seed>\d+)")


def load_encoder_entry(spec: str | EncoderSpec) -> EncoderEntry:
    """The entry of an :class:`~world_model.encoders.EncoderSpec`: a checkpoint path (its stored config names
    method and seed), ``METHOD:SEED=path`` (refused unless the checkpoint's config says the same),
    ``METHOD:SEED`` (untrained, ``world_model.load_encoder(METHOD, seed)``), ``pooled_pixels`` or
    ``random-cnn`` (seed 0).  ``pixels`` (the agents' end-to-end CNN) and ``ft:`` are refused."""
    spec = spec if isinstance(spec, EncoderSpec) else EncoderSpec.parse(spec)
    if spec.kind == "pixels" or spec.finetune:
        raise ValueError(f"--checkpoints {spec}: the evaluation takes frozen encoders "
                         f"({POOLED_PIXELS} is its pixel baseline; ft: belongs to agents.benchmark)")
    m = _LABEL.fullmatch(spec.label) if spec.label is not None else None
    if spec.label is not None and (m is None or spec.kind != "checkpoint"):
        raise ValueError(f"--checkpoints {spec}: a label is METHOD:SEED before a checkpoint path")
    if spec.kind == "checkpoint" and not os.path.exists(spec.source):
        raise FileNotFoundError(f"--checkpoints: no checkpoint {spec.source}")
    encoder = spec.load()
    if spec.kind != "checkpoint":
        return _entry(spec.method or spec.source, spec.seed or 0, str(spec), encoder)
    path, trained = spec.source, encoder.train_config
    own_method, own_seed = trained.label, encoder.seed
    if m and (m["method"], int(m["seed"])) != (own_method, own_seed):
        raise ValueError(f"--checkpoints {spec}: the label {m['method']}:{m['seed']} differs from the checkpoint's own "
                         f"config ({own_method}:{own_seed}); pass {own_method}:{own_seed}={path}, or just {path}")
    return _entry(own_method, int(own_seed), path, encoder)


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
