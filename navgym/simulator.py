"""Batched navigation core shared by the single and the vector env (pure: no gymnasium).

``Navigator`` holds N slice poses, each in its own subject, and advances them all at
once: normalised actions -> physical deltas -> new poses (clamped to the volume) ->
task metrics -> rendered uint8 slices.  :func:`simulate` runs whole episodes of a policy in one
batch (poses and actions, no rendering: rollouts and the evaluation's clips);
:func:`draw_start_poses` draws start poses from the same distribution as a reset.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .geometry import apply_actions, pack_poses, random_view_rotations, random_view_turns, view_rotations
from .render import render_poses
from .subjects import Subject
from .tasks import Task, shaped_reward

__all__ = ["NavConfig", "Navigator", "draw_start_poses", "simulate"]


@dataclass(frozen=True)
class NavConfig:
    """Physical settings of navigation (all lengths mm, angles degrees).

    size : (H, W) observation pixels.
    fov : starting field of view along u (mm); ``min_fov`` .. ``max_fov`` bound zooming
        (``max_fov`` None = the volume's diagonal).
    max_translation_mm, max_rotation_deg, max_zoom_pct : what an action of +-1 does per step.
    start_jitter_mm : starting centre = the subject's brain centre + U(-j, j) per axis.
    start_angle_deg : starting rotation = a random canonical view (axial/coronal/sagittal)
        turned by a uniformly random axis and an angle U(0, start_angle_deg).
    """

    size: tuple[int, int] = (128, 128)
    fov: float = 180.0
    min_fov: float = 10.0
    max_fov: float | None = None
    max_translation_mm: float = 5.0
    max_rotation_deg: float = 5.0
    max_zoom_pct: float = 10.0
    start_jitter_mm: float = 20.0
    start_angle_deg: float = 30.0

    def __post_init__(self):
        object.__setattr__(self, "size", _pixel_size(self.size))
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "size" or (f.name == "max_fov" and v is None):
                continue
            if not _is_number(v) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, got {v!r}")
        for name in ("fov", "min_fov"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_fov is not None and self.max_fov < self.min_fov:
            raise ValueError(f"max_fov ({self.max_fov!r}) must be >= min_fov ({self.min_fov!r})")

    def action_scale(self) -> np.ndarray:
        """(7,) physical units per unit of normalised action: mm x3, degrees x3, ln-zoom."""
        t, r = self.max_translation_mm, self.max_rotation_deg
        return np.array([t, t, t, r, r, r, np.log1p(self.max_zoom_pct / 100.0)])


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _pixel_size(size) -> tuple[int, int]:
    """``size`` (an int, or (height, width) ints, each 8..1024) -> (H, W); refuses anything else."""
    hw = (size, size) if _is_number(size) else tuple(size) if isinstance(size, (tuple, list, np.ndarray)) else ()
    if len(hw) != 2 or not all(_is_number(x) and float(x).is_integer() and 8 <= x <= 1024 for x in hw):
        raise ValueError(f"size must be an int or (height, width) ints, each 8..1024 pixels, got {size!r}")
    return int(hw[0]), int(hw[1])


def as_actions(actions, shape: tuple[int, ...], name: str = "actions") -> np.ndarray:
    """``actions`` as a float64 array of ``shape``; refuses strings, objects and complex numbers by name."""
    a = np.asarray(actions)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be real numbers, got dtype {a.dtype} ({np.ravel(a)[:3].tolist()}...)")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a.astype(np.float64)


def _subject_index(value, num: int) -> int:
    """``options['subject_index']`` checked: an int in [0, num) (no bools, floats, strings or negative indices)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or not 0 <= value < num:
        raise ValueError(f"subject_index must be an int in [0, {num}) (one of the env's {num} subjects), got {value!r}")
    return int(value)


class Navigator:
    """N slice poses navigating subjects under one task.

    Parameters
    ----------
    num : int
    subjects : sequence of Subject, or an object with ``__len__`` and ``__getitem__`` returning Subjects
    task : Task
    config : NavConfig
    """

    def __init__(self, num: int, subjects, task: Task, config: NavConfig):
        if num < 1:
            raise ValueError("need at least one pose")
        if len(subjects) == 0:
            raise ValueError("need at least one subject")
        self.num, self.subjects, self.task, self.config = num, subjects, task, config
        self.scale = config.action_scale()
        self.centers = np.zeros((num, 3))
        self.rotations = np.tile(np.eye(3), (num, 1, 1))
        self.fovs = np.full(num, config.fov)
        self.subject_index = np.zeros(num, np.int64)
        self.episode_subjects: list[Subject] = [subjects[0]] * num  # the subject each pose navigates
        self.targets = np.zeros((num, task.target_dim))
        self.error = np.zeros(num)
        self.steps = np.zeros(num, np.int64)
        self._inv = np.zeros((num, 4, 4))
        self._aff = np.zeros((num, 4, 4))
        self._upper = np.zeros((num, 3))
        self._max_fov = np.zeros(num)

    # --- episode start -----------------------------------------------------------------
    def reset(self, index: int, rng: np.random.Generator, subject_index: int | None = None) -> None:
        """Start pose ``index`` on a random (or given) subject; see :class:`NavConfig` for the distribution."""
        self.reset_many(np.array([index]), rng, None if subject_index is None else [subject_index])

    def reset_many(self, indices, rng: np.random.Generator, subject_index=None) -> None:
        """Start poses ``indices`` (distinct), each on a random subject or on ``subject_index[j]``.

        Draws from ``rng`` exactly as that many :meth:`reset` calls would (so the poses are
        bit-identical to resetting them one by one), then composes the start rotations, clamps and
        scores all of them at once."""
        c = self.config
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(idx)
        if subject_index is not None and len(subject_index) != n:
            raise ValueError(f"subject_index has {len(subject_index)} entries for {n} indices")
        if len(np.unique(idx)) != n or (n and not 0 <= idx.min() <= idx.max() < self.num):
            raise ValueError(f"indices must be distinct poses in [0, {self.num}), got {idx.tolist()}")
        chosen, view = np.empty(n, np.int64), np.empty(n, np.int64)
        axis, angle, jitter = np.empty((n, 3)), np.empty(n), np.empty((n, 3))
        for j, i in enumerate(idx):  # one episode's draws after the other (reset's order)
            s = (int(rng.integers(len(self.subjects))) if subject_index is None
                 else _subject_index(subject_index[j], len(self.subjects)))
            subject = self.subjects[s]
            chosen[j], self.episode_subjects[i] = s, subject
            (view[j],), axis[j:j + 1], (angle[j],) = random_view_turns(1, c.start_angle_deg, rng)
            jitter[j] = rng.uniform(-c.start_jitter_mm, c.start_jitter_mm, 3)
            self.targets[i] = self.task.target_for(subject, rng)
        self.subject_index[idx] = chosen
        centers = np.empty((n, 3))
        for s in np.unique(chosen):  # each subject's constants once
            at, vol = chosen == s, self.episode_subjects[idx[np.argmax(chosen == s)]].volume
            self._inv[idx[at]], self._aff[idx[at]] = vol.inverse_affine, vol.affine
            self._upper[idx[at]] = np.array(vol.shape) - 1
            self._max_fov[idx[at]] = c.max_fov if c.max_fov is not None else vol.extent_mm
            if c.min_fov > self._max_fov[idx[at]][0]:
                raise ValueError(f"min_fov {c.min_fov} mm exceeds the largest field of view of subject "
                                 f"{self.subjects[s].subject_id} ({self._max_fov[idx[at]][0]:.1f} mm, its volume's "
                                 "diagonal); lower min_fov")
            centers[at] = vol.brain_center + jitter[at]
        self.rotations[idx] = view_rotations(view, axis, angle)
        self.centers[idx] = centers
        self.fovs[idx] = np.clip(c.fov, c.min_fov, self._max_fov[idx])
        self._clamp(idx)
        self.error[idx] = self.task_metrics(idx)["error"]
        self.steps[idx] = 0

    # --- dynamics ----------------------------------------------------------------------
    def physical(self, actions: np.ndarray) -> np.ndarray:
        """(N, 7) normalised actions in [-1, 1] -> physical deltas (mm, degrees, ln-zoom)."""
        a = as_actions(actions, (self.num, 7))
        if not np.all(np.isfinite(a)):
            raise ValueError("actions contain NaN or inf")
        return np.clip(a, -1.0, 1.0) * self.scale

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Advance every pose by its normalised action; returns (reward (N,), task metrics)."""
        delta = self.physical(actions)
        self.centers, self.rotations, self.fovs = apply_actions(self.centers, self.rotations, self.fovs, delta)
        everyone = np.arange(self.num)
        self._clamp(everyone)
        self.steps += 1
        metrics = self.task_metrics(everyone)
        reward = shaped_reward(self.error, metrics["error"], metrics["is_success"], self.task.success_bonus)
        self.error = metrics["error"]
        return reward, metrics

    def _clamp(self, idx: np.ndarray) -> None:
        """Keep centres inside their voxel grid (clamped in voxel space) and fov within bounds."""
        inv, aff = self._inv[idx], self._aff[idx]
        vox = np.einsum("nij,nj->ni", inv[:, :3, :3], self.centers[idx]) + inv[:, :3, 3]
        vox = np.clip(vox, 0.0, self._upper[idx])
        self.centers[idx] = np.einsum("nij,nj->ni", aff[:, :3, :3], vox) + aff[:, :3, 3]
        self.fovs[idx] = np.clip(self.fovs[idx], self.config.min_fov, self._max_fov[idx])

    def task_metrics(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The task's ``score`` of poses ``idx``: ``error``, ``is_success`` and task-specific arrays."""
        return self.task.score(self.centers[idx], self.rotations[idx], self.targets[idx])

    # --- observation -------------------------------------------------------------------
    def render(self, labels: bool = False) -> np.ndarray:
        """(N, H, W) uint8 slices: images quantised to 0..255 (or nearest-neighbour labels)."""
        # the subjects held by the episodes (a pool's LRU may have dropped them since)
        held = dict(zip(self.subject_index.tolist(), self.episode_subjects))
        return render_poses(held, self.subject_index, self.centers, self.rotations, self.fovs, self.config.size, labels=labels)

    def pose_array(self) -> np.ndarray:
        """(N, 13) float32: centre (3, mm), rotation row-major (9), fov (1, mm)."""
        return pack_poses(self.centers, self.rotations, self.fovs).astype(np.float32)


def draw_start_poses(n: int, brain_center, jitter_mm: float, max_angle_deg: float, rng: np.random.Generator):
    """``n`` start poses from the navigation start distribution (:class:`NavConfig`'s ``start_jitter_mm``,
    ``start_angle_deg``): centre = ``brain_center`` ((3,) or (n, 3) world mm) + U(-jitter_mm, jitter_mm)
    per axis, rotation = :func:`navgym.geometry.random_view_rotations` -> centers (n, 3), rotations (n, 3, 3).

    Draws all n jitters, then the rotations.  A :class:`Navigator` reset draws one pose at a time
    between its subject and target draws: the rotation (:func:`navgym.geometry.random_view_turns`)
    before the jitter.
    """
    centers = np.asarray(brain_center, float) + rng.uniform(-jitter_mm, jitter_mm, (int(n), 3))
    return centers, random_view_rotations(n, max_angle_deg, rng)


def simulate(subjects, policy, task, config: NavConfig, episodes: int, steps: int, seed, subject_index=None) -> dict:
    """Run ``episodes`` episodes of ``steps`` steps in one batch; no rendering.

    subject_index : (E,) subject of each episode, or None to draw them at random.

    Returns ``subject_index`` (E,), ``actions`` and ``actions_physical`` float32 (E, T, 7), and
    float64 ``centers`` (E, T, 3), ``rotations`` (E, T, 3, 3), ``fovs`` (E, T) with pose t
    the pose *before* action t.  ``seed``: int or SeedSequence; it seeds starts and policy.
    """
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    nav_seed, policy_seed = seq.spawn(2)
    rng = np.random.default_rng(nav_seed)
    nav = Navigator(episodes, subjects, task, config)
    nav.reset_many(np.arange(episodes), rng, subject_index)
    policy.reset(policy_seed)
    centers = np.empty((steps, episodes, 3))
    rotations = np.empty((steps, episodes, 3, 3))
    fovs = np.empty((steps, episodes))
    actions = np.empty((steps, episodes, 7), np.float32)
    for t in range(steps):
        centers[t], rotations[t], fovs[t] = nav.centers, nav.rotations, nav.fovs
        infos = {"center_mm": nav.centers, "rotation": nav.rotations, "fov_mm": nav.fovs, "target": nav.targets}
        actions[t] = policy.act_batch(None, infos)  # no policy here looks at the image
        nav.step(actions[t].astype(np.float64))
    swap = lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1))  # noqa: E731  (T, E, ...) -> (E, T, ...)
    return {
        "subject_index": nav.subject_index.copy(),
        "actions": swap(actions),
        "actions_physical": swap((actions.astype(np.float64) * nav.scale).astype(np.float32)),
        "centers": swap(centers),
        "rotations": swap(rotations),
        "fovs": swap(fovs),
    }
