"""World-model pretraining on slice navigation: tokenizer, latent dynamics, baselines, training.

Entry point for downstream users: :func:`load_encoder` (see :mod:`world_model.encoders`).
"""

from .encoders import WorldModel, load_encoder
from .methods import build_model

__all__ = ["WorldModel", "build_model", "load_encoder"]
