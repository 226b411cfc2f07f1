"""MRINav-v0: Gymnasium and SB3 API conformance, determinism, vectorisation, tasks, bad inputs."""

import sys
import warnings

import gymnasium as gym
import nibabel as nib
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import navgym  # noqa: F401  (registers MRINav-v0)
from navgym.anatomy import TEMPLATE_LANDMARKS
from navgym.env import MRINavEnv, MRINavVectorEnv
from navgym.tasks import LandmarkTask

SMALL = dict(size=32)


def test_default_env_offline_real_anatomy():
    env = gym.make("MRINav-v0")
    obs, info = env.reset(seed=0)
    assert obs.shape == (1, 128, 128) and obs.dtype == np.uint8
    assert obs.std() > 10  # real anatomy, not a blank image
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert info["subject_id"] == "MNI152_2009"
    assert info["center_mm"].shape == (3,) and info["rotation"].shape == (3, 3)
    assert env.spec.max_episode_steps == 200


@pytest.mark.parametrize("task", ["explore", "landmark", "plane"])
def test_gymnasium_check_env(task):
    check_env(gym.make("MRINav-v0", task=task, render_mode="rgb_array", **SMALL).unwrapped)


@pytest.mark.parametrize("observation", ["image", "dict"])
def test_sb3_check_env(observation):
    sb3_check_env(gym.make("MRINav-v0", task="landmark", observation=observation, **SMALL))


def test_dict_observation_channels():
    env = gym.make("MRINav-v0", observation="dict", **SMALL)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert set(np.unique(obs["labels"])) <= {0, 1, 2, 3}
    assert np.allclose(obs["pose"][:3], info["center_mm"], atol=1e-4)


def run(env, seed, n=20):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs]
    for _ in range(n):
        obs, r, te, tr, info = env.step(env.action_space.sample())
        out += [obs, np.array([r]), info["center_mm"]]
    return out


def test_seeded_determinism():
    a = run(gym.make("MRINav-v0", task="landmark", **SMALL), 7)
    b = run(gym.make("MRINav-v0", task="landmark", **SMALL), 7)
    c = run(gym.make("MRINav-v0", task="landmark", **SMALL), 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_landmark_reward_is_decrease_in_distance_and_success_terminates():
    env = MRINavEnv(task="landmark", task_kwargs={"landmark": "AC", "success_mm": 3.0}, **SMALL)
    env.reset(seed=1)
    ac = TEMPLATE_LANDMARKS["AC"]
    d0 = np.linalg.norm(env.pose.center - ac)
    # step along u by +1 (5 mm): reward = d0 - d1 exactly
    _, r, term, _, info = env.step(np.array([1, 0, 0, 0, 0, 0, 0], np.float32))
    d1 = np.linalg.norm(info["center_mm"] - ac)
    assert np.isclose(r, d0 - d1) and np.isclose(info["distance_mm"], d1)
    # teleport next to AC and take one tiny step: success, bonus, termination
    env.nav.centers[0] = ac + [0.5, 0, 0]
    env.nav.error[:] = 0.5
    _, r, term, _, info = env.step(np.zeros(7, np.float32))
    assert term and info["is_success"] and np.isclose(r, 10.0)


def test_plane_task_errors():
    env = MRINavEnv(task="plane", task_kwargs={"plane": "mid_sagittal"}, **SMALL)
    env.reset(seed=0)
    env.nav.centers[0] = TEMPLATE_LANDMARKS["AC"]
    env.nav.rotations[0] = navgym.SlicePose.canonical("sagittal").rotation
    _, _, term, _, info = env.step(np.zeros(7, np.float32))
    assert info["angle_deg"] < 1e-6 and info["distance_mm"] < 1e-6 and term


def test_leaving_the_volume_clamps_centre_and_fov():
    env = MRINavEnv(max_translation_mm=50.0, **SMALL)
    env.reset(seed=0)
    vol = env.subject.volume
    for _ in range(40):
        _, _, _, _, info = env.step(np.array([0, 0, 1, 0, 0, 0, -1], np.float32))
    ijk = vol.world_to_voxel(info["center_mm"])
    assert np.all(ijk >= -1e-9) and np.all(ijk <= np.array(vol.shape) - 1 + 1e-9)
    assert np.isclose(info["fov_mm"], vol.extent_mm)
    for _ in range(60):
        _, _, _, _, info = env.step(np.array([0, 0, 0, 0, 0, 0, 1], np.float32))
    assert np.isclose(info["fov_mm"], env.config.min_fov)


@pytest.mark.parametrize(
    "action, err",
    [
        (np.full(7, np.nan, np.float32), "NaN"),
        (np.array([0, 0, 0, 0, 0, 0, np.inf], np.float32), "NaN"),
        (np.zeros(6, np.float32), "shape"),
        (np.zeros((1, 7), np.float32), "shape"),
    ],
)
def test_bad_actions_raise(action, err):
    env = MRINavEnv(**SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=err):
        env.step(action)


def test_out_of_range_actions_are_clipped():
    env = MRINavEnv(**SMALL)
    env.reset(seed=0)
    c0 = env.pose.center
    env.step(np.array([100, 0, 0, 0, 0, 0, 0], np.float32))
    assert np.isclose(np.linalg.norm(env.pose.center - c0), env.config.max_translation_mm)


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(task="nope"), "unknown task"),
        (dict(observation="rgb"), "observation"),
        (dict(size=4), "size"),
        (dict(fov=-1.0), "fov"),
        (dict(max_translation_mm=np.nan), "max_translation_mm"),
        (dict(render_mode="window"), "render_mode"),
        (dict(volumes=[]), "empty"),
        (dict(task="landmark", task_kwargs={"landmark": "nose"}), "nose"),
    ],
)
def test_bad_arguments_raise(kwargs, err):
    with pytest.raises((ValueError, KeyError), match=err):
        env = MRINavEnv(**{**SMALL, **kwargs})
        env.reset(seed=0)


def test_user_volume_non_ras_oblique(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 100, (30, 20, 25)).astype(np.float32)
    aff = np.array([[0, -2.0, 0, 20], [0, 0, 1.5, -10], [1.2, 0, 0.2, 5], [0, 0, 0, 1]])
    path = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), str(path))
    env = gym.make("MRINav-v0", volumes=[str(path)], **SMALL)
    obs, info = env.reset(seed=0)
    assert info["subject_id"] == "sub-01_T1w" and obs.max() > 0
    vol = env.unwrapped.subject.volume
    assert vol.contains(info["center_mm"])
    with pytest.raises(ValueError, match="landmarks"):
        gym.make("MRINav-v0", volumes=[str(path)], task="landmark", **SMALL).reset(seed=0)


def test_rgb_array_render_shows_slice_and_locator():
    env = gym.make("MRINav-v0", render_mode="rgb_array", **SMALL)
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[1] == 4 * frame.shape[0]
    red = (frame[..., 0] == 255) & (frame[..., 1] == 64)
    assert red[:, frame.shape[0]:].sum() > 50  # the plane's cut drawn in the locator views


def test_vector_entry_point_matches_single_env_dynamics():
    venv = gym.make_vec("MRINav-v0", 3, vectorization_mode="vector_entry_point", task="landmark", **SMALL)
    assert isinstance(venv, MRINavVectorEnv)
    obs, info = venv.reset(seed=0)
    assert obs.shape == (3, 1, 32, 32) and info["center_mm"].shape == (3, 3)
    single = MRINavEnv(task="landmark", **SMALL)
    single.reset(seed=0)
    # put the single env in sub-env 1's state and take the same action: identical result
    for name in ("centers", "rotations", "fovs", "targets", "error"):
        getattr(single.nav, name)[0] = getattr(venv.unwrapped.nav, name)[1]
    a = np.random.default_rng(0).uniform(-1, 1, (3, 7)).astype(np.float32)
    vobs, vr, _, _, vinfo = venv.step(a)
    sobs, sr, _, _, sinfo = single.step(a[1])
    assert np.array_equal(vobs[1], sobs) and np.isclose(vr[1], sr)
    assert np.allclose(vinfo["center_mm"][1], sinfo["center_mm"])


def test_dict_spaces_are_bounded_and_checker_is_silent():
    env = gym.make("MRINav-v0", observation="dict", render_mode="rgb_array", **SMALL).unwrapped
    labels, pose = env.observation_space["labels"], env.observation_space["pose"]
    assert labels.high.max() == 3 and np.all(np.isfinite(pose.low)) and np.all(np.isfinite(pose.high))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)
        venv = MRINavVectorEnv(2, observation="dict", **SMALL)
        obs, _ = venv.reset(seed=0)
        assert venv.observation_space.contains(obs)
        for _ in range(3):
            obs, *_ = venv.step(venv.action_space.sample())
            assert venv.observation_space.contains(obs)


def collect(envs, seeds, steps=9):
    """Everything a vector env returns over resets with ``seeds`` (each followed by ``steps`` steps)."""
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, envs.num_envs, 7)).astype(np.float32)
    out = []
    for seed in seeds:
        out.append(envs.reset(seed=seed))
        out += [envs.step(a) for a in actions]
    envs.close()
    return out


PARITY = {
    "explore": dict(task="explore"),
    "landmark": dict(task="landmark", task_kwargs={"landmark": "AC", "success_mm": 20.0}),
}


@pytest.mark.parametrize("autoreset", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("task", sorted(PARITY))
def test_vector_modes_give_identical_results(task, autoreset):
    """vector_entry_point, sync and async: same seeds -> same obs, rewards, flags and infos, over autoresets."""
    kwargs = dict(PARITY[task], max_episode_steps=4, observation="dict", **SMALL)
    seeds = [5, None, [3, None, 8]]
    results = {
        "vector_entry_point": collect(
            gym.make_vec("MRINav-v0", 3, vectorization_mode="vector_entry_point", autoreset_mode=autoreset, **kwargs),
            seeds,
        )
    }
    for mode in ("sync", "async"):
        envs = gym.make_vec("MRINav-v0", 3, vectorization_mode=mode, vector_kwargs={"autoreset_mode": autoreset},
                            **kwargs)
        results[mode] = collect(envs, seeds)
    ref = results["vector_entry_point"]
    flags = np.array([r[2] | r[3] for r in ref if len(r) == 5])
    assert flags.sum() >= 3  # autoresets happened
    if task == "landmark":
        assert any(r[2].any() for r in ref if len(r) == 5)  # terminations too, not only truncations
    if autoreset == AutoresetMode.SAME_STEP:
        assert any("final_obs" in r[4] for r in ref if len(r) == 5)
    for mode in ("sync", "async"):
        for t, (a, b) in enumerate(zip(ref, results[mode], strict=True)):
            assert data_equivalence(a, b, exact=True), (mode, t)


def test_vector_env_seeding_continues_and_differs():
    venv = MRINavVectorEnv(2, task="landmark", **SMALL)
    first, _ = venv.reset(seed=0)
    again, _ = venv.reset()  # seed=None: each sub-env's RNG keeps going
    assert not np.array_equal(first, again) and not np.array_equal(first[0], first[1])
    listed, _ = venv.reset(seed=[0, 1])
    assert np.array_equal(listed, first)


def test_episode_seed_fixes_each_sub_envs_starts():
    """Sub-env i's j-th episode starts from default_rng([s, i, j]), whatever the other sub-envs do."""
    def starts(venv, steps):
        venv.reset(seed=123)
        out = [venv.nav.centers.copy()]
        for a in steps:
            _, _, term, trunc, info = venv.step(a)
            out.append((term | trunc, info["center_mm"]))
        return out

    a = MRINavVectorEnv(2, max_episode_steps=2, episode_seed=7, autoreset_mode="SameStep", **SMALL)
    b = MRINavVectorEnv(2, max_episode_steps=2, **SMALL)
    b.reset(options={"episode_seed": 7})
    zero = np.zeros((2, 7), np.float32)
    sa, sb = starts(a, [zero] * 4), starts(b, [zero] * 4)
    assert np.array_equal(sa[0], sb[0])
    single = MRINavEnv(**SMALL)
    for i in range(2):
        for j in range(3):
            single.nav.reset(0, np.random.default_rng([7, i, j]))
            step = 2 * j  # SAME_STEP: episode j starts after step 2j (j >= 1); reset is episode 0
            got = sa[0][i] if j == 0 else sa[step][1][i]
            assert np.allclose(got, single.nav.centers[0])


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(max_episode_steps=0), "max_episode_steps"),
        (dict(max_episode_steps=2.5), "max_episode_steps"),
        (dict(num_envs=0), "num_envs"),
        (dict(autoreset_mode="Disabled"), "autoreset_mode"),
        (dict(episode_seed=-1), "episode_seed"),
    ],
)
def test_bad_vector_arguments_raise(kwargs, err):
    with pytest.raises(ValueError, match=err):
        MRINavVectorEnv(**{**SMALL, **kwargs})


def test_bad_vector_seeds_raise():
    venv = MRINavVectorEnv(2, **SMALL)
    with pytest.raises(ValueError, match="seed"):
        venv.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match=r"seed\[1\]"):
        venv.reset(seed=[1, "x"])


def test_vector_env_autoreset_next_step_and_truncation():
    venv = MRINavVectorEnv(2, task="landmark", max_episode_steps=3, **SMALL)
    venv.reset(seed=0)
    zeros = np.zeros((2, 7), np.float32)
    for t in range(3):
        _, _, term, trunc, _ = venv.step(zeros)
    assert trunc.all() and not term.any()
    _, r, term, trunc, info = venv.step(zeros)  # the autoreset step
    assert np.all(r == 0) and not trunc.any() and np.all(venv.nav.steps == 0)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_sync_and_async_match(mode):
    envs = gym.make_vec("MRINav-v0", 2, vectorization_mode=mode, task="landmark", **SMALL)
    obs, _ = envs.reset(seed=[11, 12])
    single = gym.make("MRINav-v0", task="landmark", **SMALL)
    sobs, _ = single.reset(seed=12)
    assert np.array_equal(obs[1], sobs)
    a = np.random.default_rng(0).uniform(-1, 1, (2, 7)).astype(np.float32)
    obs, r, *_ = envs.step(a)
    sobs, sr, *_ = single.step(a[1])
    assert np.array_equal(obs[1], sobs) and np.isclose(r[1], sr)
    envs.close()


def test_random_landmark_per_episode_is_seeded():
    env = MRINavEnv(task=LandmarkTask(landmark=None), **SMALL)
    targets = set()
    for seed in range(12):
        env.reset(seed=seed)
        targets.add(tuple(env.nav.targets[0]))
    assert len(targets) > 3


def test_human_render_mode_without_pygame_fails_at_make(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame raises ImportError
    with pytest.raises(gym.error.DependencyNotInstalled, match="pygame"):
        gym.make("MRINav-v0", render_mode="human", size=32)


def test_human_render_mode_shows_each_frame(monkeypatch):
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = gym.make("MRINav-v0", render_mode="human", size=32)
    env.reset(seed=0)
    window = env.unwrapped._window
    shown = window.screen.copy()
    env.step(np.full(7, 0.9, np.float32))
    assert env.render() is None
    expected = env.unwrapped._frame()
    assert window.screen.get_size() == expected.shape[1::-1]
    import pygame

    np.testing.assert_array_equal(pygame.surfarray.array3d(window.screen).swapaxes(0, 1), expected)
    assert not np.array_equal(pygame.surfarray.array3d(shown), pygame.surfarray.array3d(window.screen))
    env.close()
    assert window.screen is None
