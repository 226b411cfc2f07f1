"""Contact sheet of subjects with their landmarks: mid-sagittal and AC-PC axial slices per subject."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..anatomy import template_planes
from ..files import atomic_path
from ..geometry import Plane
from ..render import render_slice
from .subject import Subject

__all__ = ["subjects_figure"]


def subjects_figure(subjects: Sequence[Subject], path: str | os.PathLike, size: int = 256, fov: float = 200.0) -> None:
    """Write a PNG: one column per subject, rows = mid-sagittal and AC-PC axial slices (in the
    subject's own planes), landmarks within 10 mm of the slice drawn as dots with their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subjects = list(subjects)
    fig, axes = plt.subplots(2, len(subjects), figsize=(3.2 * len(subjects), 6.6), squeeze=False)
    for c, subj in enumerate(subjects):
        planes = subj.planes or template_planes()
        for r, (name, up) in enumerate([("mid_sagittal", None), ("acpc_axial", "coronal_ac")]):
            plane: Plane = planes[name]
            # up = superior for the sagittal view; anterior (the coronal normal) for the axial view
            up_dir = planes[up].normal if up else np.cross(planes["coronal_ac"].normal, plane.normal)
            up_dir = up_dir * np.sign(up_dir[2] if up is None else up_dir[1])
            pose = plane.pose(fov, up=up_dir)
            ax = axes[r, c]
            ax.imshow(render_slice(subj.volume, pose, (size, size)), cmap="gray", vmin=0, vmax=1)
            names = list(subj.landmarks)
            if names:
                pts = np.stack([subj.landmarks[n] for n in names])
                row, col = pose.world_to_pixel(pts, (size, size)).T
                dist = Plane(pose.center, pose.normal).distance(pts)
                for n, y, x, dd in zip(names, row, col, dist):
                    if dd <= 10:
                        ax.plot(x, y, "o", ms=4, mfc="none", mec="orangered", mew=1.2)
                        ax.text(x + 4, y - 4, n, color="yellow", fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                contrast = subj.meta.get("contrast", "")
                sp = "x".join(f"{s:.1f}" for s in subj.volume.spacing)
                ax.set_title(f"{subj.subject_id} {contrast}\n{sp} mm, {_orientation(subj.volume.affine)}", fontsize=8)
            if c == 0:
                ax.set_ylabel({0: "mid-sagittal", 1: "AC-PC axial"}[r])
    fig.tight_layout()
    atomic_path(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def _orientation(affine: np.ndarray) -> str:
    """Voxel axis codes (e.g. 'RAS', 'LPI') of an affine, with '*' when it is oblique."""
    import nibabel as nib

    codes = "".join(nib.orientations.aff2axcodes(affine))
    cols = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    oblique = np.abs(cols).max(axis=0).min() < 0.999
    return codes + (" oblique" if oblique else "")
