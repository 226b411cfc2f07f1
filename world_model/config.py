"""Typed configs for world-model pretraining: :class:`ModelConfig` (sizes ``tiny``/``small``/``base``
with the conv tokenizer and ``capable`` with the ResNet-18 one, in :data:`MODEL_SIZES`) and :class:`TrainConfig`.

Every field is a plain int/float/str/bool so a config round-trips through :func:`navgym.configs.to_dict` and a
checkpoint loaded with ``torch.load(weights_only=True)``; ``validate`` raises ``ValueError``
with the field name for bad values.  Each field's ``help`` metadata is the one description of it:
``python -m world_model.train --help`` is generated from it (:func:`navgym.configs.add_options`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from navgym.configs import add_options, config_field, from_dict, to_dict
from navgym.deprecation import warn_deprecated

from .device import device_field, resolve_device
from .tokenizer import ARCHS

METHODS = ("navwm", "shuffled", "noaction", "navwm_joint", "shuffled_joint", "noaction_joint", "tokenizer",
           "mae2d", "mae3d", "random_init", "navjump", "shuffled_navjump", "noaction_navjump", "relpose")
JUMP_METHODS = ("navjump", "shuffled_navjump", "noaction_navjump", "relpose")  # trained on far jumps
DEPRECATED_METHODS = {"random": "random_init"}  # old method id -> its name now (accepted with a DeprecationWarning)

__all__ = ["METHODS", "JUMP_METHODS", "DEPRECATED_METHODS", "method_id", "ModelConfig", "TrainConfig", "MODEL_SIZES",
           "CUSTOM_SIZE", "make_config", "model_size_of", "config_from_dict", "add_arguments", "as_dict"]


def method_id(name: str) -> str:
    """``name`` as a method id of :data:`METHODS`: a deprecated id (:data:`DEPRECATED_METHODS`) is
    mapped to its new name with a ``DeprecationWarning``; any other name is returned unchanged."""
    if name in DEPRECATED_METHODS:
        warn_deprecated(f"method {name!r}", repr(DEPRECATED_METHODS[name]), stacklevel=3)
        return DEPRECATED_METHODS[name]
    return name


_f = config_field  # short form for the field tables below


@dataclass(frozen=True)
class ModelConfig:
    """Architecture (one of :data:`MODEL_SIZES` plus overrides)."""

    arch: str = _f("conv", "slice tokenizer: 'conv' (3 strided convs) or 'resnet' (ResNet-18 encoder to the H/8 "
                           "grid; see world_model.tokenizer); checkpoints without it are 'conv'")
    size: int = _f(64, "slice pixels (H = W), a multiple of 8")
    width: int = _f(16, "tokenizer base channels (conv: width, 2*width, 2*width at strides 2, 4, 8; resnet: stages "
                        "width, 2, 4, 8*width)")
    latent: int = _f(8, "latent channels of the (size/8)^2 latent grid")
    dim: int = _f(64, "dynamics transformer width")
    depth: int = _f(2, "dynamics transformer layers")
    heads: int = _f(4, "dynamics attention heads")
    patch: int = _f(2, "latent-grid patch per dynamics token (2 -> 16 tokens for a 64^2 slice)")
    window: int = _f(8, "frames per training clip (T) the model sees")
    mae3d_width: int = _f(0, "3D MAE base channels (0 = matched to the navwm parameter count)")
    voxel_mm: float = _f(3.0, "3D MAE voxel size (mm)")
    crop: int = _f(64, "3D MAE crop side (voxels)")
    mask_ratio: float = _f(0.75, "share of patches masked (2D and 3D MAE)")


@dataclass(frozen=True)
class TrainConfig:
    """Training run."""

    method: str = _f("navwm", "what is trained (see world_model.methods)", choices=METHODS, parse=method_id)
    model_size: str = _f("tiny", "the MODEL_SIZES entry the model equals, or 'custom' (set by make_config from the "
                                 "model itself)")
    data: str = _f("stream", "'stream' (clips rendered on the fly from --subjects) or a rollout-shard folder")
    subjects: str = _f("synthetic:24", "subjects spec (their 'train' split is used)")
    policy: str = _f("mix", "navgym policy that moves the slices")
    steps: int = _f(300, "optimiser steps (all stages)")
    batch: int = _f(16, "clips per step per process (mae3d: volumes per step = max(1, batch // 4))")
    lr: float = _f(1e-3, "peak learning rate (AdamW)")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    warmup: int = _f(20, "linear warm-up steps (restarted at each stage)")
    stage1_frac: float = _f(0.4, "dynamics family: share of steps training the tokenizer alone (stage 1)")
    rollout_steps: int = _f(2, "dynamics: open-loop steps scored (1 = teacher-forced only; 2 = one "
                               "fed-back pass)")
    rollout_weight: float = _f(0.5, "weight of the fed-back (open-loop) prediction losses")
    stride: int = _f(1, "frames of the rendered clip per model step: >1 gives composed 'jump' actions "
                        "(the rendered clip is (window-1)*stride+1 frames)")
    mixed_strides: bool = _f(False, "draw each transition's stride uniformly in 1..stride (mixed step sizes)")
    joint_loss: str = _f("pixel", "*_joint methods: 'pixel' (predictions decoded and scored against the next "
                                  "slices) or 'latent' (MSE to the encoder's own latents; collapses)")
    jump_context: int = _f(4, "jump methods (navjump, its controls, relpose) and the far-jump row of the prediction "
                              "table: context frames before the jump (consecutive frames of a --policy clip; the "
                              "table uses at most window)")
    jump_mm: float = _f(30.0, "far jump: translation uniform in the ball of this radius (mm, plane frame)")
    jump_deg: float = _f(30.0, "far jump: rotation by U(0, jump_deg) degrees about a uniformly random axis")
    jump_zoom_pct: float = _f(20.0, "far jump: zoom ln-uniform within +-jump_zoom_pct percent")
    jump_target: str = _f("pixel", "navjump family: 'pixel' (the predicted latent decoded and scored against the "
                                   "rendered view) or 'latent' (MSE to an EMA copy of the encoder's latent of it)")
    ema_decay: float = _f(0.99, "jump_target=latent: decay of the EMA target encoder (per step)")
    action_dropout: float = _f(0.1, "share of actions replaced by the 'no action' embedding")
    seed: int = _f(0, "seed of the model initialisation and of every batch")
    out: str = _f("runs/wm", "output folder (last.pt, summary.json, tb/)")
    log_every: int = _f(20, "steps between logged scalars")
    eval_every: int = _f(100, "steps between held-out evaluations")
    ckpt_every: int = _f(100, "steps between checkpoints")
    workers: int = _f(0, "DataLoader processes rendering clips (CPU rendering only)")
    render: str = _f("auto", "where clips are rendered: 'cpu' (numba kernel), 'device' (TorchRenderer on the "
                              "training device, in the training process) or 'auto' (device on CUDA)")
    resident_subjects: int = _f(4, "subjects kept resident by the clip stream (rendered from at once)")
    amp: bool = _f(True, "bf16 autocast on CUDA")
    compile: bool = _f(False, "torch.compile the model (CUDA)")
    device: str = device_field()
    threads: int = _f(0, "torch CPU threads (0 = torch's default)")
    compile_mode: str = _f("default", "torch.compile mode with --compile: 'default', 'reduce-overhead' (CUDA graphs) "
                                      "or 'max-autotune'")
    channels_last: bool = _f(False, "channels_last memory format for the model's conv weights (a GPU lever)")
    fused_adam: bool = _f(False, "fused AdamW kernel (a GPU lever; CPU too with recent torch)")
    device_rng: bool = _f(True, "per-step masks and permutations drawn on the training device (no host-to-device "
                                "copy on CUDA; CPU draws are unchanged)")

    def __post_init__(self):
        object.__setattr__(self, "method", method_id(self.method))  # checkpoints and configs with an old id

    @property
    def label(self) -> str:
        """The run's name in reports: the method, with ``_latent`` for the navjump family's latent target."""
        latent = self.method in JUMP_METHODS and self.method != "relpose" and self.jump_target == "latent"
        return self.method + ("_latent" if latent else "")

    @property
    def total_steps(self) -> int:
        """Optimiser steps the run takes (``random_init`` takes none: it is the initialised model)."""
        return 0 if self.method == "random_init" else self.steps

    def validate(self, model: ModelConfig) -> None:
        _check(self.method in METHODS, "method", self.method, f"one of {METHODS}")
        _check(self.model_size == model_size_of(model), "model_size", self.model_size,
               f"{model_size_of(model)!r}, the size the model equals ({CUSTOM_SIZE!r}: none)")
        for name in ("steps", "batch", "log_every", "eval_every", "ckpt_every", "rollout_steps", "stride",
                     "resident_subjects"):
            if name != "steps" or self.method != "random_init":  # it takes no steps (any --steps, 0 included)
                _check(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        _check(self.lr > 0, "lr", self.lr, "> 0")
        _check(0.0 <= self.stage1_frac < 1.0, "stage1_frac", self.stage1_frac, "in [0, 1)")
        _check(0.0 <= self.action_dropout < 1.0, "action_dropout", self.action_dropout, "in [0, 1)")
        _check(self.workers >= 0 and self.warmup >= 0 and self.threads >= 0, "workers/warmup/threads",
               (self.workers, self.warmup, self.threads), ">= 0")
        _check(self.joint_loss in ("pixel", "latent"), "joint_loss", self.joint_loss, "'pixel' or 'latent'")
        _check(self.jump_target in ("pixel", "latent"), "jump_target", self.jump_target, "'pixel' or 'latent'")
        _check(0.0 <= self.ema_decay < 1.0, "ema_decay", self.ema_decay, "in [0, 1)")
        _check(self.jump_context >= 1 and (self.method not in JUMP_METHODS or self.jump_context <= model.window),
               "jump_context", self.jump_context, f">= 1 (and <= window={model.window} for {self.method})")
        _check(self.jump_mm >= 0 and self.jump_deg >= 0, "jump_mm/jump_deg", (self.jump_mm, self.jump_deg), ">= 0")
        _check(0 <= self.jump_zoom_pct < 100, "jump_zoom_pct", self.jump_zoom_pct, "in [0, 100)")
        _check(self.method not in JUMP_METHODS or (self.data == "stream" and self.stride == 1), "data/stride",
               (self.data, self.stride), f"'stream' and 1 for {self.method} (jumps are rendered on the fly)")
        _check(self.render in ("auto", "cpu", "device"), "render", self.render, "auto, cpu or device")
        _check(self.compile_mode in ("default", "reduce-overhead", "max-autotune"), "compile_mode", self.compile_mode,
               "default, reduce-overhead or max-autotune")
        _check(self.stride == 1 or self.data == "stream", "stride", self.stride, "1 unless data=stream")
        resolve_device(self.device, "config device")
        _check(model.arch in ARCHS, "arch", model.arch, f"one of {ARCHS}")
        _check(model.size >= 16 and model.size % 8 == 0, "size", model.size, "a multiple of 8, >= 16")
        _check((model.size // 8) % model.patch == 0, "patch", model.patch, "dividing size/8")
        _check(model.dim % model.heads == 0, "dim", model.dim, f"divisible by heads={model.heads}")
        _check(model.window >= 2, "window", model.window, ">= 2")
        _check(self.rollout_steps < model.window, "rollout_steps", self.rollout_steps, f"< window={model.window}")
        for name in ("width", "latent", "depth", "heads"):
            _check(getattr(model, name) >= 1, name, getattr(model, name), ">= 1")
        _check(0.0 < model.mask_ratio < 1.0, "mask_ratio", model.mask_ratio, "in (0, 1)")
        _check(model.crop >= 16 and model.crop % 8 == 0, "crop", model.crop, "a multiple of 8, >= 16")
        _check(model.voxel_mm > 0, "voxel_mm", model.voxel_mm, "> 0")


def _check(ok: bool, name: str, value, want: str) -> None:
    if not ok:
        raise ValueError(f"config {name}={value!r}: must be {want}")


MODEL_SIZES = {
    "tiny": ModelConfig(),
    "small": ModelConfig(width=32, latent=16, dim=128, depth=4, heads=4, window=8),
    "base": ModelConfig(size=128, width=48, latent=16, dim=256, depth=6, heads=8, patch=4, window=16, crop=96,
                        voxel_mm=2.0),
    # ResNet-18 slice encoder (11.2 M parameters) for the GPU-scale comparison; navwm ~20.7 M in all
    "capable": ModelConfig(arch="resnet", width=64, latent=16, dim=384, depth=4, heads=6, window=8),
}


#: ``TrainConfig.model_size`` of a model that equals no :data:`MODEL_SIZES` entry
CUSTOM_SIZE = "custom"


def model_size_of(model: ModelConfig) -> str:
    """The :data:`MODEL_SIZES` name of ``model``, or :data:`CUSTOM_SIZE` when fields differ from every size."""
    return next((name for name, m in MODEL_SIZES.items() if m == model), CUSTOM_SIZE)


def make_config(model_size: str = "tiny", **overrides) -> tuple[ModelConfig, TrainConfig]:
    """(ModelConfig, TrainConfig) from a model size and field overrides (either dataclass's names); the
    TrainConfig's ``model_size`` records what the model is (:func:`model_size_of`): ``make_config("tiny", size=128)``
    records ``custom``."""
    if model_size not in MODEL_SIZES:
        raise ValueError(f"config model_size={model_size!r}: must be one of {tuple(MODEL_SIZES)}")
    mnames = {f.name for f in fields(ModelConfig)}
    tnames = {f.name for f in fields(TrainConfig)} - {"model_size"}
    unknown = set(overrides) - mnames - tnames
    if unknown:
        raise ValueError(f"unknown config fields: {sorted(unknown)}")
    model = replace(MODEL_SIZES[model_size], **{k: v for k, v in overrides.items() if k in mnames})
    train = TrainConfig(**{k: v for k, v in overrides.items() if k in tnames}, model_size=model_size_of(model))
    train.validate(model)
    return model, train


def config_from_dict(d: dict) -> tuple[ModelConfig, TrainConfig]:
    """Inverse of :func:`as_dict` (as stored in checkpoints); ``model_size`` is what the model is (a checkpoint
    that recorded its starting size beside overridden fields reads as ``custom``)."""
    model = from_dict(ModelConfig, d["model"])
    train = from_dict(TrainConfig, {**d["train"], "model_size": model_size_of(model)})
    train.validate(model)
    return model, train


def as_dict(model: ModelConfig, train: TrainConfig) -> dict:
    """The ``{"model": ..., "train": ...}`` dict a checkpoint and ``config.json`` store."""
    return {"model": to_dict(model), "train": to_dict(train)}


def add_arguments(p) -> None:
    """``--model-size`` and one ``--name`` option per field of both configs; an omitted option parses to None
    (the model fields then keep the model size's value, the training fields their default)."""
    p.add_argument("--model-size", dest="model_size", default=None, choices=tuple(MODEL_SIZES),
                   help="model size: " + "; ".join(f"{k}: {_summary(v)}" for k, v in MODEL_SIZES.items())
                   + " (default: tiny)")
    add_options(p.add_argument_group("training"), TrainConfig, skip=("model_size",), unset=True)
    add_options(p.add_argument_group("model"), ModelConfig, unset=True,
                shown=lambda f: "the model size's: " + ", ".join(f"{k} {getattr(m, f.name)}"
                                                                 for k, m in MODEL_SIZES.items()))


def _summary(m: ModelConfig) -> str:
    return f"{m.size}px, {m.arch} width {m.width}, latent {m.latent}, dynamics {m.dim}x{m.depth}, window {m.window}"
