"""Slice tokenizers: 2D convolutional autoencoders (stage 1, trained by reconstruction), chosen by
``ModelConfig.arch`` (:func:`make_tokenizer`).

* ``conv`` (:class:`Tokenizer`, the tiny/small/base sizes): a (B, 1, H, W) slice in [0, 1] maps to a
  latent grid (B, latent, H/8, W/8) through three stride-2 convolutions (hidden map
  (B, 2*width, H/8, W/8)) and a 1x1 projection; the decoder mirrors it with transposed
  convolutions.  Chosen over a ViT-MAE because on 2 CPU cores a conv AE reaches a useful
  reconstruction in minutes, and its latent grid gives the dynamics model spatial tokens.
* ``resnet`` (:class:`ResNetTokenizer`, the ``capable`` size): a ResNet-18 encoder (two basic blocks
  per stage, widths width/2w/4w/8w) with a stride-2 3x3 stem (no max-pool) and stage strides
  1, 2, 2, 1, so the hidden map is (B, 8*width, H/8, W/8), the grid the dynamics model needs;
  GroupNorm instead of BatchNorm (clip batches are correlated frames, and features must not
  depend on the batch).  The decoder: a 3x3 conv to 4*width, then a basic block and a stride-2
  transposed conv per scale (4w, 2w, w) back to H.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Tokenizer", "ResNetTokenizer", "make_tokenizer", "ARCHS", "to_unit"]

ARCHS = ("conv", "resnet")


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float 0..1 frames (..., H, W) or (B, 1, H, W) -> float32 in [0, 1] (B, 1, H, W)."""
    x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"frames must be (B, H, W) or (B, 1, H, W), got {tuple(frames.shape)}")
    return x


class Tokenizer(nn.Module):
    """The ``conv`` tokenizer (see the module docstring); subclasses replace ``enc``/``dec``."""

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


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(c, 32), c)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, GroupNorm, ReLU; a 1x1 projection where shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _norm(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _norm(cout))
        self.skip = (nn.Identity() if cin == cout and stride == 1 else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout)))

    def forward(self, x):
        return torch.relu(self.main(x) + self.skip(x))


class ResNetTokenizer(Tokenizer):
    """The ``resnet`` tokenizer: ResNet-18 encoder to the H/8 grid and a lighter residual decoder
    (see the module docstring); the same interface as :class:`Tokenizer`."""

    def __init__(self, width: int = 64, latent: int = 16):
        nn.Module.__init__(self)
        w = width
        stages, cin = [], w
        for cout, stride in ((w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 1)):
            stages += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout)]
            cin = cout
        self.enc = nn.Sequential(nn.Conv2d(1, w, 3, 2, 1, bias=False), _norm(w), nn.ReLU(), *stages)
        self.to_latent = nn.Conv2d(8 * w, latent, 1)
        up = []
        for c in (4 * w, 2 * w, w):
            up += [BasicBlock(c, c), nn.ConvTranspose2d(c, c // 2 if c > w else 1, 4, 2, 1)]
            if c > w:
                up.append(nn.ReLU())
        self.dec = nn.Sequential(nn.Conv2d(latent, 4 * w, 3, 1, 1), nn.ReLU(), *up)
        self.hidden_dim = 8 * w


def make_tokenizer(arch: str, width: int, latent: int) -> Tokenizer:
    """The slice tokenizer of ``ModelConfig.arch`` (``conv`` or ``resnet``)."""
    if arch == "conv":
        return Tokenizer(width, latent)
    if arch == "resnet":
        return ResNetTokenizer(width, latent)
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
