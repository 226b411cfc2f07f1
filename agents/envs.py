"""SB3 ``VecEnv`` adapter over :class:`navgym.env.MRINavVectorEnv` with memory (frame stack + action history).

The vector env does the navigation, autoreset (Gymnasium's ``SAME_STEP`` mode), truncation, seeding
and fixed evaluation starts (``episode_seed``); this adapter only translates its Gymnasium API to
SB3's and adds the agent's memory.  Memory choice: the search is partially observed (one slice of a
3D volume), so the agent sees the last ``frames`` slices and the last ``actions`` normalised actions.
Frame stacking + action history works unchanged for PPO and SAC (a recurrent policy would exclude
SAC and, on CPU, cost a sequential LSTM pass per minibatch); frozen encoders embed each frame
independently, so stacking adds no encoder parameters.

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
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from navgym.deprecation import warn_deprecated
from navgym.env import MRINavVectorEnv
from navgym.presets import get_preset, subject_kwargs

__all__ = ["NavVecEnv", "make_nav_vec_env", "INFO_KEYS", "CONTROLS", "task_controls"]

#: which of the env's 7 action components the agent drives (the others stay 0): ``all``; ``task``:
#: those the task's error depends on (see :func:`task_controls`); ``task+zoom``: those and zoom
CONTROLS = ("all", "task", "task+zoom")

#: per-env info entries passed to SB3 (oracles need center_mm, rotation, fov_mm, target)
INFO_KEYS = ("center_mm", "rotation", "fov_mm", "target", "subject_id", "error", "is_success", "distance_mm",
             "angle_deg")


class NavVecEnv(VecEnv):
    """SB3 ``VecEnv`` over one :class:`MRINavVectorEnv` in ``SAME_STEP`` autoreset mode (one process,
    batched rendering).

    A finished env's step returns the new episode's first observation (its frame stack filled with
    that frame, its action history zeroed) and, in its info, ``terminal_observation`` (the finished
    episode's last stacked observation, built from the env's ``final_obs``), ``TimeLimit.truncated``
    (truncated and not terminated) and ``episode``: ``r`` (return), ``l`` (length) and the env's
    ``final_info`` entries of :data:`INFO_KEYS` (final pose, ``error``, ``is_success``, ``subject_id``, ...), and
    ``is_success`` of the finished episode (where SB3 looks for it: ``rollout/success_rate``).  Other info
    entries (:data:`INFO_KEYS`) describe the current pose, i.e. the new episode's after a reset.

    controls : indices of the env's 7 action components the agent drives (None: all); the SB3 action
        space has one entry per control, the others are sent as 0; the action history holds all 7.
    seed : seeds the vector env's sub-envs at the first ``reset`` (SB3's ``VecEnv.seed`` sets it too).
    encoder : a frozen encoder (``features((B, H, W) uint8) -> (B, D)``, ``feature_dim``); None: pixels.
    ``time_env`` accumulates the seconds spent in ``reset``/``step_wait`` (stepping, rendering and
    encoding); ``time_encode`` the encoder's share.
    """

    def __init__(self, venv: MRINavVectorEnv, frames: int = 4, actions: int = 4, seed: int | None = None,
                 encoder=None, controls=None):
        if frames < 1 or actions < 0:
            raise ValueError(f"need frames >= 1 and actions >= 0, got frames={frames}, actions={actions}")
        if venv.autoreset_mode != AutoresetMode.SAME_STEP or venv.observation != "image":
            raise ValueError("venv must be an MRINavVectorEnv with autoreset_mode=SAME_STEP and observation='image'")
        self.venv = venv
        self.frames, self.n_actions = int(frames), int(actions)
        h, w = venv.single_observation_space.shape[1:]
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
        self.controls = np.arange(7) if controls is None else np.asarray(controls, int)
        if self.controls.ndim != 1 or len(self.controls) == 0 or len(set(self.controls.tolist())) != len(self.controls) \
                or self.controls.min() < 0 or self.controls.max() > 6:
            raise ValueError(f"controls must be distinct action indices in 0..6, got {controls!r}")
        self.metadata = venv.metadata  # render_fps, render_modes (SB3's VecVideoRecorder reads them)
        super().__init__(venv.num_envs, obs_space, spaces.Box(-1.0, 1.0, (len(self.controls),), np.float32))
        n = self.num_envs
        self._stack = np.zeros((n, self.frames, *frame_shape), dtype)
        self._acts = np.zeros((n, max(1, self.n_actions), 7), np.float32)
        self._ret = np.zeros(n)
        self._len = np.zeros(n, np.int64)
        self._seed = seed
        self._pending = None
        self._info: dict = {}
        self.time_env = self.time_encode = 0.0

    # --- VecEnv API ----------------------------------------------------------------------------
    def reset(self):
        t0 = time.perf_counter()
        obs, self._info = self.venv.reset(seed=self._seed)
        self._seed = None
        self._stack[:] = self._frames(obs)[:, None]
        self._acts[:] = 0
        self._ret[:] = 0
        self._len[:] = 0
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self.time_env += time.perf_counter() - t0
        return self._obs()

    def step_async(self, actions):
        act = np.zeros((self.num_envs, 7), np.float32)
        act[:, self.controls] = np.clip(np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1), -1.0, 1.0)
        self._pending = act

    def step_wait(self):
        t0 = time.perf_counter()
        act = self._pending
        obs, reward, terminated, truncated, info = self.venv.step(act)
        self._info = info
        done = terminated | truncated
        self._ret += reward
        self._len += 1
        self._push(self._frames(obs), act)
        infos = self.current_infos()
        idx = np.flatnonzero(done)
        if len(idx):
            last = self._obs()
            last[self._key][idx] = self._flat(self._with_last(idx, np.stack([info["final_obs"][i] for i in idx])))
            final = info["final_info"]
            for i in idx:
                infos[i]["terminal_observation"] = {k: v[i] for k, v in last.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                infos[i]["episode"] = {"r": float(self._ret[i]), "l": int(self._len[i]),
                                       **{k: _scalar(final[k][i]) for k in INFO_KEYS if k in final}}
                infos[i]["is_success"] = bool(final["is_success"][i])  # SB3's rollout/success_rate reads it here
            self._stack[idx] = self._stack[idx, -1:]  # the new episode's first frame, repeated
            self._acts[idx] = 0
            self._ret[idx] = 0
            self._len[idx] = 0
        self.time_env += time.perf_counter() - t0
        return self._obs(), reward.astype(np.float32), done, infos

    def close(self):
        self.venv.close()

    def get_attr(self, attr_name, indices=None):
        return [getattr(self.venv, attr_name)] * len(self._get_indices(indices))

    def get_images(self) -> list[np.ndarray]:
        """One frame per env (``render_mode="rgb_array"``: the slice beside the 3-view locator), as SB3's
        ``render`` and ``VecVideoRecorder`` read them."""
        frames = self.venv.render()
        return [None] * self.num_envs if frames is None else list(frames)

    def set_attr(self, attr_name, value, indices=None):
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [getattr(self.venv, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._get_indices(indices))

    def seed(self, seed=None):
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    @property
    def episode_subjects(self) -> tuple:
        """The :class:`navgym.subjects.Subject` each env navigates in its current episode."""
        return self.venv.episode_subjects

    def current_infos(self) -> list[dict]:
        """Per-env info dicts (:data:`INFO_KEYS`: pose, target, task figures) of the current poses."""
        info = self._info
        keys = [k for k in INFO_KEYS if k in info]
        return [{k: _scalar(info[k][i]) for k in keys} for i in range(self.num_envs)]

    # --- helpers --------------------------------------------------------------------------------
    def _frames(self, image: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) uint8 env observations -> frames (N, H, W), or their features (N, D) with an encoder."""
        frames = np.asarray(image)[:, 0]
        if self.encoder is None:
            return frames
        import torch

        t = time.perf_counter()
        with torch.no_grad():
            feats = self.encoder.features(torch.from_numpy(np.ascontiguousarray(frames))).float().cpu().numpy()
        self.time_encode += time.perf_counter() - t
        return feats

    def _push(self, frame: np.ndarray, act: np.ndarray) -> None:
        self._stack[:, :-1] = self._stack[:, 1:]
        self._stack[:, -1] = frame
        if self.n_actions:
            self._acts[:, :-1] = self._acts[:, 1:]
            self._acts[:, -1] = act

    def _with_last(self, idx: np.ndarray, final_image: np.ndarray) -> np.ndarray:
        """The stacks of envs ``idx`` with their newest frame replaced by the finished episode's last one."""
        stack = self._stack[idx].copy()
        stack[:, -1] = self._frames(final_image)
        return stack

    def _flat(self, stack: np.ndarray) -> np.ndarray:
        return stack.reshape(len(stack), -1) if self.encoder is not None else stack

    def _obs(self):
        return {self._key: self._flat(self._stack).copy(), "actions": self._acts.reshape(self.num_envs, -1).copy()}


def _scalar(x):
    """numpy scalars as Python scalars (JSON-friendly episode records); arrays as they are."""
    return x.item() if isinstance(x, np.generic) else x


def task_controls(task: str, controls: str = "task") -> list[int] | None:
    """The action components of :data:`CONTROLS` ``controls`` for a preset (None: all 7).  ``task``: those
    its error depends on: translations (0-2) for landmarks; for planes translations and the rotations about
    the in-plane axes u, v (3, 4), which turn the normal (a rotation about n, 5, spins the image but leaves
    the plane as it is); never zoom (6), which changes only what the agent sees.  ``task+zoom``: those and zoom."""
    if controls not in CONTROLS:
        raise ValueError(f"controls must be one of {CONTROLS}, got {controls!r}")
    if controls == "all":
        return None
    own = [0, 1, 2] if get_preset(task).task == "landmark" else [0, 1, 2, 3, 4]
    return own + [6] if controls == "task+zoom" else own


def make_nav_vec_env(task: str, num_envs: int, split: str = "train", size: int = 64, frames: int = 4,
                     actions: int = 4, seed: int | None = None, subjects: str | None = None,
                     start_seed: int | None = None, encoder=None, controls: str = "all",
                     render_mode: str | None = None) -> NavVecEnv:
    """A :class:`NavVecEnv` for a task preset (``AC-near``, see :mod:`navgym.presets`) on ``split`` subjects.

    ``subjects`` overrides the preset's subject spec (e.g. ``"template"`` for quick tests);
    ``start_seed``: fixed starts (the env's ``episode_seed``: env i's j-th episode starts from
    ``default_rng([start_seed, i, j])``, so every policy evaluated with it meets the same subjects and
    start poses); ``encoder``: a frozen encoder module (observations carry its features); ``controls``:
    one of :data:`CONTROLS`; ``render_mode="rgb_array"``: ``render()`` tiles one frame per env (SB3's
    ``VecVideoRecorder`` works; it writes with moviepy, in the ``[video]`` extra).
    """
    chosen = task_controls(task, controls)
    p = get_preset(task)
    kw = p.env_kwargs(split)
    if subjects is not None:
        kw.update(subject_kwargs(subjects))
    venv = MRINavVectorEnv(num_envs, max_episode_steps=p.max_episode_steps, size=size,
                           autoreset_mode=AutoresetMode.SAME_STEP, episode_seed=start_seed, render_mode=render_mode, **kw)
    return NavVecEnv(venv, frames=frames, actions=actions, seed=seed, encoder=encoder,
                     controls=chosen)


def make_vec_env(*args, **kwargs) -> NavVecEnv:
    """Deprecated alias of :func:`make_nav_vec_env` (it shadowed SB3's ``make_vec_env``, whose signature differs);
    removed in the next release."""
    warn_deprecated("agents.envs.make_vec_env", "make_nav_vec_env (SB3 has its own make_vec_env)")
    return make_nav_vec_env(*args, **kwargs)
