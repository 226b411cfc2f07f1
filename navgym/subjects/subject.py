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
    """

    subject_id: str
    volume: Volume
    landmarks: Mapping[str, np.ndarray] = field(default_factory=dict)
    planes: Mapping[str, Plane] = field(default_factory=dict)
    to_template: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self):
        lms = {k: np.asarray(v, dtype=np.float64).reshape(3) for k, v in self.landmarks.items()}
        object.__setattr__(self, "landmarks", lms)
        object.__setattr__(self, "planes", dict(self.planes))


def template_subject() -> Subject:
    """The built-in MNI152 2009 template as a Subject (its own template space)."""
    return Subject(
        subject_id="MNI152_2009",
        volume=load_template(),
        landmarks=TEMPLATE_LANDMARKS,
        planes=template_planes(),
        to_template=identity_transform,
    )
