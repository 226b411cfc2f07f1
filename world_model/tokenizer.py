"""Slice tokenizer: a 2D convolutional autoencoder (stage 1, trained by reconstruction).

A (B, 1, H, W) slice in [0, 1] maps to a latent grid (B, latent, H/8, W/8) through three
stride-2 convolutions (hidden map (B, 2*width, H/8, W/8)) and a 1x1 projection; the decoder mirrors
it with transposed convolutions.  Chosen over a ViT-MAE because on 2 CPU cores a conv AE reaches a
useful reconstruction in minutes, and its latent grid gives the dynamics model spatial tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Tokenizer", "to_unit"]


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float 0..1 frames (..., H, W) or (B, 1, H, W) -> float32 in [0, 1] (B, 1, H, W)."""
    x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"frames must be (B, H, W) or (B, 1, H, W), got {tuple(frames.shape)}")
    return x


class Tokenizer(nn.Module):
    def __init__(self, width: int = 16, latent: int = 8):
        super().__init__()
        w = width
        self.enc = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.GELU(),
        )
        self.to_latent = nn.Conv2d(2 * w, latent, 1)
        self.dec = nn.Sequential(
            nn.Conv2d(latent, 2 * w, 1), nn.GELU(),
            nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1), nn.GELU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.GELU(),
            nn.ConvTranspose2d(w, 1, 4, 2, 1),
        )
        self.hidden_dim = 2 * w

    def hidden(self, frames: torch.Tensor) -> torch.Tensor:
        """frames -> hidden map (B, 2*width, H/8, W/8)."""
        return self.enc(to_unit(frames) - 0.5)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames -> latent grid (B, latent, H/8, W/8)."""
        return self.to_latent(self.hidden(frames))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent grid -> reconstructed slice (B, 1, H, W), intensities ~[0, 1]."""
        return self.dec(z) + 0.5

    def compute_loss(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Pixel MSE of the reconstruction; logs ``recon_mse`` and ``recon_psnr`` (dB, peak 1)."""
        x = to_unit(frames)
        mse = F.mse_loss(self.decode(self.encode(x)), x)
        return mse, {"recon_mse": mse.detach(), "recon_psnr": psnr(mse.detach())}


def psnr(mse: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(mse.clamp_min(1e-10))
