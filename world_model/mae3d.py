"""Static 3D masked autoencoder on whole volumes (baseline), and its slice features.

Volumes are resampled to ``voxel_mm`` isotropic voxels (:func:`resample`), random ``crop``^3
crops are cut, and 75% of the 8^3-voxel patches are zeroed; a 3D conv encoder (strides 2, 4:
hidden map (2*width, D/4, D/4, D/4)) and a transposed-conv decoder reconstruct the crop, with the
MSE taken on the masked voxels (a dense-conv MAE, as in SparK/ConvNeXt-V2 without sparse convs).

Slice features: :meth:`MAE3D.plane_features` runs the encoder over the whole resampled volume and
samples the 3D feature map along the slice plane (trilinear ``grid_sample`` at the pixel centres
given by ``navgym.geometry.pixel_to_world_affines``): this needs the volume and the pose.  :meth:`MAE3D.features` (frames
only, the common encoder protocol) treats the slice as a thin slab (the slice repeated ``4`` times
along the depth axis) and averages the resulting map over depth.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .tokenizer import to_unit

__all__ = ["MAE3D", "resample", "random_crops"]


def resample(volume, voxel_mm: float) -> tuple[torch.Tensor, np.ndarray]:
    """navgym Volume -> (data (I', J', K') float32 at ``voxel_mm`` isotropic, its voxel->world affine)."""
    data = torch.tensor(np.asarray(volume.data), dtype=torch.float32)  # a copy: Volume data are read-only
    spacing = np.asarray(volume.spacing, dtype=float)
    shape = np.maximum(1, np.round(np.asarray(volume.shape) * spacing / voxel_mm).astype(int))
    out = F.interpolate(data[None, None], size=tuple(int(s) for s in shape), mode="trilinear",
                        align_corners=True)[0, 0]
    scale = (np.asarray(volume.shape) - 1) / np.maximum(shape - 1, 1)  # new voxel -> old voxel
    affine = np.asarray(volume.affine, dtype=float) @ np.diag([*scale, 1.0])
    return out.contiguous(), affine


def random_crops(vol: torch.Tensor, crop: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """n random crop^3 crops (zero-padded where the volume is smaller) -> (n, 1, crop, crop, crop)."""
    pad = [max(0, crop - s) for s in vol.shape]
    v = F.pad(vol, (pad[2] // 2, pad[2] - pad[2] // 2, pad[1] // 2, pad[1] - pad[1] // 2, pad[0] // 2,
                    pad[0] - pad[0] // 2))
    out = []
    for _ in range(n):
        o = [int(torch.randint(0, s - crop + 1, (1,), generator=gen)) for s in v.shape]
        out.append(v[o[0]:o[0] + crop, o[1]:o[1] + crop, o[2]:o[2] + crop])
    return torch.stack(out)[:, None]


class MAE3D(nn.Module):
    def __init__(self, width: int = 16, mask_ratio: float = 0.75, patch: int = 8):
        super().__init__()
        w = width
        self.enc = nn.Sequential(
            nn.Conv3d(1, w, 4, 2, 1), nn.GELU(),
            nn.Conv3d(w, 2 * w, 4, 2, 1), nn.GELU(),
            nn.Conv3d(2 * w, 2 * w, 3, 1, 1), nn.GELU(),
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose3d(2 * w, w, 4, 2, 1), nn.GELU(),
            nn.ConvTranspose3d(w, 1, 4, 2, 1),
        )
        self.mask_token = nn.Parameter(torch.zeros(1))
        self.mask_ratio, self.patch, self.hidden_dim = mask_ratio, patch, 2 * w

    def compute_loss(self, crops: torch.Tensor, gen: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """crops (B, 1, D, D, D) in [0, 1] -> masked-voxel MSE."""
        b, _, d = crops.shape[:3]
        g = d // self.patch
        where = gen.device if gen is not None else "cpu"
        keep = torch.rand(b, 1, g, g, g, generator=gen, device=where).to(crops.device) >= self.mask_ratio
        m = (~keep).float().repeat_interleave(self.patch, 2).repeat_interleave(self.patch, 3) \
            .repeat_interleave(self.patch, 4)
        x = crops - 0.5
        x_in = x * (1 - m) + self.mask_token * m
        rec = self.dec(self.enc(x_in))
        mse = ((rec - x) ** 2 * m).sum() / m.sum().clamp_min(1)
        return mse, {"mae_mse": mse.detach()}

    def volume_map(self, vol: torch.Tensor) -> torch.Tensor:
        """(I, J, K) volume in [0, 1] -> hidden map (2*width, I/4, J/4, K/4)."""
        return self.enc(vol[None, None] - 0.5)[0]

    def plane_features(self, fmap: torch.Tensor, affine: np.ndarray, centers, rotations, fovs,
                       size: int = 8) -> torch.Tensor:
        """Sample the feature map ``fmap`` (C, a, b, c) of a volume whose voxel->world affine is
        ``affine`` (of the resampled volume the map was computed from) on a size x size grid of each
        slice plane (centers (N, 3) mm, rotations (N, 3, 3) columns u, v, n, fovs (N,) mm), with
        navgym's image convention (row 0 = +v edge, col 0 = -u edge) -> (N, C, size, size)."""
        from navgym.geometry import pixel_to_world_affines
        from navgym.render import sample_at_indices

        dev = fmap.device
        pix = pixel_to_world_affines(np.asarray(centers, float), np.asarray(rotations, float), np.asarray(fovs, float),
                                     (size, size))
        a = torch.as_tensor(pix, dtype=torch.float32, device=dev)  # (N, 4, 4): (row, col, 0, 1) -> world mm
        idx = torch.arange(size, device=dev, dtype=torch.float32)
        pts = (a[:, None, None, :3, 0] * idx[None, :, None, None] + a[:, None, None, :3, 1] * idx[None, None, :, None]
               + a[:, None, None, :3, 3])  # (N, size, size, 3) world mm of the pixel centres
        inv = torch.as_tensor(np.linalg.inv(affine), dtype=torch.float32, device=dev)
        vox = pts @ inv[:3, :3].T + inv[:3, 3]  # resampled-volume voxel coordinates (i, j, k)
        # two stride-2 convolutions (kernel 4, padding 1): map cell f is centred on voxel 4 f + 1.5
        return sample_at_indices(fmap[None], (vox - 1.5) / 4)

    def spatial_features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, H, W) -> (B, 2*width, H/4, W/4): the slice as a 4-deep slab, map averaged over depth."""
        x = to_unit(frames) - 0.5
        slab = x[:, :, None].expand(-1, -1, 4, -1, -1)
        return self.enc(slab).mean(2)
