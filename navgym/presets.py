"""Benchmark task presets: named search tasks registered as Gymnasium ids ``MRINav-<name>-v0``.

A preset fixes the task (landmark or standard plane), its success criterion, the start
distribution (``near``: centre within +-10 mm of the brain centre per axis, views turned by
<= 15 deg; ``far``: +-30 mm and <= 45 deg), the time limit, and the subjects: agents train on
``train_subjects`` and are evaluated on ``test_subjects`` (held-out split, see
:mod:`navgym.subjects`).  Rewards are the env's potential-based shaping (decrease in error,
+10 on success).  ``gym.make("MRINav-AC-near-v0")`` gives the training env; pass
``subjects=preset.test_subjects`` (or use :func:`make_preset_env` with ``split="test"``) to evaluate.

Preset ids name the landmark or plane as the task does (``fourth_ventricle-near``, ``mid_sagittal-far``);
the older ids in :data:`RENAMED_PRESETS` (``fourthventricle-*``, ``midsag-*``, and their gym ids) still
work and warn (``DeprecationWarning``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import gymnasium as gym
from gymnasium.envs.registration import register

from .subjects import load_subjects
from .subjects.pool import DEFAULT_CACHE_SIZE
from .deprecation import warn_deprecated

__all__ = ["TaskPreset", "PRESETS", "RENAMED_PRESETS", "START", "get_preset", "make_preset_env", "subject_kwargs"]

#: start distributions: NavConfig start_jitter_mm (per axis, mm) and start_angle_deg
START = {
    "near": {"start_jitter_mm": 10.0, "start_angle_deg": 15.0},
    "far": {"start_jitter_mm": 30.0, "start_angle_deg": 45.0},
}


@dataclass(frozen=True)
class TaskPreset:
    """One benchmark task.  Lengths mm, angles degrees.

    name : preset name (gym id ``MRINav-<name>-v0``).
    task, task_kwargs : as for ``MRINavEnv`` (success criterion inside task_kwargs).
    start : key of :data:`START`.
    max_episode_steps : time limit (truncation).
    train_subjects, test_subjects : subject specs (:func:`navgym.subjects.load_subjects`).
    """

    name: str
    task: str
    task_kwargs: dict = field(default_factory=dict)
    start: str = "near"
    max_episode_steps: int = 100
    train_subjects: str = "synthetic:12:train"
    test_subjects: str = "synthetic:40:test"

    def __post_init__(self):
        if self.start not in START:
            raise ValueError(f"start must be one of {sorted(START)}, got {self.start!r}")
        if self.max_episode_steps < 1:
            raise ValueError("max_episode_steps must be >= 1")

    @property
    def env_id(self) -> str:
        return f"MRINav-{self.name}-v0"

    def env_kwargs(self, split: str = "train") -> dict:
        """Keyword arguments for ``MRINavEnv`` / ``MRINavVectorEnv`` (subjects of ``split``: train|test)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        subjects = self.train_subjects if split == "train" else self.test_subjects
        return {"task": self.task, "task_kwargs": dict(self.task_kwargs), **subject_kwargs(subjects), **START[self.start]}

    @property
    def success(self) -> str:
        kw = self.task_kwargs
        mm = kw.get("success_mm", 3.0)
        return f"<= {mm} mm" if self.task == "landmark" else f"<= {mm} mm and <= {kw.get('success_deg', 5.0)} deg"


def subject_kwargs(spec: str) -> dict:
    """``subjects=spec`` with a ``subject_cache`` that holds every one of them: an episode draws a
    subject uniformly, so a cache smaller than the pool would rebuild a subject on most resets."""
    return {"subjects": spec, "subject_cache": max(DEFAULT_CACHE_SIZE, len(load_subjects(spec)))}


def _presets() -> dict[str, TaskPreset]:
    out = {}
    for start, steps in (("near", 100), ("far", 200)):
        for lm in ("AC", "PC", "genu", "fourth_ventricle"):
            name = f"{lm}-{start}"
            out[name] = TaskPreset(name, "landmark", {"landmark": lm, "success_mm": 3.0}, start, steps)
        for plane, short in (("mid_sagittal", "mid_sagittal"), ("acpc_axial", "acpc")):
            name = f"{short}-{start}"
            out[name] = TaskPreset(name, "plane", {"plane": plane, "success_mm": 3.0, "success_deg": 5.0}, start, steps)
    return out


PRESETS: dict[str, TaskPreset] = _presets()

#: deprecated preset id -> its current id (accepted with a DeprecationWarning)
RENAMED_PRESETS = {f"{old}-{start}": f"{new}-{start}" for start in START
                   for old, new in (("fourthventricle", "fourth_ventricle"), ("midsag", "mid_sagittal"))}


def get_preset(name: str) -> TaskPreset:
    """A preset by name (``AC-near``) or gym id (``MRINav-AC-near-v0``); a deprecated id warns."""
    key = name[len("MRINav-"):-len("-v0")] if name.startswith("MRINav-") and name.endswith("-v0") else name
    if key in RENAMED_PRESETS:
        warn_deprecated(f"task preset {key!r}", repr(RENAMED_PRESETS[key]))
        key = RENAMED_PRESETS[key]
    if key not in PRESETS:
        raise ValueError(f"unknown task preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[key]


def make_preset_env(name: str, num_envs: int | None = None, split: str = "train", **kwargs):
    """The preset's env (``num_envs`` None) or vector env, on the ``split`` subjects; kwargs override."""
    p = get_preset(name)
    kw = {**p.env_kwargs(split), **kwargs}
    if num_envs is None:
        return gym.make("MRINav-v0", max_episode_steps=p.max_episode_steps, **kw)
    return gym.make_vec("MRINav-v0", num_envs, vectorization_mode="vector_entry_point",
                        max_episode_steps=p.max_episode_steps, **kw)


for _p in PRESETS.values():
    register(
        id=_p.env_id,
        entry_point="navgym.env:MRINavEnv",
        vector_entry_point="navgym.env:MRINavVectorEnv",
        max_episode_steps=_p.max_episode_steps,
        kwargs=_p.env_kwargs("train"),
    )


def _renamed_env(old: str, new: str, vector: bool, *args, **kwargs):
    """The env of a deprecated gym id (see :data:`RENAMED_PRESETS`), with a DeprecationWarning."""
    from .env import MRINavEnv, MRINavVectorEnv

    warn_deprecated(f"gym id {old!r}", repr(new))
    return (MRINavVectorEnv if vector else MRINavEnv)(*args, **kwargs)


for _old, _new in RENAMED_PRESETS.items():
    _p = PRESETS[_new]
    register(
        id=f"MRINav-{_old}-v0",
        entry_point=partial(_renamed_env, f"MRINav-{_old}-v0", _p.env_id, False),
        vector_entry_point=partial(_renamed_env, f"MRINav-{_old}-v0", _p.env_id, True),
        max_episode_steps=_p.max_episode_steps,
        kwargs=_p.env_kwargs("train"),
    )
