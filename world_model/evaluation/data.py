"""Probe data: held-out subjects, slices and navigation clips with ground truth, cached on disk.

Subjects (:func:`probe_subjects`): pretraining draws only the ``train`` split of a subject spec
(``navgym.subjects.split_of``: a hash of the id), so the ``val`` and ``test`` splits are never seen
in pretraining.  Probe-train and probe-val subjects come from the ``val`` split, probe-test
subjects from the ``test`` split; the three are disjoint.

Slices (:class:`ProbeSet`), per subject: centre = brain centre + U(-jitter, jitter) mm per axis;
rotation = :func:`navgym.geometry.random_view_rotations` (a random canonical view turned by up
to ``max_angle_deg``); rendered like the env (uint8).  Ground truth (frames and units):

* ``center_t`` (N, 3) template (MNI) mm, ``normal_t`` (N, 3) unit normal in template axes
  (:meth:`navgym.Subject.poses_to_template`).
* ``landmark_mm`` (N, L) subject mm from the slice centre to each landmark (:data:`LANDMARK_NAMES`).
* ``landmark_hit`` (N, L) bool: the landmark lies within ``hit_mm`` of the plane, inside the view.
* ``region`` (N,) 0..3 = (anterior, posterior) x (superior, inferior) of the template-space
  centre relative to the template's brain centre.
* ``pair_frames`` (N, H, W): the slice after one random action; ``pair_action`` (N, 7) that
  physical action (du, dv, dn mm; ru, rv, rn degrees; ln-zoom) -- inverse dynamics.
* ``pose``, ``pair_pose`` (N, 13) subject-mm poses (:func:`navgym.geometry.pack_poses`), for
  encoders that read the volume (the 3D MAE samples its feature map along these planes).

Clips (:class:`ClipSet`): ``clip_frames``-frame episodes of the pretraining policy (``mix``) from
the env's start distribution; ``frames`` (N, K, H, W), ``actions`` (N, K, 7) normalised (action t
follows frame t) and the ground truth above (``center_t``, ``normal_t``, ``landmark_mm``) of the
*last* frame.

Mirror symmetry: the MNI 2009 template is left-right symmetric, so a slice and its mirror image
about x = 0 look alike.  :func:`mirror_pose` gives the mirrored pose (centre (-x, y, z); the
right-handed frame (Mu, Mv, -Mn), so the normal becomes (n_x, -n_y, -n_z)); the probes score the
smaller of the errors to a pose and to its mirror.  Hemisphere is not a task for this reason.

Every set is rendered once per (subject ids, config, seed) and cached as ``.npz`` under the cache
folder (:func:`cached_probe_data`); a second run loads it without building a subject.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from navgym.anatomy import TEMPLATE_LANDMARKS
from navgym.files import write_atomic
from navgym.geometry import apply_actions, pack_poses
from navgym.policies import make_policy
from navgym.render import render_slices
from navgym.rollouts.generate import pose_arrays, render_frames
from navgym.simulator import NavConfig, draw_start_poses, simulate
from navgym.subjects import Subject, load_subjects, template_subject
from navgym.tasks import make_task
from navgym.configs import to_dict

__all__ = [
    "ProbeDataConfig", "ProbeSet", "ClipSet", "ProbeData", "make_probe_data", "cached_probe_data", "probe_subjects",
    "mirror_pose", "LANDMARK_NAMES", "MIRRORED_LANDMARKS", "REGION_NAMES", "PROBE_SPLITS",
]

#: probe-train / probe-val / probe-test (not navgym's subject splits: all three are drawn from subjects outside pretraining)
PROBE_SPLITS = ("train", "val", "test")
LANDMARK_NAMES: tuple[str, ...] = tuple(sorted(TEMPLATE_LANDMARKS))
# index of each landmark's left-right counterpart (itself on the midline)
MIRRORED_LANDMARKS = np.array([
    LANDMARK_NAMES.index(n[:-2] + {"_L": "_R", "_R": "_L"}[n[-2:]]) if n[-2:] in ("_L", "_R") else i
    for i, n in enumerate(LANDMARK_NAMES)
])
REGION_NAMES = ("anterior-superior", "anterior-inferior", "posterior-superior", "posterior-inferior")
CACHE_FORMAT = 2  # bump when the arrays or their meaning change


@dataclass(frozen=True)
class ProbeDataConfig:
    """How probe slices and clips are drawn (lengths mm, angles degrees).

    train_per_subject, eval_per_subject : slices per probe-train subject / per probe-val and
        probe-test subject.
    size : (H, W) pixels (use the encoder's training size).
    fov : field of view along u (mm), as the env's default.
    jitter_mm : centre = subject brain centre + U(-jitter, jitter) per axis.
    max_angle_deg : a random canonical view turned by a random axis and U(0, max_angle).
    hit_mm : a landmark counts as "passed through" within this distance of the slice plane.
    clip_frames : frames per navigation clip (K).  train_clips_per_subject,
        eval_clips_per_subject : clips per subject (0: no clips).
    action : NavConfig whose action scale draws the inverse-dynamics pair's action
        (normalised actions U(-1, 1) on every axis) and moves the clips.
    """

    train_per_subject: int = 850
    eval_per_subject: int = 300
    size: tuple[int, int] = (64, 64)
    fov: float = 180.0
    jitter_mm: float = 40.0
    max_angle_deg: float = 45.0
    hit_mm: float = 5.0
    clip_frames: int = 4
    train_clips_per_subject: int = 100
    eval_clips_per_subject: int = 50
    action: NavConfig = field(default_factory=NavConfig)

    def __post_init__(self):
        h, w = (self.size, self.size) if np.isscalar(self.size) else tuple(self.size)
        object.__setattr__(self, "size", (int(h), int(w)))
        if isinstance(self.action, dict):
            object.__setattr__(self, "action", NavConfig(**self.action))
        for name in ("train_per_subject", "eval_per_subject", "clip_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProbeDataConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_clips_per_subject", "eval_clips_per_subject"):
            if getattr(self, name) < 0:
                raise ValueError(f"ProbeDataConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("fov", "hit_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ProbeDataConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.jitter_mm < 0 or not 0 <= self.max_angle_deg <= 180:
            raise ValueError("ProbeDataConfig needs jitter_mm >= 0 and 0 <= max_angle_deg <= 180")

    def per_subject(self, split: str) -> tuple[int, int]:
        """(slices, clips) per subject of ``split``."""
        if split == "train":
            return self.train_per_subject, self.train_clips_per_subject
        return self.eval_per_subject, self.eval_clips_per_subject


@dataclass
class ProbeSet:
    """Slices of some subjects with their ground truth (fields: see the module docstring)."""

    frames: np.ndarray
    pair_frames: np.ndarray
    pair_action: np.ndarray
    subject: np.ndarray
    center_t: np.ndarray
    normal_t: np.ndarray
    landmark_mm: np.ndarray
    landmark_hit: np.ndarray
    region: np.ndarray
    pose: np.ndarray
    pair_pose: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, index) -> "ProbeSet":
        return ProbeSet(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass
class ClipSet:
    """Navigation clips: ``frames`` (N, K, H, W), ``actions`` (N, K, 7) and the last frame's truth."""

    frames: np.ndarray
    actions: np.ndarray
    subject: np.ndarray
    center_t: np.ndarray
    normal_t: np.ndarray
    landmark_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class ProbeData:
    """One split: its subject ids, slices and clips (``clips`` None without clips)."""

    subject_ids: list[str]
    slices: ProbeSet
    clips: ClipSet | None


def mirror_pose(center_t: np.ndarray, normal_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Template-space centres and normals (N, 3) of the left-right mirrored slices (see module docstring)."""
    sign = np.array([-1.0, 1.0, 1.0], dtype=center_t.dtype)
    return center_t * sign, normal_t * -sign


def _landmarks(subject: Subject) -> np.ndarray:
    missing = [k for k in LANDMARK_NAMES if k not in subject.landmarks]
    if missing:
        raise ValueError(f"subject {subject.subject_id} lacks landmarks {missing}; probe sets need all of them")
    return np.stack([subject.landmarks[k] for k in LANDMARK_NAMES])  # (L, 3) subject mm


def _subject_slices(subject: Subject, n: int, cfg: ProbeDataConfig, rng: np.random.Generator) -> dict:
    h, w = cfg.size
    vol = subject.volume
    centers, rotations = draw_start_poses(n, vol.brain_center, cfg.jitter_mm, cfg.max_angle_deg, rng)
    fovs = np.full(n, cfg.fov)
    frames = np.empty((n, h, w), np.uint8)
    render_slices(vol, centers, rotations, fovs, (h, w), out=frames)
    actions = rng.uniform(-1, 1, (n, 7)) * cfg.action.action_scale()
    c2, r2, f2 = apply_actions(centers, rotations, fovs, actions)
    pair = np.empty((n, h, w), np.uint8)
    render_slices(vol, c2, r2, f2, (h, w), out=pair)

    ct, rt, _ = subject.poses_to_template(centers, rotations, fovs)
    rel = _landmarks(subject)[None] - centers[:, None]  # (N, L, 3)
    along = lambda k: np.abs(np.einsum("nlk,nk->nl", rel, rotations[:, :, k]))  # noqa: E731
    hit = (along(2) <= cfg.hit_mm) & (along(0) <= fovs[:, None] / 2) & (along(1) <= fovs[:, None] * h / w / 2)
    mid = template_subject().volume.brain_center
    region = 2 * (ct[:, 1] < mid[1]) + (ct[:, 2] < mid[2])
    return dict(
        frames=frames, pair_frames=pair, pair_action=actions.astype(np.float32),
        center_t=ct.astype(np.float32), normal_t=rt[:, :, 2].astype(np.float32),
        landmark_mm=np.linalg.norm(rel, axis=2).astype(np.float32), landmark_hit=hit,
        region=region.astype(np.int64), pose=pack_poses(centers, rotations, fovs),
        pair_pose=pack_poses(c2, r2, f2),
    )


def _subject_clips(subject: Subject, n: int, cfg: ProbeDataConfig, seed) -> dict:
    k = cfg.clip_frames
    nav = NavConfig(**{**asdict(cfg.action), "size": cfg.size, "fov": cfg.fov})
    sim = simulate([subject], make_policy("mix"), make_task("explore"), nav, n, k, seed, np.zeros(n, int))
    frames = render_frames([subject], sim, cfg.size[0]) if cfg.size[0] == cfg.size[1] else None
    if frames is None:
        raise ValueError(f"clips need square slices, got size {cfg.size}")
    _, template = pose_arrays([subject], sim)
    last = template[:, -1]
    centers = sim["centers"][:, -1]
    return dict(
        frames=frames, actions=sim["actions"].astype(np.float32), center_t=last[:, :3].astype(np.float32),
        normal_t=last[:, 3:12].reshape(-1, 3, 3)[:, :, 2].astype(np.float32),
        landmark_mm=np.linalg.norm(_landmarks(subject)[None] - centers[:, None], axis=2).astype(np.float32),
    )


def make_probe_data(subjects: Sequence[Subject], cfg: ProbeDataConfig, seed: int, split: str = "train") -> ProbeData:
    """Render the slices and clips of ``split``'s sizes for each subject (deterministic in ``seed``)."""
    if len(subjects) == 0:
        raise ValueError("make_probe_data: need at least one subject")
    n_slices, n_clips = cfg.per_subject(split)
    seq = np.random.SeedSequence(seed)
    parts, clip_parts, ids = [], [], []
    for i, (subject, s) in enumerate(zip(subjects, seq.spawn(len(subjects)))):
        slice_seed, clip_seed = s.spawn(2)
        parts.append(_subject_slices(subject, n_slices, cfg, np.random.default_rng(slice_seed)))
        if n_clips:
            clip_parts.append(_subject_clips(subject, n_clips, cfg, clip_seed))
        ids.append(subject.subject_id)
    cat = lambda ps: {k: np.concatenate([p[k] for p in ps]) for k in ps[0]}  # noqa: E731
    slices = ProbeSet(subject=np.repeat(np.arange(len(ids)), n_slices), **cat(parts))
    clips = ClipSet(subject=np.repeat(np.arange(len(ids)), n_clips), **cat(clip_parts)) if n_clips else None
    return ProbeData(ids, slices, clips)


def _save(path: Path, data: ProbeData) -> None:
    arrays = {f"slices/{f.name}": getattr(data.slices, f.name) for f in fields(ProbeSet)}
    if data.clips is not None:
        arrays.update({f"clips/{f.name}": getattr(data.clips, f.name) for f in fields(ClipSet)})
    buf = io.BytesIO()
    np.savez(buf, subject_ids=np.array(data.subject_ids), **arrays)
    write_atomic(path, buf.getvalue())


def _load(path: Path) -> ProbeData:
    with np.load(path) as z:
        slices = ProbeSet(**{f.name: z[f"slices/{f.name}"] for f in fields(ProbeSet)})
        clips = ClipSet(**{f.name: z[f"clips/{f.name}"] for f in fields(ClipSet)}) if "clips/frames" in z else None
        return ProbeData([str(s) for s in z["subject_ids"]], slices, clips)


def cache_key(subject_ids: Sequence[str], cfg: ProbeDataConfig, seed: int, split: str) -> str:
    """Hex digest naming one split's cached data: subject ids, config, seed, split and format."""
    spec = {"ids": list(subject_ids), "config": to_dict(cfg), "seed": seed, "split": split, "format": CACHE_FORMAT}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_probe_data(splits: dict, cfg: ProbeDataConfig, seed: int, cache_dir=None, log=None) -> dict[str, ProbeData]:
    """{split: ProbeData} for ``splits`` ({split: a SubjectPool or list of Subjects}); split i uses
    seed ``seed + i``.  With ``cache_dir`` each split is loaded from / saved to
    ``<cache_dir>/probe_<split>_<key>.npz`` (key: :func:`cache_key`), so subjects are built and
    slices rendered once."""
    out = {}
    for i, split in enumerate(PROBE_SPLITS):
        subjects = splits[split]
        ids = subjects.ids if hasattr(subjects, "ids") else [s.subject_id for s in subjects]
        path = Path(cache_dir) / f"probe_{split}_{cache_key(ids, cfg, seed + i, split)}.npz" if cache_dir else None
        if path is not None and path.exists():
            out[split] = _load(path)
            continue
        if log:
            log(f"rendering probe-{split} data: {len(ids)} subjects")
        out[split] = make_probe_data(subjects, cfg, seed + i, split)
        if path is not None:
            _save(path, out[split])
    return out


def probe_subjects(spec: str = "synthetic:240", n_train: int = 24, n_val: int = 4, n_test: int = 6) -> dict:
    """Disjoint probe subjects held out from pretraining: {"train", "val"} from ``spec``'s ``val``
    split, "test" from its ``test`` split (pools, built lazily).  ``"template"``: the template for
    every split (a smoke test: only the slices differ)."""
    if spec == "template":
        pool = load_subjects("template")
        return {s: pool for s in PROBE_SPLITS}
    held = load_subjects(spec, split="val")
    test = load_subjects(spec, split="test")
    if len(held) < n_train + n_val:
        raise ValueError(f"subjects {spec!r} have {len(held)} 'val'-split subjects; n_train + n_val = "
                         f"{n_train + n_val} needed (the 'val' split is ~15 %: use more subjects, e.g. "
                         f"synthetic:{round((n_train + n_val) / 0.15 * 1.25)})")
    if len(test) < n_test:
        raise ValueError(f"subjects {spec!r} have {len(test)} 'test'-split subjects; n_test = {n_test} needed")
    return {"train": held.subset(range(n_train)), "val": held.subset(range(n_train, n_train + n_val)),
            "test": test.subset(range(n_test))}
