"""Inputs that could give a silently wrong answer or an unclear error."""

import warnings

import gymnasium as gym
import numpy as np
import pytest

import navgym  # noqa: F401  (registers the envs)
from navgym.simulator import NavConfig, Navigator
from navgym.subjects import load_subjects
from navgym.tasks import make_task
from navgym.volume import Volume, VolumeError, load_volume


@pytest.fixture(scope="module")
def env():
    e = gym.make("MRINav-v0", size=16, subjects="synthetic:3")
    yield e
    e.close()


def test_min_fov_above_the_volumes_diagonal_is_refused():
    tiny = load_volume(np.random.default_rng(0).uniform(0, 1, (8, 8, 8)), np.eye(4), name="tiny")
    nav = Navigator(1, load_subjects([tiny]), make_task("explore"), NavConfig(size=16))  # min_fov 10 mm fits the 12.1 mm diagonal
    nav.reset(0, np.random.default_rng(0))
    assert nav.fovs[0] >= nav.config.min_fov
    nav = Navigator(1, load_subjects([tiny]), make_task("explore"), NavConfig(size=16, min_fov=20.0, fov=30.0))
    with pytest.raises(ValueError, match=r"min_fov 20.0 mm exceeds the largest field of view of subject tiny \(12.1 mm"):
        nav.reset(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="min_fov 1000000.0 mm exceeds"):
        gym.make("MRINav-v0", size=16, volumes=[tiny], min_fov=1e6, fov=2e6).reset(seed=0)


def test_extreme_intensities_rescale_without_nan():
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        v = load_volume(rng.uniform(-1, 1, (8, 8, 8)).astype(np.float32) * 3e38, np.eye(4))
        assert np.isfinite(v.data).all() and v.data.min() == 0.0 and v.data.max() == 1.0
        raw = rng.uniform(0, 1, (8, 8, 8))
        ref, big = load_volume(raw, np.eye(4)), load_volume(raw * 1e300, np.eye(4))  # beyond float32: scaled in float64
        np.testing.assert_allclose(big.data, ref.data, atol=1e-6)
    with pytest.raises(VolumeError, match=r"exceed float32's range .* pass normalize=True"):
        load_volume(rng.uniform(0, 1, (8, 8, 8)) * 1e300, np.eye(4), normalize=False)


def test_volumes_built_directly_are_validated():
    data = np.random.default_rng(0).uniform(0, 1, (8, 8, 8)).astype(np.float32)
    bad = data.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(VolumeError, match=r"1 NaN/inf voxels; .*nan='zero'"):
        Volume(bad, np.eye(4))
    for labels, match in ((np.full(data.shape, 300), r"0\.\.255, got values in \[300, 300\]"),
                          (np.full(data.shape, -1), r"0\.\.255"),
                          (np.full(data.shape, 1.5), r"must be integers, got e\.g\. 1\.5"),
                          (np.full(data.shape, 1 + 1j), "complex")):
        with pytest.raises(VolumeError, match=match):
            Volume(data, np.eye(4), labels=labels)
    assert Volume(data, np.eye(4), labels=np.full(data.shape, 3.0)).labels.dtype == np.uint8


def test_actions_must_be_real_numbers(env):
    env.reset(seed=0)
    for action, match in ((np.full(7, 0.5 + 0.5j), "complex"), (["a"] * 7, "<U1"), ([None] * 7, "object")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match=rf"action must be real numbers, got dtype .*{match}"):
                env.step(action)
    vec = gym.make_vec("MRINav-v0", 2, vectorization_mode="vector_entry_point", size=16)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="actions must be real numbers"):
        vec.step(np.full((2, 7), 1j))
    vec.close()


def test_reset_options_are_checked(env):
    assert env.reset(seed=0, options={"subject_index": 2})[1]["subject_id"] == env.unwrapped.nav.subjects.ids[2]
    for options, err, match in (({"subject_idx": 1}, ValueError, r"unknown keys \['subject_idx'\]; known: \['subject_index'\]"),
                                ({"subject_index": -1}, ValueError, r"subject_index must be an int in \[0, 3\).*got -1"),
                                ({"subject_index": 3}, ValueError, "got 3"),
                                ({"subject_index": 0.7}, ValueError, "got 0.7"),
                                ({"subject_index": "1"}, ValueError, "got '1'"),
                                ({"subject_index": True}, ValueError, "got True"),
                                ("subject_index", TypeError, "reset options must be a dict"),
                                ([1], TypeError, "reset options must be a dict")):
        with pytest.raises(err, match=match):
            env.reset(seed=0, options=options)
    vec = gym.make_vec("MRINav-v0", 2, vectorization_mode="vector_entry_point", size=16)
    with pytest.raises(ValueError, match=r"unknown keys \['episode_sed'\]; known: \['subject_index', 'episode_seed'\]"):
        vec.reset(options={"episode_sed": 1})
    vec.close()


def test_unclear_errors_name_the_argument():
    with pytest.raises(ValueError, match="subject_cache"):
        gym.make("MRINav-v0", size=16, subjects="synthetic:3", subject_cache=0)
    with pytest.raises(ValueError, match=r"bare 3D array has no voxel-to-world affine; pass navgym\.load_volume"):
        gym.make("MRINav-v0", size=16, volumes=np.zeros((8, 8, 8)))
