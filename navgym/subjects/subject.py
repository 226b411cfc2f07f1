"""Subject: one anatomy with its ground truth (image, labels, landmarks, planes, map to the template)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ..anatomy import TEMPLATE_LANDMARKS, load_template, template_planes
from ..geometry import Plane
from ..volume import Volume

__all__ = ["Subject", "template_subject", "identity_transform"]


def identity_transform(points: np.ndarray) -> np.ndarray:
    """Subject world mm -> template mm for the template itself."""
    return np.asarray(points, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Subject:
    """An anatomy with ground truth.

    Attributes
    ----------
    subject_id : str
    volume : Volume
        Image (and optional tissue labels) with its voxel -> subject world (RAS+ mm) affine.
    landmarks : mapping name -> (3,) subject world mm
    planes : mapping name -> Plane in subject world mm
    to_template : callable or None
        Maps (N, 3) subject world mm to (N, 3) template (MNI) mm; None when unknown
        (e.g. a user's scan without registration).
    meta : mapping
        Provenance (e.g. a synthetic subject's seed, contrast and generator config); written to the sidecar.
    """

    subject_id: str
    volume: Volume
    landmarks: Mapping[str, np.ndarray] = field(default_factory=dict)
    planes: Mapping[str, Plane] = field(default_factory=dict)
    to_template: Callable[[np.ndarray], np.ndarray] | None = None
    meta: Mapping = field(default_factory=dict)

    def __post_init__(self):
        lms = {k: np.asarray(v, dtype=np.float64).reshape(3) for k, v in self.landmarks.items()}
        object.__setattr__(self, "landmarks", lms)
        object.__setattr__(self, "planes", dict(self.planes))
        object.__setattr__(self, "meta", dict(self.meta))

    def poses_to_template(
        self, centers: np.ndarray, rotations: np.ndarray, fovs: np.ndarray, step_mm: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map N slice poses from subject world mm to template mm.

        centre -> ``to_template(centre)``; rotation -> the orthonormal (polar) part of
        ``J @ R``, with J the transform's Jacobian at the centre (central differences of
        ``step_mm``); fov -> fov x |J u|.  Exact for affine transforms, first-order otherwise.

        Returns centers (N, 3), rotations (N, 3, 3), fovs (N,) in template space.
        """
        if self.to_template is None:
            raise ValueError(f"subject {self.subject_id} has no transform to the template")
        centers = np.asarray(centers, float).reshape(-1, 3)
        rotations = np.asarray(rotations, float).reshape(-1, 3, 3)
        offsets = np.concatenate([np.zeros((1, 3)), step_mm * np.eye(3), -step_mm * np.eye(3)])
        pts = self.to_template((centers[:, None, :] + offsets[None]).reshape(-1, 3)).reshape(-1, 7, 3)
        jac = (pts[:, 1:4] - pts[:, 4:7]).transpose(0, 2, 1) / (2 * step_mm)  # (N, 3, 3): d template / d subject
        mapped = jac @ rotations
        u_svd, _, vt = np.linalg.svd(mapped)
        rot = u_svd @ vt
        flip = np.linalg.det(rot) < 0  # a reflecting transform: keep a right-handed frame by flipping n
        rot[flip, :, 2] *= -1
        scale = np.linalg.norm(mapped[:, :, 0], axis=1)
        return pts[:, 0], rot, np.asarray(fovs, float) * scale


def template_subject() -> Subject:
    """The built-in MNI152 2009 template as a Subject (its own template space)."""
    return Subject(
        subject_id="MNI152_2009",
        volume=load_template(),
        landmarks=TEMPLATE_LANDMARKS,
        planes=template_planes(),
        to_template=identity_transform,
    )
