"""Gymnasium wrappers over :class:`navgym.simulator.Navigator`: ``MRINavEnv`` and ``MRINavVectorEnv``."""

from __future__ import annotations

import os
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from .anatomy import TISSUE_LABELS
from .simulator import NavConfig, Navigator, as_actions
from .subjects import Subject, load_subjects
from .tasks import make_task
from .volume import WORLD_LIMIT_MM

__all__ = ["MRINavEnv", "MRINavVectorEnv"]


class _NavigatorEnvBase:
    """What the single and the vector env share: builds the task and the Navigator, the spaces,
    observation and info formatting."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def _check_render_mode(self, render_mode: str | None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode

    def _setup(self, num, subjects, volumes, subject_cache, task, task_kwargs, observation, config_kwargs):
        self.config = NavConfig(**config_kwargs)
        self.task = make_task(task, **(task_kwargs or {}))
        if observation not in ("image", "dict"):
            raise ValueError(f"observation must be 'image' or 'dict', got {observation!r}")
        self.observation = observation
        if subjects is not None and volumes is not None:
            raise ValueError("give subjects= or volumes=, not both")
        pool = load_subjects(volumes if volumes is not None else subjects, cache_size=subject_cache)
        self.nav = Navigator(num, pool, self.task, self.config)
        h, w = self.config.size
        image = spaces.Box(0, 255, (1, h, w), np.uint8)
        if observation == "dict":
            # pose bounds: centres lie in a volume (every Volume lies within +-WORLD_LIMIT_MM), rotation
            # entries in [-1, 1], fov at most the volume's diagonal (or max_fov).
            fov_high = max(4 * WORLD_LIMIT_MM, self.config.max_fov or 0.0)
            low = np.r_[np.full(3, -WORLD_LIMIT_MM), np.full(9, -1.0), 0.0].astype(np.float32)
            high = np.r_[np.full(3, WORLD_LIMIT_MM), np.full(9, 1.0), fov_high].astype(np.float32)
            self._single_obs_space = spaces.Dict(
                {
                    "image": image,
                    "labels": spaces.Box(0, max(TISSUE_LABELS), (1, h, w), np.uint8),
                    "pose": spaces.Box(low, high, (13,), np.float32),
                }
            )
        else:
            self._single_obs_space = image
        self._single_action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)

    def _observe(self) -> Any:
        image = self.nav.render()[:, None]
        if self.observation == "image":
            return image
        labels = self.nav.render(labels=True)[:, None]
        if labels.max() > max(TISSUE_LABELS):
            i = int(np.argmax(labels.reshape(len(labels), -1).max(1)))
            raise ValueError(
                f"subject {self.nav.episode_subjects[i].subject_id}: label value {labels[i].max()} is not a tissue label "
                f"{TISSUE_LABELS}; observation='dict' needs a tissue segmentation (dseg) or none"
            )
        return {"image": image, "labels": labels, "pose": self.nav.pose_array()}

    def _infos(self, figures: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        nav = self.nav
        return {
            "center_mm": nav.centers.copy(),
            "rotation": nav.rotations.copy(),
            "fov_mm": nav.fovs.copy(),
            "subject_id": np.array([s.subject_id for s in nav.episode_subjects], dtype=object),
            "target": nav.targets.copy(),  # task target (landmark mm | plane point + normal), for oracles
            **{k: v.copy() for k, v in figures.items()},  # copies: the Navigator keeps updating its arrays
        }


class MRINavEnv(_NavigatorEnvBase, gym.Env):
    """Navigate a slice plane through a 3D MRI volume.

    ## Description
    The agent holds a square-pixel slice plane in an MRI volume (world space RAS+ mm, from
    the NIfTI affine) and sees the slice rendered by oblique trilinear reslicing.  It moves
    the plane (3 translations), turns it (3 rotations) and zooms (field of view).  With no
    arguments the volume is the MNI ICBM152 2009 template shipped inside nilearn.

    ## Action Space
    ``Box(-1, 1, (7,), float32)``, in the plane's own frame (u right, v up, n normal):

    | index | meaning                 | physical unit at +1             |
    |-------|-------------------------|---------------------------------|
    | 0-2   | translate along u, v, n | ``max_translation_mm`` (5 mm)   |
    | 3-5   | rotate about u, v, n    | ``max_rotation_deg`` (5 deg)    |
    | 6     | zoom (+ = in)           | fov / (1 + ``max_zoom_pct``/100) |

    Values are clipped to [-1, 1]; NaN/inf raise ``ValueError``.

    ## Observation Space
    ``Box(0, 255, (1, H, W), uint8)`` (default 128 x 128): the slice, channel-first, intensities
    normalised per volume to [0, 1] then x 255.  Row 0 is the plane's +v edge, column 0 its -u edge;
    pixel spacing is ``fov / W`` mm.  ``observation="dict"`` gives ``{"image", "labels" (tissue label
    slice, nearest-neighbour), "pose" (13 float32: centre mm, rotation row-major, fov mm)}``.

    ## Rewards
    Pure functions of (pose, target) in :mod:`navgym.tasks`:
    * ``explore``: 0.
    * ``landmark``: decrease in distance (mm) from the slice centre to the landmark, + 10 on success.
    * ``plane``: decrease in (distance mm + angle deg) to the standard plane, + 10 on success.

    ## Starting State
    The subject is drawn uniformly (``self.np_random``).  Centre: the subject's brain centroid
    + U(-20, 20) mm per axis; orientation: a random canonical view (axial, coronal or sagittal)
    turned by U(0, 30) degrees about a random axis; fov: 180 mm (see :class:`NavConfig`).

    ## Episode End
    * Termination: the task succeeds (landmark within ``success_mm``; plane within ``success_mm``
      and ``success_deg``).  ``explore`` never terminates.
    * Truncation: ``max_episode_steps`` (200 as registered).
    * Leaving the volume does not end the episode: the centre is clamped to the voxel grid
      (in voxel space, so oblique grids are respected) and the fov to [``min_fov``, volume diagonal].

    ## Arguments
    * ``task``: ``"explore"`` (default), ``"landmark"``, ``"plane"`` or a :class:`navgym.tasks.Task`;
      ``task_kwargs`` e.g. ``{"landmark": "PC", "success_mm": 2.0}``.
    * ``subjects``: a spec (:func:`navgym.subjects.load_subjects`: ``"template"``, ``"synthetic:N[:split]"``,
      a folder, NIfTI paths / images, Subjects); ``volumes``: the same (give one of the two).
      ``subject_cache``: how many subjects a spec's pool keeps loaded (LRU, default 8, ~30 MB
      each); hold all of them when episodes cycle through a few (a miss rebuilds a subject).
    * ``observation``: ``"image"`` or ``"dict"``; ``render_mode``: ``"rgb_array"`` (slice + 3-view locator)
      or ``"human"`` (the same frame in a pygame window at every reset and step; needs ``navgym[human]``).
    * any :class:`NavConfig` field: ``size``, ``fov``, ``min_fov``, ``max_fov``, ``max_translation_mm``,
      ``max_rotation_deg``, ``max_zoom_pct``, ``start_jitter_mm``, ``start_angle_deg``.

    ``info`` holds ``center_mm`` (3,), ``rotation`` (3, 3) (columns u, v, n), ``fov_mm``,
    ``subject_id`` and the task metrics (``error``, ``is_success``, ``distance_mm``, ``angle_deg``).

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task="explore",
        task_kwargs: dict | None = None,
        subjects=None,
        volumes=None,
        subject_cache: int | None = None,
        observation: str = "image",
        render_mode: str | None = None,
        **config_kwargs,
    ):
        self._check_render_mode(render_mode)
        self._window = _Window(self.metadata["render_fps"]) if render_mode == "human" else None
        self._setup(1, subjects, volumes, subject_cache, task, task_kwargs, observation, config_kwargs)
        self.observation_space = self._single_obs_space
        self.action_space = self._single_action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        subject_index = _reset_options(options, ("subject_index",)).get("subject_index")
        self.nav.reset(0, self.np_random, subject_index)
        self._show()
        return self._obs(), self._info(self.nav.task_metrics(np.array([0])))

    def step(self, action):
        action = as_actions(action, (7,), "action")
        reward, figures = self.nav.step(action[None])
        self._show()
        return self._obs(), float(reward[0]), bool(figures["is_success"][0]), False, self._info(figures)

    def render(self):
        """``rgb_array``: the slice beside the 3-view locator, (H, W, 3) uint8; ``human``: None (the window
        is updated at every reset and step)."""
        return self._frame() if self.render_mode == "rgb_array" else None

    def close(self):
        if self._window is not None:
            self._window.close()
        super().close()

    def _frame(self) -> np.ndarray:
        from .viz import locator_frame

        return locator_frame(self.subject.volume, self.pose, self.nav.render()[0])

    def _show(self) -> None:
        if self._window is not None:
            self._window.show(self._frame())

    @property
    def pose(self):
        """The current :class:`SlicePose` (world mm)."""
        from .geometry import SlicePose

        return SlicePose(self.nav.centers[0], self.nav.rotations[0], self.nav.fovs[0])

    @property
    def subject(self) -> Subject:
        return self.nav.episode_subjects[0]

    def _obs(self):
        obs = self._observe()
        return obs[0] if self.observation == "image" else {k: v[0] for k, v in obs.items()}

    def _info(self, figures):
        info = self._infos(figures)
        info = {k: v[0] for k, v in info.items()}
        info["is_success"] = bool(info["is_success"])
        return info


class MRINavVectorEnv(_NavigatorEnvBase, gym.vector.VectorEnv):
    """``num_envs`` MRINav environments stepped together in one process (batched rendering).

    Same arguments and semantics as :class:`MRINavEnv`, plus:

    * ``max_episode_steps``: truncation after this many steps (default 200, as registered); an
      episode that succeeds on its last step is both terminated and truncated, as with ``TimeLimit``.
    * ``autoreset_mode``: ``AutoresetMode.NEXT_STEP`` (default): a finished sub-env resets on the next
      ``step``, which returns the new episode's first observation with reward 0 and
      terminated = truncated = False.  ``AutoresetMode.SAME_STEP``: a finished sub-env resets within
      the step; the returned observation and info are the new episode's first, and
      ``infos["final_obs"]`` (object array, None where not finished) / ``infos["final_info"]`` (a
      dict of arrays) with masks ``infos["_final_obs"]`` / ``infos["_final_info"]`` hold the last
      transition, exactly as Gymnasium's ``SyncVectorEnv``.
    * ``episode_seed``: None (default) draws every episode start from sub-env i's own RNG.  An int
      ``s`` makes sub-env i's j-th episode since the last ``reset()`` (the reset's episode is j = 0)
      start from ``np.random.default_rng([s, i, j])``: fixed evaluation starts that do not depend on
      how many steps other sub-envs took.  ``reset(options={"episode_seed": s})`` sets it too.

    Seeding matches Gymnasium's ``SyncVectorEnv``/``AsyncVectorEnv`` over :class:`MRINavEnv`: each
    sub-env has its own RNG; ``reset(seed=s)`` seeds sub-env i with ``s + i``, ``reset(seed=[s0, s1,
    ...])`` with one seed (or None) each, and ``seed=None`` keeps each RNG going.  The same seeds give
    the same observations, rewards, terminations and infos in all three vectorisation modes.
    ``reset(options={"subject_index": k})`` starts every sub-env on subject k.  Infos carry
    Gymnasium's ``_key`` masks.  ``render_mode="rgb_array"``: ``render()`` gives one frame per sub-env.
    Used by ``gym.make_vec("MRINav-v0", n, vectorization_mode="vector_entry_point")``.
    """

    def __init__(
        self,
        num_envs: int = 1,
        task="explore",
        task_kwargs: dict | None = None,
        subjects=None,
        volumes=None,
        subject_cache: int | None = None,
        observation: str = "image",
        max_episode_steps: int = 200,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        episode_seed: int | None = None,
        render_mode: str | None = None,
        **config_kwargs,
    ):
        self._check_render_mode(render_mode)
        self.num_envs = _positive_int(num_envs, "num_envs")
        self.max_episode_steps = _positive_int(max_episode_steps, "max_episode_steps")
        modes = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            self.autoreset_mode = None
        if self.autoreset_mode not in modes:
            raise ValueError(f"autoreset_mode must be one of {[m.value for m in modes]}, got {autoreset_mode!r}")
        self.episode_seed = _seed_value(episode_seed, "episode_seed")
        self._setup(self.num_envs, subjects, volumes, subject_cache, task, task_kwargs, observation, config_kwargs)
        self.single_observation_space = self._single_obs_space
        self.single_action_space = self._single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._episodes = np.zeros(self.num_envs, np.int64)  # episodes started since the last reset()
        self._needs_reset = np.zeros(self.num_envs, bool)

    @property
    def episode_subjects(self) -> tuple[Subject, ...]:
        """The subject each sub-env navigates in its current episode."""
        return tuple(self.nav.episode_subjects)

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        seeds = _sub_env_seeds(seed, self.num_envs)
        options = _reset_options(options, ("subject_index", "episode_seed"))
        if "episode_seed" in options:
            self.episode_seed = _seed_value(options.pop("episode_seed"), "options['episode_seed']")
        subject_index = options.get("subject_index")
        for i, s in enumerate(seeds):
            if s is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(s)[0]
        self._episodes[:] = 0
        for i in range(self.num_envs):
            self._start(i, subject_index)
        self._needs_reset[:] = False
        return self._observe(), _with_masks(self._infos(self.nav.task_metrics(np.arange(self.num_envs))))

    def step(self, actions):
        actions = as_actions(actions, (self.num_envs, 7))
        everyone = np.arange(self.num_envs)
        restart = np.flatnonzero(self._needs_reset)  # NEXT_STEP only: finished on the previous step
        if len(restart):
            actions = actions.copy()
            actions[restart] = 0.0  # ignored: these sub-envs restart instead
        reward, figures = self.nav.step(actions)
        terminated = figures["is_success"].copy()
        truncated = self.nav.steps >= self.max_episode_steps
        final = {}
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            done = terminated | truncated
            if done.any():
                last = self._observe()
                final_obs = np.full(self.num_envs, None, object)
                for i in np.flatnonzero(done):
                    final_obs[i] = last[i] if self.observation == "image" else {k: v[i] for k, v in last.items()}
                final = {
                    "final_obs": final_obs,
                    "_final_obs": done.copy(),
                    "final_info": _with_masks(self._infos(figures), done),
                    "_final_info": done.copy(),
                }
                restart = np.flatnonzero(done)
        for i in restart:
            self._start(i)
        if len(restart):
            figures = self.nav.task_metrics(everyone)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            reward[restart] = 0.0
            terminated[restart] = False
            truncated[restart] = False
            self._needs_reset = terminated | truncated
        return self._observe(), reward, terminated, truncated, {**final, **_with_masks(self._infos(figures))}

    def render(self) -> tuple[np.ndarray, ...] | None:
        """``render_mode="rgb_array"``: one frame per sub-env (its slice beside the 3-view locator, as
        :meth:`MRINavEnv.render`), a tuple as Gymnasium's ``SyncVectorEnv`` returns; otherwise None."""
        if self.render_mode != "rgb_array":
            return None
        from .geometry import SlicePose
        from .viz import locator_frame

        nav, images = self.nav, self.nav.render()
        return tuple(locator_frame(nav.episode_subjects[i].volume, SlicePose(nav.centers[i], nav.rotations[i], nav.fovs[i]),
                                   images[i]) for i in range(self.num_envs))

    def _start(self, i: int, subject_index: int | None = None) -> None:
        """Start sub-env ``i``'s next episode (from its RNG, or from ``episode_seed``)."""
        if self.episode_seed is not None:
            rng = np.random.default_rng([self.episode_seed, i, int(self._episodes[i])])
        else:
            if self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(None)[0]
            rng = self._rngs[i]
        self.nav.reset(i, rng, subject_index)
        self._episodes[i] += 1


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _seed_value(value, name: str) -> int | None:
    if value is not None and (
        isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0
    ):
        raise ValueError(f"{name} must be None or an integer >= 0, got {value!r}")
    return None if value is None else int(value)


def _sub_env_seeds(seed, num_envs: int) -> list[int | None]:
    """Gymnasium's per-sub-env seeds: None -> Nones; int s -> s, s+1, ...; a sequence -> as given."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        return [_seed_value(seed + i, "seed") for i in range(num_envs)]
    if isinstance(seed, (str, bytes)) or not hasattr(seed, "__len__") or len(seed) != num_envs:
        raise ValueError(f"seed must be None, an int or a sequence of {num_envs} ints/None, got {seed!r}")
    return [_seed_value(s, f"seed[{i}]") for i, s in enumerate(seed)]


def _reset_options(options, known: tuple[str, ...]) -> dict:
    """A copy of ``reset(options=...)``, refusing anything but a dict of ``known`` keys (a typo is not ignored)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"reset options must be a dict with keys {list(known)}, got {type(options).__name__} {options!r}")
    unknown = sorted(map(str, options.keys() - set(known)))
    if unknown:
        raise ValueError(f"reset options: unknown keys {unknown}; known: {list(known)}")
    return dict(options)


def _with_masks(info: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Gymnasium's vector info layout: each ``key`` with its ``_key`` bool mask.  With ``mask``, only the
    masked sub-envs keep their values (others zero / None), as ``SyncVectorEnv`` builds ``final_info``."""
    out = {}
    for key, value in info.items():
        if mask is not None:
            kept = np.full(len(value), None, object) if value.dtype == object else np.zeros_like(value)
            kept[mask] = value[mask]
            value = kept
        out[key] = value
        out[f"_{key}"] = np.ones(len(value), bool) if mask is None else mask.copy()
    return out


class _Window:
    """A pygame window showing RGB frames at most ``fps`` times a second (``render_mode="human"``).

    pygame is imported at construction, so ``gym.make`` reports a missing pygame, not the first reset."""

    def __init__(self, fps: int):
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
        except ImportError:
            raise gym.error.DependencyNotInstalled(
                'render_mode="human" needs pygame: pip install "navgym[human]" (or pygame); '
                'render_mode="rgb_array" needs nothing more') from None
        self.pygame, self.fps, self.screen, self.clock = pygame, fps, None, None

    def show(self, frame: np.ndarray) -> None:
        pg = self.pygame
        if self.screen is None:
            pg.init()
            pg.display.set_caption("navgym")
            self.screen, self.clock = pg.display.set_mode(frame.shape[1::-1]), pg.time.Clock()
        self.screen.blit(pg.surfarray.make_surface(frame.swapaxes(0, 1)), (0, 0))
        pg.event.pump()
        self.clock.tick(self.fps)
        pg.display.flip()

    def close(self) -> None:
        if self.screen is not None:
            self.pygame.display.quit()
            self.pygame.quit()
            self.screen = None
