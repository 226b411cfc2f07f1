"""Navigation tasks: targets and pure reward/success functions of (pose, target).

Every function is batched over N poses and takes plain arrays, so the single env, the
vector env, oracles and offline evaluation share one definition.

* ``explore``: no target, reward 0, never succeeds (for rollouts).
* ``landmark``: bring the slice centre onto a landmark.  error = distance in mm.
* ``plane``: align the slice with a standard plane.  error = distance of the slice centre
  to the plane (mm) + ``mm_per_degree`` x angle between the planes (degrees, 0..90).

Reward (landmark, plane) is potential-based shaping with the error as potential:
``reward = error_before - error_after`` (+ ``success_bonus`` on the step that succeeds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .deprecation import warn_deprecated
from .geometry import plane_angle_deg, plane_distance
from .subjects import Subject

__all__ = ["Task", "ExploreTask", "LandmarkTask", "PlaneTask", "make_task", "shaped_reward"]


@dataclass(frozen=True)
class Task:
    """Base task: ``target_for`` draws a per-episode target array; ``score`` scores poses."""

    name = "explore"
    target_dim = 0
    success_bonus: float = 10.0

    def __post_init__(self):
        _check_finite(self, "success_bonus", positive=False)

    def target_for(self, subject: Subject, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(self.target_dim)

    def score(self, centers: np.ndarray, rotations: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
        """Figures for N poses: always ``error`` (N,) and ``is_success`` (N,) bool, plus task-specific ones.

        centers (N, 3) world mm; rotations (N, 3, 3) columns u, v, n; targets (N, target_dim).
        """
        n = len(centers)
        return {"error": np.zeros(n), "is_success": np.zeros(n, bool)}

    def evaluate(self, centers: np.ndarray, rotations: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
        """Deprecated name of :meth:`score` (kept one release)."""
        warn_deprecated("Task.evaluate", "Task.score")
        return self.score(centers, rotations, targets)

    def __init_subclass__(cls, **kwargs):
        """A subclass that still overrides ``evaluate`` (not ``score``) is scored by it, with a warning."""
        super().__init_subclass__(**kwargs)
        if "evaluate" in cls.__dict__ and "score" not in cls.__dict__:
            warn_deprecated(f"{cls.__name__}.evaluate", f"{cls.__name__}.score")
            cls.score = cls.__dict__["evaluate"]


@dataclass(frozen=True)
class ExploreTask(Task):
    """No reward; episodes end only by the time limit."""


@dataclass(frozen=True)
class LandmarkTask(Task):
    """Bring the slice centre within ``success_mm`` of a landmark.

    landmark : name in the subject's landmark table, or None to draw one per episode.
    """

    name = "landmark"
    target_dim = 3
    landmark: str | None = "AC"
    success_mm: float = 3.0

    def __post_init__(self):
        super().__post_init__()
        _check_finite(self, "success_mm")

    def target_for(self, subject, rng):
        names = sorted(subject.landmarks)
        if not names:
            raise ValueError(f"subject {subject.subject_id} has no landmarks; the landmark task needs some")
        name = self.landmark if self.landmark is not None else names[rng.integers(len(names))]
        if name not in subject.landmarks:
            raise KeyError(f"subject {subject.subject_id} has no landmark {name!r}; it has {names}")
        return subject.landmarks[name].copy()

    def score(self, centers, rotations, targets):
        dist = landmark_distance(centers, targets)
        return {"error": dist, "is_success": dist <= self.success_mm, "distance_mm": dist}


@dataclass(frozen=True)
class PlaneTask(Task):
    """Bring the slice plane within ``success_mm`` and ``success_deg`` of a standard plane.

    plane : name in the subject's plane table, or None to draw one per episode.
    Target array: (point (3,) mm, unit normal (3,)).
    """

    name = "plane"
    target_dim = 6
    plane: str | None = "mid_sagittal"
    success_mm: float = 3.0
    success_deg: float = 5.0
    mm_per_degree: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _check_finite(self, "success_mm")
        _check_finite(self, "success_deg")
        _check_finite(self, "mm_per_degree", positive=False)
        if self.mm_per_degree < 0:
            raise ValueError(f"PlaneTask: mm_per_degree must be >= 0, got {self.mm_per_degree!r}")

    def target_for(self, subject, rng):
        names = sorted(subject.planes)
        if not names:
            raise ValueError(f"subject {subject.subject_id} has no standard planes; the plane task needs some")
        name = self.plane if self.plane is not None else names[rng.integers(len(names))]
        if name not in subject.planes:
            raise KeyError(f"subject {subject.subject_id} has no plane {name!r}; it has {names}")
        p = subject.planes[name]
        return np.concatenate([p.point, p.normal])

    def score(self, centers, rotations, targets):
        dist = plane_distance(centers, targets[:, :3], targets[:, 3:])
        angle = plane_angle_deg(rotations[:, :, 2], targets[:, 3:])
        ok = (dist <= self.success_mm) & (angle <= self.success_deg)
        return {"error": dist + self.mm_per_degree * angle, "is_success": ok, "distance_mm": dist, "angle_deg": angle}


def _check_finite(task: Task, name: str, positive: bool = True) -> None:
    """Refuse a task option that is not a finite number (> 0 when ``positive``), naming it."""
    v = getattr(task, name)
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
    if not ok or not np.isfinite(v) or (positive and v <= 0):
        need = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{type(task).__name__}: {name} must be {need}, got {v!r}")


def landmark_distance(centers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(N,) mm between slice centres (N, 3) and landmarks (N, 3), both world mm."""
    return np.linalg.norm(np.asarray(centers) - np.asarray(positions), axis=-1)


def shaped_reward(prev_error: np.ndarray, error: np.ndarray, success: np.ndarray, success_bonus: float) -> np.ndarray:
    """Potential-based shaping: decrease in error, plus a bonus where the step succeeds."""
    return (prev_error - error) + success_bonus * success


TASKS = {"explore": ExploreTask, "landmark": LandmarkTask, "plane": PlaneTask}


def make_task(task: str | Task = "explore", **kwargs) -> Task:
    """A task by name (``explore``, ``landmark``, ``plane``) with its options, or a Task instance as is."""
    if isinstance(task, Task):
        if kwargs:
            raise ValueError("task options go with a task name, not a Task instance")
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    return TASKS[task](**kwargs)
