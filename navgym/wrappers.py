"""Gymnasium wrappers for ``MRINav`` envs: the observation the SB3 agents of :mod:`agents` see.

    env = FrameActionStack(gym.make("MRINav-AC-near-v0", size=64), frames=4, actions=4)
    venv = gym.make_vec("MRINav-AC-near-v0", 8, vectorization_mode="sync", size=64,
                        wrappers=[lambda e: FrameActionStack(e, frames=4, actions=4)])

A trained agent's env, wrapped as it was trained: ``agents.load_run(run_folder) -> (model, env)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["FrameActionStack"]


class FrameActionStack(gym.Wrapper):
    """Memory for a partially observed search: the last ``frames`` slices and the last ``actions`` actions.

    Observation ``Dict``:

    * ``image``: (frames, H, W) uint8, oldest first, filled with the first slice at ``reset``; or, with
      ``encode``, ``features``: (frames * D,) float32, each slice encoded once when it is observed;
    * ``actions``: (max(1, actions) * 7,) float32, the previous actions as the env applied them (all 7
      components, clipped to [-1, 1]), oldest first, 0 at ``reset`` (one zero row when ``actions`` is 0).

    controls : indices of the env's 7 action components the agent drives (None: all); the action space has
        one entry per control and the other components are sent as 0 (``agents``' ``--controls``).
    encode : ``(N, H, W) uint8 -> (N, D) float32`` features of slices (a frozen encoder), ``feature_dim`` D.

    Wraps a single env whose observation is ``Box(0, 255, (1, H, W), uint8)`` (``observation="image"``); for a
    vector env, pass it to ``gym.make_vec(..., vectorization_mode="sync" | "async", wrappers=[...])``.
    """

    def __init__(self, env: gym.Env, frames: int = 4, actions: int = 4, controls: Sequence[int] | None = None,
                 encode: Callable[[np.ndarray], np.ndarray] | None = None, feature_dim: int | None = None):
        super().__init__(env)
        space = env.observation_space
        if not (isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
                and space.shape[0] == 1):
            raise ValueError(f"FrameActionStack needs an image env (Box (1, H, W) uint8, observation='image'), "
                             f"got {space}")
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1 \
                or isinstance(actions, bool) or not isinstance(actions, (int, np.integer)) or actions < 0:
            raise ValueError(f"need integers frames >= 1 and actions >= 0, got frames={frames!r}, actions={actions!r}")
        if (encode is None) != (feature_dim is None):
            raise ValueError("give encode and feature_dim together")
        self.frames, self.n_actions, self.encode = int(frames), int(actions), encode
        self.controls = np.arange(7) if controls is None else np.asarray(controls, int)
        if self.controls.ndim != 1 or len(self.controls) == 0 or len(set(self.controls.tolist())) != len(self.controls) \
                or self.controls.min() < 0 or self.controls.max() > 6:
            raise ValueError(f"controls must be distinct action indices in 0..6, got {controls!r}")
        h, w = space.shape[1:]
        if encode is None:
            self._key, frame = "image", np.zeros((h, w), np.uint8)
            view = spaces.Box(0, 255, (self.frames, h, w), np.uint8)
        else:
            self._key, frame = "features", np.zeros(int(feature_dim), np.float32)
            view = spaces.Box(-np.inf, np.inf, (self.frames * int(feature_dim),), np.float32)
        self.observation_space = spaces.Dict(
            {self._key: view, "actions": spaces.Box(-1.0, 1.0, (max(1, self.n_actions) * 7,), np.float32)})
        self.action_space = spaces.Box(-1.0, 1.0, (len(self.controls),), np.float32)
        self._stack = np.zeros((self.frames, *frame.shape), frame.dtype)
        self._acts = np.zeros((max(1, self.n_actions), 7), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._stack[:] = self._frame(obs)
        self._acts[:] = 0
        return self._obs(), info

    def step(self, action):
        act = np.zeros(7, np.float32)
        act[self.controls] = np.clip(np.asarray(action, np.float32).reshape(-1), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self.env.step(act)
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = self._frame(obs)
        if self.n_actions:
            self._acts[:-1] = self._acts[1:]
            self._acts[-1] = act
        return self._obs(), reward, terminated, truncated, info

    def _frame(self, obs: np.ndarray) -> np.ndarray:
        frame = np.asarray(obs)[0]
        return frame if self.encode is None else np.asarray(self.encode(frame[None]), np.float32)[0]

    def _obs(self) -> dict:
        view = self._stack.reshape(-1) if self.encode is not None else self._stack
        return {self._key: view.copy(), "actions": self._acts.reshape(-1).copy()}
