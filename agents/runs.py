"""A saved agent with its env, rebuilt from the run's config: ``agents.load_run(run_folder) -> (model, env)``.

    model, env = agents.load_run("runs/ac_ppo")
    obs, info = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    obs, reward, terminated, truncated, info = env.step(action)

The env is the registered preset env (``gym.make("MRINav-<task>-v0")``) at the run's slice size, on its
held-out (``test``) or ``train`` subjects, wrapped in :class:`navgym.wrappers.FrameActionStack` with the run's
frames, action history and controls, and its frozen encoder's (standardised) features where it had one.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym

from navgym.presets import get_preset, subject_kwargs
from navgym.wrappers import FrameActionStack

from .envs import task_controls
from .train import AgentConfig, frozen_encoder

__all__ = ["load_run", "make_agent_env"]


def make_agent_env(cfg: AgentConfig, split: str = "test", encoder=None, **env_kwargs) -> gym.Env:
    """The single env an agent of ``cfg`` acts in: ``gym.make`` of its preset on ``split`` subjects (the run's
    ``test_subjects`` / ``train_subjects`` where it overrode them), with its observation wrapper;
    ``encoder``: its frozen encoder (:func:`agents.train.frozen_encoder`); ``env_kwargs`` go to ``gym.make``."""
    preset = get_preset(cfg.preset)
    kw = preset.env_kwargs(split)
    chosen = cfg.test_subjects if split == "test" else cfg.train_subjects
    if chosen is not None:
        kw.update(subject_kwargs(chosen))
    env = gym.make(preset.env_id, size=cfg.size, **{**kw, **env_kwargs})
    encode = None
    if encoder is not None:
        import torch

        def encode(frames):
            with torch.no_grad():
                return encoder.features(torch.from_numpy(frames)).float().cpu().numpy()
    return FrameActionStack(env, cfg.frames, cfg.actions, controls=task_controls(cfg.preset, cfg.controls),
                            encode=encode, feature_dim=None if encoder is None else int(encoder.feature_dim))


def load_run(path: str | Path, split: str = "test", device: str = "auto", **env_kwargs):
    """(SB3 model, its env) of an ``agents.train`` run: ``path`` is the run folder (its ``model.zip``) or a model /
    checkpoint zip inside it; the env as :func:`make_agent_env` (``env_kwargs``, e.g. ``render_mode``, go to
    ``gym.make``)."""
    from .play import agent_config, load_agent, run_folder

    path = Path(path)
    model_path = path / "model.zip" if path.is_dir() else path
    cfg = agent_config(model_path)
    env = make_agent_env(cfg, split, frozen_encoder(cfg, run_folder(model_path)), **env_kwargs)
    from stable_baselines3.common.vec_env import DummyVecEnv

    return load_agent(model_path, cfg, DummyVecEnv([lambda: env]), device), env  # the model is built on a VecEnv
