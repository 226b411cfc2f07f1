"""Held-out probe datasets: slices at random poses with spatial and anatomical ground truth.

Every probe in :mod:`world_model.probes` reads one :class:`ProbeSet` per subject split
(probe-train / probe-val / probe-test subjects are disjoint, and all of them are held out
from pretraining).  Slices are rendered exactly like the env observes them
(:func:`navgym.render_slices` into uint8).

Ground truth per slice (frames and units)
-----------------------------------------
* ``center_t`` (N, 3) template (MNI) mm and ``normal_t`` (N, 3) unit normal in template
  axes: the slice pose mapped by :meth:`navgym.Subject.poses_to_template`.
* ``landmark_mm`` (N, L): distance in subject mm from the slice centre to each landmark.
* ``landmark_hit`` (N, L) bool: the landmark lies within ``hit_mm`` of the slice plane and
  inside the field of view (the slice "passes through" it).
* ``hemisphere`` (N,): 0 left (template x < 0), 1 right, from the template-space centre.
* ``region`` (N,): 0..3 = (anterior, posterior) x (superior, inferior) of the template-space
  centre relative to the template's brain centre (y, z; roughly balanced classes).
* ``tissue`` (N, H, W) uint8: 0 background, 1 CSF, 2 GM, 3 WM (nearest-neighbour labels).
* pairs (inverse dynamics): ``pair_frames`` (N, H, W) is the slice after one random action
  from each pose; ``pair_action`` (N, 7) the physical action (du, dv, dn mm in the first
  slice's frame; ru, rv, rn degrees; ln-zoom) that took it there.
* ``pose``, ``pair_pose`` (N, 13): the two slices' poses in subject world mm
  (:func:`navgym.geometry.pack_poses`: centre, rotation row-major, fov), for encoders that
  read the volume itself (the 3D MAE samples its feature map along these planes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from navgym.anatomy import TEMPLATE_LANDMARKS
from navgym.geometry import CANONICAL_VIEWS, apply_actions, pack_poses
from navgym.render import render_slices
from navgym.simulator import NavConfig
from navgym.subjects import Subject, template_subject

__all__ = ["ProbeDataConfig", "ProbeSet", "make_probe_set", "LANDMARK_NAMES", "REGION_NAMES"]

LANDMARK_NAMES: tuple[str, ...] = tuple(sorted(TEMPLATE_LANDMARKS))
REGION_NAMES = ("anterior-superior", "anterior-inferior", "posterior-superior", "posterior-inferior")


@dataclass(frozen=True)
class ProbeDataConfig:
    """How probe slices are drawn (lengths mm, angles degrees).

    per_subject : slices per subject.
    size : (H, W) pixels (use the encoder's training size).
    fov : field of view along u (mm), as the env's default.
    jitter_mm : centre = subject brain centre + U(-jitter, jitter) per axis.
    max_angle_deg : rotation = a random canonical view turned by a random axis and U(0, max_angle).
    hit_mm : a landmark counts as "passed through" within this distance of the slice plane.
    action : NavConfig whose action scale draws the inverse-dynamics pair's action
        (normalised actions U(-1, 1) on every axis).
    """

    per_subject: int = 200
    size: tuple[int, int] = (64, 64)
    fov: float = 180.0
    jitter_mm: float = 40.0
    max_angle_deg: float = 45.0
    hit_mm: float = 5.0
    action: NavConfig = field(default_factory=NavConfig)

    def __post_init__(self):
        h, w = (self.size, self.size) if np.isscalar(self.size) else tuple(self.size)
        object.__setattr__(self, "size", (int(h), int(w)))
        if self.per_subject < 1:
            raise ValueError(f"per_subject must be >= 1, got {self.per_subject}")
        for name in ("fov", "hit_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.jitter_mm < 0 or not 0 <= self.max_angle_deg <= 180:
            raise ValueError("need jitter_mm >= 0 and 0 <= max_angle_deg <= 180")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["action"] = asdict(self.action)
        return d


@dataclass
class ProbeSet:
    """Slices of some subjects with their ground truth (see the module docstring for fields)."""

    frames: np.ndarray
    pair_frames: np.ndarray
    pair_action: np.ndarray
    tissue: np.ndarray
    subject: np.ndarray
    subject_ids: list[str]
    center_t: np.ndarray
    normal_t: np.ndarray
    landmark_mm: np.ndarray
    landmark_hit: np.ndarray
    hemisphere: np.ndarray
    region: np.ndarray
    pose: np.ndarray
    pair_pose: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


def _random_rotations(n: int, max_angle_deg: float, rng: np.random.Generator) -> np.ndarray:
    views = np.stack([CANONICAL_VIEWS[v] for v in sorted(CANONICAL_VIEWS)])
    base = views[rng.integers(len(views), size=n)]
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = np.deg2rad(rng.uniform(0, max_angle_deg, n))
    turn = Rotation.from_rotvec(axis * angle[:, None])
    return (turn * Rotation.from_matrix(base)).as_matrix()


def _subject_set(subject: Subject, cfg: ProbeDataConfig, rng: np.random.Generator) -> dict:
    n, (h, w) = cfg.per_subject, cfg.size
    vol = subject.volume
    if vol.labels is None:
        raise ValueError(f"subject {subject.subject_id} has no tissue labels; probe sets need them")
    missing = [k for k in LANDMARK_NAMES if k not in subject.landmarks]
    if missing:
        raise ValueError(f"subject {subject.subject_id} lacks landmarks {missing}")
    centers = subject.volume.brain_center + rng.uniform(-cfg.jitter_mm, cfg.jitter_mm, (n, 3))
    rotations = _random_rotations(n, cfg.max_angle_deg, rng)
    fovs = np.full(n, cfg.fov)
    frames = np.empty((n, h, w), np.uint8)
    render_slices(vol, centers, rotations, fovs, (h, w), out=frames)
    tissue = render_slices(vol, centers, rotations, fovs, (h, w), labels=True)

    actions = rng.uniform(-1, 1, (n, 7)) * cfg.action.action_scale()
    c2, r2, f2 = apply_actions(centers, rotations, fovs, actions)
    pair = np.empty((n, h, w), np.uint8)
    render_slices(vol, c2, r2, f2, (h, w), out=pair)

    ct, rt, _ = subject.poses_to_template(centers, rotations, fovs)
    lms = np.stack([subject.landmarks[k] for k in LANDMARK_NAMES])  # (L, 3) subject mm
    rel = lms[None] - centers[:, None]  # (N, L, 3)
    along = lambda k: np.abs(np.einsum("nlk,nk->nl", rel, rotations[:, :, k]))  # noqa: E731
    hit = (along(2) <= cfg.hit_mm) & (along(0) <= fovs[:, None] / 2) & (along(1) <= fovs[:, None] * h / w / 2)
    mid = template_subject().volume.brain_center
    region = 2 * (ct[:, 1] < mid[1]) + (ct[:, 2] < mid[2])
    return dict(
        frames=frames,
        pair_frames=pair,
        pair_action=actions.astype(np.float32),
        tissue=tissue,
        center_t=ct.astype(np.float32),
        normal_t=rt[:, :, 2].astype(np.float32),
        landmark_mm=np.linalg.norm(rel, axis=2).astype(np.float32),
        landmark_hit=hit,
        hemisphere=(ct[:, 0] >= 0).astype(np.int64),
        region=region.astype(np.int64),
        pose=pack_poses(centers, rotations, fovs),
        pair_pose=pack_poses(c2, r2, f2),
    )


def make_probe_set(subjects: Sequence[Subject], cfg: ProbeDataConfig, seed: int) -> ProbeSet:
    """Render ``cfg.per_subject`` random slices of each subject with ground truth (deterministic in ``seed``)."""
    if len(subjects) == 0:
        raise ValueError("need at least one subject")
    rng = np.random.default_rng(seed)
    parts = [_subject_set(s, cfg, rng) for s in subjects]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["subject"] = np.repeat(np.arange(len(subjects)), cfg.per_subject)
    return ProbeSet(subject_ids=[s.subject_id for s in subjects], **out)
