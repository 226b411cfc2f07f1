"""SB3 adapter over :class:`navgym.env.MRINavVectorEnv` with memory (frame stack + action history).

Memory choice: the search is partially observed (one slice of a 3D volume), so the agent sees the
last ``frames`` slices and the last ``actions`` normalised actions.  Frame stacking + action
history works unchanged for both PPO and SAC (a recurrent policy would exclude SAC and, on CPU,
cost a sequential LSTM pass per minibatch); frozen encoders embed each frame independently, so
stacking adds no encoder parameters.

Observation (``spaces.Dict``):
* ``image``: (frames, H, W) uint8, oldest first (row 0 = the plane's +v edge, see the env); or, with a
  frozen ``encoder``, ``features``: (frames * feature_dim,) float32, each frame encoded once when it is
  rendered (so PPO's epochs and SAC's replay never re-run the encoder);
* ``actions``: (actions * 7,) float32, the previous normalised actions, oldest first (0 at start).
"""

from __future__ import annotations

import time

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from navgym.env import MRINavVectorEnv
from navgym.presets import get_preset, subject_kwargs

__all__ = ["NavVecEnv", "make_vec_env", "INFO_KEYS"]

#: per-env info entries passed to SB3 (oracles need center_mm, rotation, target)
INFO_KEYS = ("center_mm", "rotation", "fov_mm", "target", "error", "is_success", "distance_mm", "angle_deg")


class NavVecEnv(VecEnv):
    """SB3 ``VecEnv`` over one batched :class:`MRINavVectorEnv` (one process, batched rendering).

    Finished envs reset at once (SB3 semantics): the step returns the new episode's first
    observation and ``infos[i]["terminal_observation"]``; ``TimeLimit.truncated`` marks truncation.
    ``infos[i]["episode"]`` holds ``r`` (return), ``l`` (length), ``error``, ``is_success`` and
    ``subject_id`` on an episode's last step.

    start_seed : if given, env i's j-th episode starts from ``default_rng([start_seed, i, j])``, so
        every policy evaluated with the same start_seed meets the same subjects and start poses.
    encoder : a frozen encoder (``features((B, H, W) uint8) -> (B, D)``, ``feature_dim``); None: pixels.
    ``time_env`` accumulates the seconds spent in ``reset``/``step_wait`` (stepping, rendering and
    encoding); ``time_encode`` the encoder's share.
    """

    def __init__(self, venv: MRINavVectorEnv, frames: int = 4, actions: int = 4, seed: int | None = None,
                 start_seed: int | None = None, encoder=None):
        if frames < 1 or actions < 0:
            raise ValueError("need frames >= 1 and actions >= 0")
        self.venv, self.nav = venv, venv.nav
        self.frames, self.n_actions = int(frames), int(actions)
        self.max_episode_steps = venv.max_episode_steps
        h, w = venv.config.size
        self.encoder = encoder
        if encoder is None:
            self._key, frame_shape, dtype = "image", (h, w), np.uint8
            view = spaces.Box(0, 255, (self.frames, h, w), np.uint8)
        else:
            self._key, frame_shape, dtype = "features", (int(encoder.feature_dim),), np.float32
            view = spaces.Box(-np.inf, np.inf, (self.frames * frame_shape[0],), np.float32)
        obs_space = spaces.Dict({
            self._key: view,
            "actions": spaces.Box(-1.0, 1.0, (max(1, self.n_actions) * 7,), np.float32),
        })
        super().__init__(venv.num_envs, obs_space, venv.single_action_space)
        n = self.num_envs
        self._image = np.zeros((n, self.frames, *frame_shape), dtype)
        self.time_encode = 0.0
        self._acts = np.zeros((n, max(1, self.n_actions), 7), np.float32)
        self._ret = np.zeros(n)
        self._seed, self.start_seed = seed, start_seed
        self._episode = np.zeros(n, np.int64)
        self._pending = None
        self.time_env = 0.0

    # --- VecEnv API ----------------------------------------------------------------------------
    def reset(self):
        t0 = time.perf_counter()
        if self._seed is not None:
            self.venv.reset(seed=self._seed)
            self._seed = None
        self._episode[:] = 0
        for i in range(self.num_envs):
            self._start(i)
        frame = self._render()
        self._image[:] = frame[:, None]
        self._acts[:] = 0
        self._ret[:] = 0
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self.time_env += time.perf_counter() - t0
        return self._obs()

    def step_async(self, actions):
        self._pending = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, 7)

    def step_wait(self):
        t0 = time.perf_counter()
        act = np.clip(self._pending, -1.0, 1.0)
        nav = self.nav
        reward, fig = nav.step(act)
        frame = self._render()
        self._ret += reward
        terminated = fig["is_success"].copy()
        truncated = (nav.steps >= self.max_episode_steps) & ~terminated
        done = terminated | truncated
        self._image[:, :-1] = self._image[:, 1:]
        self._image[:, -1] = frame
        if self.n_actions:
            self._acts[:, :-1] = self._acts[:, 1:]
            self._acts[:, -1] = act
        infos = self._infos(fig)
        idx = np.flatnonzero(done)
        if len(idx):
            obs = self._obs()
            for i in idx:
                infos[i]["terminal_observation"] = {k: v[i].copy() for k, v in obs.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
                infos[i]["episode"] = {
                    "r": float(self._ret[i]), "l": int(nav.steps[i]), "subject_id": nav.episode_subjects[i].subject_id,
                    **{k: (bool(v[i]) if v.dtype == bool else float(v[i])) for k, v in fig.items()},
                }
                self._start(i)
            self._ret[idx] = 0
            self._acts[idx] = 0
            first = self._render(idx)
            self._image[idx] = first[:, None]
            new = self.current_infos()  # the new episodes' poses, for oracles
            for i in idx:
                infos[i] = {**new[i], **{k: infos[i][k] for k in ("terminal_observation", "TimeLimit.truncated", "episode")}}
        self.time_env += time.perf_counter() - t0
        return self._obs(), reward.astype(np.float32), done, infos

    def close(self):
        self.venv.close()

    def get_attr(self, attr_name, indices=None):
        if attr_name == "render_mode":  # the batched env does not render
            return [None] * len(self._get_indices(indices))
        return [getattr(self.venv, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name, value, indices=None):
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [getattr(self.venv, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._get_indices(indices))

    def seed(self, seed=None):
        self._seed = seed
        return [seed] * self.num_envs

    def current_infos(self) -> list[dict]:
        """Per-env info dicts (pose, target, task figures) of the current poses."""
        return self._infos(self.nav.task_metrics(np.arange(self.num_envs)))

    # --- helpers --------------------------------------------------------------------------------
    def _start(self, i: int) -> None:
        if self.start_seed is None:
            rng = self.venv.np_random
        else:
            rng = np.random.default_rng([self.start_seed, i, int(self._episode[i])])
        self._episode[i] += 1
        self.nav.reset(i, rng)

    def _render(self, idx=None) -> np.ndarray:
        """Frames of all envs (or of ``idx``): (N, H, W) uint8, or (N, feature_dim) with an encoder."""
        frame = self.nav.render()
        if idx is not None:
            frame = frame[idx]
        if self.encoder is None:
            return frame
        import torch

        t = time.perf_counter()
        with torch.no_grad():
            feats = self.encoder.features(torch.from_numpy(frame)).float().numpy()
        self.time_encode += time.perf_counter() - t
        return feats

    def _obs(self):
        img = self._image.reshape(self.num_envs, -1) if self.encoder is not None else self._image
        return {self._key: img.copy(), "actions": self._acts.reshape(self.num_envs, -1).copy()}

    def _infos(self, fig) -> list[dict]:
        nav = self.nav
        arrays = {"center_mm": nav.centers, "rotation": nav.rotations, "fov_mm": nav.fovs, "target": nav.targets, **fig}
        keys = [k for k in INFO_KEYS if k in arrays]
        return [{k: arrays[k][i] for k in keys} for i in range(self.num_envs)]


def make_vec_env(task: str, num_envs: int, split: str = "train", size: int = 64, frames: int = 4,
                 actions: int = 4, seed: int | None = None, subjects: str | None = None,
                 start_seed: int | None = None, encoder=None) -> NavVecEnv:
    """A :class:`NavVecEnv` for a task preset (``AC-near``, see :mod:`navgym.presets`) on ``split`` subjects.

    ``subjects`` overrides the preset's subject spec (e.g. ``"template"`` for quick tests);
    ``encoder``: a frozen encoder module (observations carry its features, see :class:`NavVecEnv`).
    """
    p = get_preset(task)
    kw = p.env_kwargs(split)
    if subjects is not None:
        kw.update(subject_kwargs(subjects))
    venv = MRINavVectorEnv(num_envs, max_episode_steps=p.max_episode_steps, size=size, **kw)
    return NavVecEnv(venv, frames=frames, actions=actions, seed=seed, start_seed=start_seed, encoder=encoder)
