"""The encoder spec: how every command names an encoder, loads it once and describes it; and
:func:`load_encoder`, the entry point to a trained world model.

Spec grammar (:meth:`EncoderSpec.parse`), ``[LABEL=][ft:]SOURCE`` with SOURCE one of

* ``pixels``: no frozen encoder; agents train a CNN on the frames end to end (``load`` -> None);
* ``random-cnn``: :class:`RandomCNN`, a randomly initialised conv encoder (seeded);
* ``pooled_pixels``: :class:`PooledPixels`, 16 x 16 average-pooled intensities (the evaluation's baseline);
* ``METHOD`` or ``METHOD:SEED`` (a world-model method of :data:`world_model.config.METHODS`): that
  architecture untrained, initialised with SEED (default: the seed the caller passes, e.g. the RL run's);
* a checkpoint path written by ``world_model.train``.

``LABEL=`` names the encoder in a report (agents.benchmark: any name; the evaluation: ``METHOD:SEED``,
checked against the checkpoint's own config); ``ft:`` fine-tunes it (agents.benchmark).  ``agents.train
--encoder`` takes a SOURCE alone.

``load_encoder(checkpoint_or_method, seed=0, map_location="cpu")`` returns a
:class:`~world_model.model.WorldModel` in eval mode with attributes ``method``, ``seed``, ``feature_dim``,
``finished`` and ``train_config`` (None for an untrained model), and

* ``features(frames) -> (B, feature_dim)`` and ``spatial_features(frames) -> (B, C, h, w)``, frames
  (B, H, W) or (B, 1, H, W), uint8 0..255 or float 0..1; both differentiable (fine-tuning);
* dynamics family: ``clip_features(frames (B, T, H, W), actions (B, T, 7)) -> (B, feature_dim)``,
  the features of the last frame in the context of the clip (action t follows frame t; T <= window);
* models with a slice tokenizer: the latent-planning protocol ``latent_shape``, ``encode(frames)
  -> (B, latent, H/8, W/8)``, ``decode(latents) -> (B, 1, H, W)``; dynamics family also
  ``predict(latents (B, T, ...), actions (B, T, 7)) -> (B, latent, H/8, W/8)``;
* mae3d: ``plane_spatial_features(volume, centers, rotations, fovs, size)`` (its 3D map of the
  whole volume sampled along the slice plane; needs the volume and pose).

What ``features`` computes per method: the table in :mod:`world_model.model`.  The baselines offer
``features`` and ``spatial_features`` (uint8 frames) and ``feature_dim``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .config import DEPRECATED_METHODS, METHODS, MODEL_SIZES, ModelConfig, TrainConfig, config_from_dict, method_id
from .methods import build_method
from .model import WorldModel, count_params

__all__ = ["EncoderSpec", "load_encoder", "RandomCNN", "PooledPixels", "BASELINES"]

#: spec sources that name a baseline rather than a world model
BASELINES = ("pixels", "random-cnn", "pooled_pixels")

_UNTRAINED = re.compile(r"(?P<method>[A-Za-z0-9_]+)(:(?P<seed>\d+))?")
_LABEL = re.compile(r"[\w.:+-]+")


class RandomCNN(nn.Module):
    """A randomly initialised conv encoder (the ``random-cnn`` baseline; seeded, usually frozen): 4 stride-2
    convs (32, 64, 128, 128).  ``spatial_features((B, H, W) uint8) -> (B, 128, H/16, W/16)``, ``features``
    their spatial mean (B, 128)."""

    feature_dim = 128

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv2d(1, 32, 4, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 4, 2, 1), nn.GELU(),
                nn.Conv2d(64, 128, 4, 2, 1), nn.GELU(), nn.Conv2d(128, 128, 4, 2, 1), nn.GELU(),
            )

    def spatial_features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames.float()[:, None] / 255.0 - 0.5)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.spatial_features(frames).mean((2, 3))


class PooledPixels(nn.Module):
    """Non-learned baseline (``pooled_pixels``): ``spatial_features`` (B, 1, 16, 16) average-pooled
    intensities in [0, 1]; ``features`` the same flattened (B, 256)."""

    feature_dim = 256

    def spatial_features(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(frames.float()[:, None] / 255.0, 16)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.spatial_features(frames).flatten(1)


@dataclass(frozen=True)
class EncoderSpec:
    """One parsed encoder spec (see the module docstring): ``source``, and the optional ``label`` and
    ``finetune`` (``ft:``).  ``str(spec)`` is the text that parses back to it."""

    source: str
    label: str | None = None
    finetune: bool = False

    @classmethod
    def parse(cls, text: str) -> "EncoderSpec":
        """The spec of ``text``; ``ValueError`` naming it when it is empty or has an empty label or source.
        A ``LABEL=`` prefix holds no ``/`` (so a path with ``=`` in it stays a path)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"encoder spec must be a non-empty string, got {text!r}")
        label, sep, rest = text.partition("=")
        if not sep or os.path.exists(text) or not _LABEL.fullmatch(label):
            label, rest = None, text
        finetune = rest.startswith("ft:")
        source = rest[3:] if finetune else rest
        if not source:
            raise ValueError(f"encoder spec {text!r}: no encoder after {'ft:' if finetune else 'the label'} "
                             f"(expected [LABEL=][ft:]SOURCE)")
        return cls(source, label, finetune)

    def __str__(self) -> str:
        return (f"{self.label}=" if self.label is not None else "") + ("ft:" if self.finetune else "") + self.source

    @property
    def kind(self) -> str:
        """``pixels`` | ``random-cnn`` | ``pooled_pixels`` | ``untrained`` (a method) | ``checkpoint``."""
        if self.source in BASELINES:
            return self.source
        m = _UNTRAINED.fullmatch(self.source)
        if m and m["method"] in METHODS + tuple(DEPRECATED_METHODS) and not os.path.exists(self.source):
            return "untrained"
        return "checkpoint"

    @property
    def method(self) -> str | None:
        """The method of an untrained spec (None otherwise)."""
        return method_id(_UNTRAINED.fullmatch(self.source)["method"]) if self.kind == "untrained" else None

    @property
    def seed(self) -> int | None:
        """The SEED of ``METHOD:SEED`` (None otherwise: the caller's seed applies)."""
        s = _UNTRAINED.fullmatch(self.source)["seed"] if self.kind == "untrained" else None
        return None if s is None else int(s)

    def load(self, seed: int = 0, size: int | None = None, map_location="cpu") -> nn.Module | None:
        """The encoder module (None for ``pixels``): baselines and untrained methods initialised with ``seed``
        (an untrained spec's own SEED first).  ``size``: the frames' pixels, refused (``ValueError``
        naming the spec) when a world model takes another size.  A missing checkpoint raises
        ``FileNotFoundError`` naming the spec and the sources it could have meant."""
        kind = self.kind
        if kind == "pixels":
            return None
        if kind == "random-cnn":
            return RandomCNN(seed)
        if kind == "pooled_pixels":
            return PooledPixels()
        if kind == "untrained":
            enc = load_encoder(self.method, seed=seed if self.seed is None else self.seed)
        elif not os.path.exists(self.source):
            raise FileNotFoundError(f"encoder {self}: no checkpoint {self.source} (a SOURCE is one of "
                                    f"{' | '.join(BASELINES)} | METHOD[:SEED] with METHOD in {METHODS} | a checkpoint path)")
        else:
            enc = load_encoder(self.source, map_location=map_location)
        trained = enc.cfg.size
        if size is not None and int(trained) != int(size):
            raise ValueError(f"encoder {self}: the world model takes {trained}-px slices, the frames are {size} px; "
                             f"pass --size {trained}")
        return enc

    def describe(self, encoder: nn.Module | None) -> dict:
        """What the loaded ``encoder`` of this spec is, for a report: ``spec`` (the source), ``kind``, and for a
        world model its method, architecture, model size, parameters, feature width and pretraining (steps,
        frames, subjects; None for an untrained architecture)."""
        d = {"spec": self.source}
        if self.kind in BASELINES:
            return {**d, "kind": {"pixels": "pixels CNN", "random-cnn": "random CNN",
                                  "pooled_pixels": "pooled pixels"}[self.kind]}
        tc = encoder.train_config if self.kind == "checkpoint" else None
        return {**d, "kind": "world model", "method": encoder.method, "arch": encoder.cfg.arch,
                "model_size": tc.model_size if tc else "tiny", "params": count_params(encoder),
                "feature_dim": int(encoder.feature_dim), "pretrain_steps": tc.steps if tc else None,
                "pretrain_frames": tc.steps * encoder.frames_per_batch() if tc else None,
                "pretrain_subjects": tc.subjects if tc else None}


def load_encoder(checkpoint, seed: int = 0, map_location="cpu", model: ModelConfig | None = None) -> WorldModel:
    """A trained world model in eval mode from a checkpoint written by ``world_model.train``
    (loaded with ``weights_only=True``), or a randomly initialised one from a method name
    (``"random_init"`` or any method, ``torch.manual_seed(seed)``, architecture ``model``, by default the
    tiny model size).  See the module docstring for what it offers."""
    named = isinstance(checkpoint, str) and checkpoint in METHODS + tuple(DEPRECATED_METHODS)
    if named and not os.path.exists(checkpoint):
        torch.manual_seed(seed)
        m = build_method(model or MODEL_SIZES["tiny"], method_id(checkpoint))
        m.seed = seed
        return m.eval()
    state = load_checkpoint(checkpoint, map_location)
    model_cfg, train_cfg = config_from_dict(state["config"])
    m = build_method(model_cfg, train_cfg.method, train_cfg)
    m.load_state_dict(state["model"])
    m.seed = train_cfg.seed
    m.train_config: TrainConfig = train_cfg
    m.finished = int(state["step"]) >= train_cfg.total_steps  # False: a checkpoint of an unfinished run
    m.prediction_quality = state.get("prediction")  # world_model.prediction's table at the last evaluation
    return m.eval()

