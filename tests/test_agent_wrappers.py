"""The agents' observation as Gymnasium wrappers on gym.make / make_vec, a saved agent with its env
(agents.load_run), and vector envs that render (SB3's VecVideoRecorder)."""

import json
from dataclasses import asdict, replace

import gymnasium as gym
import numpy as np
import pytest

import agents
from agents.benchmark import QUICK
from agents.envs import NavVecEnv, make_nav_vec_env, task_controls
from agents.train import AgentConfig, build_agent
from navgym.wrappers import FrameActionStack

SMALL = dict(size=40, subjects="template")


def test_wrapper_on_gym_make_sees_what_the_training_env_sees():
    """FrameActionStack over gym.make gives the observations of agents' NavVecEnv (same seed, same actions)."""
    controls = task_controls("mid_sagittal-near", "task")
    vec = make_nav_vec_env("mid_sagittal-near", 1, frames=3, actions=2, seed=5, controls="task", **SMALL)
    env = FrameActionStack(gym.make("MRINav-mid_sagittal-near-v0", **SMALL), frames=3, actions=2, controls=controls)
    assert env.observation_space == vec.observation_space and env.action_space == vec.action_space
    a, _ = env.reset(seed=5)
    b = vec.reset()
    rng = np.random.default_rng(0)
    for step in range(6):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k][0]) for k in a), step
        act = rng.uniform(-1.5, 1.5, len(controls)).astype(np.float32)  # out of range: clipped alike
        a = env.step(act)[0]
        vec.step_async(act[None])
        b = vec.step_wait()[0]
    assert a["actions"][-7:].tolist() == np.insert(np.clip(act, -1, 1), 5, 0).tolist() + [0.0]  # n-rotation, zoom: 0
    vec.close()


def test_wrapper_in_a_vector_env_and_with_features():
    venv = gym.make_vec("MRINav-AC-near-v0", 2, vectorization_mode="sync", **SMALL,
                        wrappers=[lambda e: FrameActionStack(e, frames=2, actions=0)])
    obs, _ = venv.reset(seed=0)
    assert obs["image"].shape == (2, 2, 40, 40) and obs["actions"].shape == (2, 7) and not obs["actions"].any()
    obs = venv.step(venv.action_space.sample())[0]
    assert obs["image"].dtype == np.uint8 and not np.array_equal(obs["image"][:, 0], obs["image"][:, 1])
    venv.close()
    env = FrameActionStack(gym.make("MRINav-AC-near-v0", **SMALL), frames=2, actions=1,
                           encode=lambda f: f.reshape(len(f), -1)[:, :5].astype(np.float32), feature_dim=5)
    obs, _ = env.reset(seed=0)
    assert obs["features"].shape == (10,) and env.observation_space.contains(obs)
    with pytest.raises(ValueError, match="image env"):
        FrameActionStack(gym.make("MRINav-v0", observation="dict", size=32))


def test_saved_agent_acts_through_gym_make(tmp_path):
    """PPO.load + predict on the registered env wrapped as in training; agents.load_run does both."""
    cfg = replace(AgentConfig(**QUICK), out=str(tmp_path))
    train_env = make_nav_vec_env(cfg.preset, 2, size=cfg.size, subjects="template")
    build_agent(cfg, train_env, None).save(tmp_path / "model.zip")
    (tmp_path / "config.json").write_text(json.dumps(asdict(cfg)))
    from stable_baselines3 import PPO

    model = PPO.load(tmp_path / "model.zip", device="cpu")
    env = FrameActionStack(gym.make("MRINav-AC-near-v0", size=cfg.size, subjects="template"), cfg.frames, cfg.actions)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (7,) and env.step(action)[0]["actions"][-7:].tolist() == np.clip(action, -1, 1).tolist()
    loaded, env2 = agents.load_run(tmp_path, device="cpu")
    obs2, _ = env2.reset(seed=0)
    assert np.array_equal(obs2["image"], obs["image"])  # the run's held-out subjects (template here), its size
    assert np.array_equal(loaded.predict(obs2, deterministic=True)[0], action)
    vec = make_nav_vec_env(cfg.preset, 1, size=cfg.size, subjects="template", seed=0)
    assert np.array_equal(model.predict(vec.reset(), deterministic=True)[0][0], action)  # as the training env
    train_env.close()


def test_vector_envs_render_rgb_array(tmp_path):
    venv = gym.make_vec("MRINav-v0", 2, vectorization_mode="vector_entry_point", size=32, render_mode="rgb_array")
    venv.reset(seed=0)
    frames = venv.render()
    single = gym.make("MRINav-v0", size=32, render_mode="rgb_array")
    single.reset(seed=1)  # sub-env 1 of reset(seed=0)
    assert len(frames) == 2 and frames[0].dtype == np.uint8 and np.array_equal(frames[1], single.render())
    nav = make_nav_vec_env("AC-near", 2, size=32, subjects="template", render_mode="rgb_array")
    nav.reset()
    images, tiled = nav.get_images(), nav.render()  # SB3 tiles one frame per env
    assert nav.render_mode == "rgb_array" and [i.shape for i in images] == [frames[0].shape] * 2
    assert tiled.shape[2] == 3 and tiled.shape[0] * tiled.shape[1] == 2 * images[0].shape[0] * images[0].shape[1]
    from stable_baselines3.common.vec_env import VecVideoRecorder

    try:
        import moviepy  # noqa: F401  (SB3's recorder writes with it)
    except ImportError:  # the recorder gets past its render_mode check and only lacks its writer
        with pytest.raises(gym.error.DependencyNotInstalled, match="MoviePy"):
            VecVideoRecorder(nav, str(tmp_path), lambda step: step == 0, video_length=3)
        return
    rec = VecVideoRecorder(nav, str(tmp_path), lambda step: step == 0, video_length=3)
    rec.reset()
    for _ in range(4):
        rec.step(np.zeros((2, 7), np.float32))
    rec.close()
    assert list(tmp_path.glob("*.mp4"))


def test_make_vec_env_is_a_deprecated_alias():
    from agents.envs import make_vec_env

    with pytest.warns(DeprecationWarning, match="make_nav_vec_env"):
        env = make_vec_env("AC-near", 1, size=32, subjects="template")
    assert isinstance(env, NavVecEnv)
    env.close()
