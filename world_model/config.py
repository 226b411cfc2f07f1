"""Typed configs for world-model pretraining (dataclasses; presets ``tiny``/``small``/``base``).

Every field is a plain int/float/str/bool so a config round-trips through ``asdict`` and a
checkpoint loaded with ``torch.load(weights_only=True)``; ``validate`` raises ``ValueError``
with the field name for bad values.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace

METHODS = ("navwm", "tokenizer", "mae3d", "shuffled", "noaction", "random")

__all__ = ["METHODS", "ModelConfig", "TrainConfig", "PRESETS", "make_config", "config_from_dict", "add_arguments"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture.

    size : slice pixels (H = W), a multiple of 8.  width : tokenizer base channels (2D conv AE:
    width, 2*width, 2*width at strides 2, 4, 8).  latent : latent channels of the (size/8)^2 grid.
    dim, depth, heads : dynamics transformer.  patch : latent-grid patch per token (2 -> 16 tokens
    for a 64^2 slice).  window : frames per training clip (T).  mae3d_width : 3D MAE base channels
    (0 = chosen to match the navwm parameter count within 20%).  voxel_mm, crop : 3D MAE volumes.
    """

    size: int = 64
    width: int = 16
    latent: int = 8
    dim: int = 64
    depth: int = 2
    heads: int = 4
    patch: int = 2
    window: int = 8
    mae3d_width: int = 0
    voxel_mm: float = 3.0
    crop: int = 64
    mask_ratio: float = 0.75


@dataclass(frozen=True)
class TrainConfig:
    """Training run.

    method : one of METHODS.  preset : the ModelConfig preset name.  data : ``stream`` (rendered on
    the fly from ``subjects``) or a rollout-shard folder.  steps : optimiser steps (all stages).
    stage1_frac : navwm-family share of steps spent on the tokenizer alone (stage 1); stage 2 trains
    the dynamics on the frozen tokenizer, or jointly when ``joint``.  rollout_weight : weight of the
    2-step (fed-back) prediction loss.  action_dropout : share of actions replaced by the learned
    "no action" embedding (gives single-frame features).  batch : clips per step per process
    (mae3d: volumes per step = max(1, batch // 4)).
    """

    method: str = "navwm"
    preset: str = "tiny"
    data: str = "stream"
    subjects: str = "synthetic:24"
    policy: str = "mix"
    steps: int = 300
    batch: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 20
    stage1_frac: float = 0.4
    joint: bool = False
    rollout_weight: float = 0.5
    action_dropout: float = 0.1
    seed: int = 0
    out: str = "runs/wm"
    log_every: int = 20
    eval_every: int = 100
    ckpt_every: int = 100
    workers: int = 0
    amp: bool = True
    device: str = "auto"
    threads: int = 0

    @property
    def total_steps(self) -> int:
        """Optimiser steps the run takes (``random`` takes none: it is the initialised model)."""
        return 0 if self.method == "random" else self.steps

    def validate(self, model: ModelConfig) -> None:
        _check(self.method in METHODS, "method", self.method, f"one of {METHODS}")
        _check(self.preset in PRESETS, "preset", self.preset, f"one of {tuple(PRESETS)}")
        for name in ("steps", "batch", "log_every", "eval_every", "ckpt_every"):
            _check(getattr(self, name) >= (0 if name == "steps" else 1), name, getattr(self, name), ">= 1")
        _check(self.lr > 0, "lr", self.lr, "> 0")
        _check(0.0 <= self.stage1_frac < 1.0, "stage1_frac", self.stage1_frac, "in [0, 1)")
        _check(0.0 <= self.action_dropout < 1.0, "action_dropout", self.action_dropout, "in [0, 1)")
        _check(self.workers >= 0 and self.warmup >= 0 and self.threads >= 0, "workers/warmup/threads",
               (self.workers, self.warmup, self.threads), ">= 0")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device", self.device,
               "auto, cpu or cuda[:i]")
        _check(model.size >= 16 and model.size % 8 == 0, "size", model.size, "a multiple of 8, >= 16")
        _check((model.size // 8) % model.patch == 0, "patch", model.patch, "dividing size/8")
        _check(model.dim % model.heads == 0, "dim", model.dim, f"divisible by heads={model.heads}")
        _check(model.window >= 2, "window", model.window, ">= 2")
        for name in ("width", "latent", "depth", "heads"):
            _check(getattr(model, name) >= 1, name, getattr(model, name), ">= 1")
        _check(0.0 < model.mask_ratio < 1.0, "mask_ratio", model.mask_ratio, "in (0, 1)")
        _check(model.crop >= 16 and model.crop % 8 == 0, "crop", model.crop, "a multiple of 8, >= 16")
        _check(model.voxel_mm > 0, "voxel_mm", model.voxel_mm, "> 0")


def _check(ok: bool, name: str, value, want: str) -> None:
    if not ok:
        raise ValueError(f"config {name}={value!r}: must be {want}")


PRESETS = {
    "tiny": ModelConfig(),
    "small": ModelConfig(width=32, latent=16, dim=128, depth=4, heads=4, window=8),
    "base": ModelConfig(size=128, width=48, latent=16, dim=256, depth=6, heads=8, patch=4, window=16, crop=96,
                        voxel_mm=2.0),
}


def make_config(preset: str = "tiny", **overrides) -> tuple[ModelConfig, TrainConfig]:
    """(ModelConfig, TrainConfig) from a preset and field overrides (either dataclass's names)."""
    if preset not in PRESETS:
        raise ValueError(f"config preset={preset!r}: must be one of {tuple(PRESETS)}")
    mnames = {f.name for f in fields(ModelConfig)}
    tnames = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - mnames - tnames
    if unknown:
        raise ValueError(f"unknown config fields: {sorted(unknown)}")
    model = replace(PRESETS[preset], **{k: v for k, v in overrides.items() if k in mnames})
    train = TrainConfig(preset=preset, **{k: v for k, v in overrides.items() if k in tnames})
    train.validate(model)
    return model, train


def config_from_dict(d: dict) -> tuple[ModelConfig, TrainConfig]:
    """Inverse of ``{"model": asdict(m), "train": asdict(t)}`` (as stored in checkpoints)."""
    model, train = ModelConfig(**d["model"]), TrainConfig(**d["train"])
    train.validate(model)
    return model, train


def as_dict(model: ModelConfig, train: TrainConfig) -> dict:
    return {"model": asdict(model), "train": asdict(train)}


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One ``--name`` option per dataclass field (typed; default None = keep the preset value)."""
    seen = set()
    for cls in (TrainConfig, ModelConfig):
        for f in fields(cls):
            if f.name in seen or f.name == "preset":
                continue
            seen.add(f.name)
            typ = {"int": int, "float": float, "str": str, "bool": _bool}[f.type if isinstance(f.type, str)
                                                                          else f.type.__name__]
            kw = {"choices": METHODS} if f.name == "method" else {}
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=typ, default=None, **kw)
