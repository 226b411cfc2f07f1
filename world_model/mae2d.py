"""2D masked autoencoder on slices: the standard static self-supervised baseline (``mae2d``).

The slice tokenizer's conv encoder/decoder (:class:`world_model.tokenizer.Tokenizer`, width matched
to navwm) reconstructs a slice of which ``mask_ratio`` of the 8x8-pixel patches (one latent cell
each) are replaced by a learned value; the MSE is taken on the masked pixels (a dense-conv MAE,
as SparK / ConvNeXt-V2 without sparse convolutions, and as the 3D MAE baseline).  Features are the
tokenizer's, on the unmasked slice.
"""

from __future__ import annotations

import torch
from torch import nn

from .tokenizer import Tokenizer, psnr, to_unit

__all__ = ["masked_slice_loss"]


def masked_slice_loss(tokenizer: Tokenizer, mask_value: nn.Parameter, frames: torch.Tensor, mask_ratio: float,
                      gen: torch.Generator, patch: int = 8) -> tuple[torch.Tensor, dict]:
    """Masked-pixel MSE of slices ``frames`` (B, H, W) with random patches masked (``gen``)."""
    x = to_unit(frames)
    b, _, h, w = x.shape
    keep = torch.rand(b, 1, h // patch, w // patch, generator=gen, device=gen.device).to(x.device) >= mask_ratio
    m = (~keep).to(x.dtype).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    x_in = x * (1 - m) + (mask_value + 0.5) * m
    rec = tokenizer.decode(tokenizer.encode(x_in))
    mse = ((rec - x) ** 2 * m).sum() / m.sum().clamp_min(1)
    return mse, {"mae_mse": mse.detach(), "mae_psnr": psnr(mse.detach())}
