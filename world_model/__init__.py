"""World-model pretraining on slice navigation: tokenizer, latent dynamics, baselines, training.

Entry point for downstream users: :func:`load_encoder` and :class:`EncoderSpec` (see :mod:`world_model.encoders`).
"""

from .encoders import EncoderSpec, load_encoder
from .methods import build_method, build_model  # build_model: deprecated name of build_method
from .model import WorldModel

__all__ = ["WorldModel", "EncoderSpec", "build_method", "load_encoder"]
