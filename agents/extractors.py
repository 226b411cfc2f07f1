"""SB3 feature extractors for the :class:`agents.envs.NavVecEnv` observation (frames + action history).

Encoder protocol (``world_model.load_encoder``): an ``nn.Module`` with ``feature_dim`` and
``features(frames) -> (B, feature_dim)`` where ``frames`` is a (B, H, W) uint8 tensor (0..255).

Policies must be built with ``normalize_images=False``: the extractor receives the stacked
frames as float 0..255 (SB3 casts uint8 to float) and scales them itself.
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from navgym.deprecation import warn_deprecated
from world_model.encoders import EncoderSpec, RandomCNN

__all__ = ["NavExtractor", "RandomCNN", "StandardisedEncoder", "CNNS"]


def nature_cnn(frames: int) -> nn.Sequential:
    """NatureCNN convs (Mnih et al. 2015): 8x8/4 (32), 4x4/2 (64), 3x3/1 (64), flattened."""
    return nn.Sequential(nn.Conv2d(frames, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten())


def small_cnn(frames: int) -> nn.Sequential:
    """The NatureCNN's layout with half the channels after the first conv: 8x8/4 (32), 4x4/2 (32),
    3x3/1 (32), flattened (512 values at 64 x 64), for a cheaper update on CPU."""
    return nn.Sequential(nn.Conv2d(frames, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 32, 4, 2), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, 1), nn.ReLU(), nn.Flatten())


#: pixel encoders trained end to end: name -> (conv stack builder, width of the linear layer after it)
CNNS = {"nature": (nature_cnn, 512), "small": (small_cnn, 256)}


class NavExtractor(BaseFeaturesExtractor):
    """Features of a ``{"image": (k, H, W), "actions": (m*7,)}`` observation.

    With a ``features`` entry instead of ``image`` (frozen features computed by the env, the fast
    path for frozen encoders) the output is simply ``[features, actions]``.
    encoder : a :class:`world_model.encoders.EncoderSpec` source or a module; ``"pixels"``/None -> the CNN
        ``cnn`` (:data:`CNNS`) over the k stacked frames, trained end to end; otherwise a pretrained
        encoder applied to each frame, its k feature vectors concatenated (B, k * feature_dim).
    finetune : train the pretrained encoder too (default: frozen, eval mode, no gradients).
    Output: image features followed by the action history (B, features_dim).
    """

    def __init__(self, observation_space: spaces.Dict, encoder: str | nn.Module | None = "pixels",
                 finetune: bool = False, cnn: str = "nature", encoder_seed: int = 0):
        act = observation_space["actions"]
        if "features" in observation_space.spaces:  # frozen features precomputed by the env
            super().__init__(observation_space, observation_space["features"].shape[0] + act.shape[0])
            self.cnn = self.encoder = None
            self.finetune = False
            return
        if isinstance(encoder, str):  # a spec, so saved models hold a string, never a pickled module
            encoder = EncoderSpec.parse(encoder).load(seed=encoder_seed, size=observation_space["image"].shape[-1])
        img = observation_space["image"]
        k, h, w = img.shape
        if encoder is None:
            if cnn not in CNNS:
                raise ValueError(f"cnn must be one of {sorted(CNNS)}, got {cnn!r}")
            if min(h, w) < 36:
                raise ValueError(f"the {cnn} CNN needs frames of at least 36 x 36 pixels, got {h} x {w}")
            build, img_dim = CNNS[cnn]
            convs = build(k)
            with torch.no_grad():
                n = convs(torch.zeros(1, k, h, w)).shape[1]
        else:
            if not hasattr(encoder, "features") or not hasattr(encoder, "feature_dim"):
                raise TypeError("encoder must have features((B, H, W) uint8) -> (B, D) and feature_dim")
            img_dim = k * int(encoder.feature_dim)
        super().__init__(observation_space, img_dim + act.shape[0])
        self.frames, self.finetune = k, bool(finetune)
        if encoder is None:
            self.cnn = nn.Sequential(convs, nn.Linear(n, img_dim), nn.ReLU())
            self.encoder = None
        else:
            self.cnn = None
            self.encoder = encoder
            encoder.requires_grad_(self.finetune)
            encoder.train(self.finetune)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder is not None and not self.finetune:
            self.encoder.eval()
        return self

    def encode_frames(self, image: torch.Tensor) -> torch.Tensor:
        """(B, k, H, W) float 0..255 -> (B, image features)."""
        if self.cnn is not None:
            # channels-last input: oneDNN convolutions forward + backward ~2x faster on CPU (docs/agents.md)
            return self.cnn((image / 255.0).contiguous(memory_format=torch.channels_last))
        b, k, h, w = image.shape
        frames = image.reshape(b * k, h, w).round().clamp(0, 255).to(torch.uint8)
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            feats = self.encoder.features(frames)
        return feats.float().reshape(b, -1)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        if "features" in obs:
            return torch.cat([obs["features"], obs["actions"]], dim=1)
        return torch.cat([self.encode_frames(obs["image"]), obs["actions"]], dim=1)


class StandardisedEncoder(nn.Module):
    """A frozen encoder whose features are standardised per dimension, ``(f - mean) / std``.

    Encoders' raw feature scales differ widely (an untrained world model's features vary ~60x less between
    slices than a trained one's), and a policy network sees unit-scale inputs only after this; ``mean`` and
    ``std`` (D,) are :func:`world_model.standardise.statistics` of a fixed sample of training slices
    (:func:`agents.train.frozen_encoder`, saved with the run).
    """

    def __init__(self, encoder: nn.Module, mean, std):
        super().__init__()
        self.encoder, self.feature_dim = encoder, int(encoder.feature_dim)
        self.register_buffer("mean", torch.as_tensor(mean).float())
        self.register_buffer("std", torch.as_tensor(std).float())

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return (self.encoder.features(frames).float() - self.mean) / self.std


def load_frame_encoder(spec: str, seed: int = 0, size: int | None = None) -> nn.Module | None:
    """Deprecated: ``EncoderSpec.parse(spec).load(seed, size)`` (:class:`world_model.encoders.EncoderSpec`)."""
    warn_deprecated("agents.extractors.load_frame_encoder", "world_model.encoders.EncoderSpec.parse(spec).load(seed, size)")
    return EncoderSpec.parse(spec).load(seed=seed, size=size)
