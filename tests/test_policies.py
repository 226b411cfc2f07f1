"""Policies: protocol, determinism, per-env episode restarts, and the oracle solving landmark/plane tasks."""

import numpy as np
import pytest

from navgym.env import MRINavEnv, MRINavVectorEnv
from navgym.policies import POLICIES, Mixture, Oracle, action_autocorrelation, make_policy
from navgym.subjects import load_subjects

SCRIPTED = [n for n in POLICIES if n != "oracle"]


def _infos(n):
    return {"center_mm": np.zeros((n, 3)), "rotation": np.tile(np.eye(3), (n, 1, 1)), "fov_mm": np.full(n, 180.0)}


def _run(policy, n=5, steps=40):
    return np.stack([policy.act_batch(None, _infos(n)) for _ in range(steps)])


@pytest.mark.parametrize("name", SCRIPTED)
def test_actions_are_bounded_float32_and_seeded(name):
    a = _run(make_policy(name, seed=1))
    assert a.shape == (40, 5, 7) and a.dtype == np.float32
    assert np.all(np.abs(a) <= 1.0) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, _run(make_policy(name, seed=1)))
    assert not np.array_equal(a, _run(make_policy(name, seed=2)))
    p = make_policy(name, seed=1)
    _run(p)
    p.reset(1)  # reset reseeds and forgets state
    np.testing.assert_array_equal(a, _run(p))
    assert a.std(axis=(0, 1)).max() > 0.05  # it moves


@pytest.mark.parametrize("name", SCRIPTED)
def test_single_act_matches_a_batch_of_one(name):
    a, b = make_policy(name, seed=3), make_policy(name, seed=3)
    one = {k: v[0] for k, v in _infos(1).items()}
    for _ in range(10):
        np.testing.assert_array_equal(a.act(None, one), b.act_batch(None, _infos(1))[0])


def test_scripted_behaviours_use_their_axes():
    sweep, orbit, zoom = (np.abs(_run(make_policy(n, seed=0))).mean(axis=(0, 1)) for n in ("sweep", "orbit", "zoom"))
    assert sweep[2] > 5 * max(sweep[[0, 1, 3, 4, 5, 6]])  # along the normal
    assert min(orbit[3], orbit[4]) > 5 * max(orbit[[0, 1, 2, 5, 6]])  # about in-plane axes
    assert zoom[6] > 5 * max(zoom[:6])
    look = np.abs(_run(make_policy("lookaround", seed=0))).mean(axis=(0, 1))
    assert min(look[3:6]) > 5 * max(look[:3])  # turns, stays put
    z = _run(make_policy("zoom", seed=0), n=1, steps=12)[:, 0, 6]
    assert (z > 0).any() and (z < 0).any()  # in and out


def test_smooth_is_temporally_correlated_random_is_not():
    def lag1(a):
        x = a[:-1].reshape(-1)
        y = a[1:].reshape(-1)
        return np.corrcoef(x, y)[0, 1]

    assert lag1(_run(make_policy("smooth", seed=0), n=20, steps=200)) > 0.7
    assert abs(lag1(_run(make_policy("random", seed=0), n=20, steps=200))) < 0.1


def test_episode_start_restarts_only_masked_envs():
    p, q = make_policy("smooth", seed=0), make_policy("smooth", seed=0)
    _run(p, n=4, steps=5), _run(q, n=4, steps=5)
    p.episode_start([True, False, False, False])
    assert not np.allclose(p.x[0], q.x[0]) and np.array_equal(p.x[1:], q.x[1:])


def test_mixture_switches_behaviours_per_segment():
    p = Mixture(seed=0, segment=(4, 8))
    seen = set()
    for _ in range(60):
        p.act_batch(None, _infos(8))
        seen |= set(p.behaviour.tolist())
    assert seen == set(range(len(p.behaviour_names)))
    only = Mixture(seed=0, behaviours=("sweep",))
    a = _run(only)
    assert np.abs(a[..., 2]).mean() > 5 * np.abs(a[..., [0, 1, 3, 4, 5, 6]]).mean()


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("nope")
    with pytest.raises(ValueError, match="behaviours"):
        Mixture(behaviours=("oracle",))
    with pytest.raises(ValueError, match="weights"):
        Mixture(behaviours=("sweep", "zoom"), weights=[1.0])
    with pytest.raises(ValueError, match="segment"):
        make_policy("sweep", segment=(5, 2))
    with pytest.raises(ValueError, match="batch size"):
        make_policy("random").act_batch(None, {})
    with pytest.raises(KeyError, match="target"):
        Oracle().act_batch(None, _infos(2))
    with pytest.raises(ValueError, match="landmark"):
        Oracle().act_batch(None, {**_infos(2), "target": np.zeros((2, 0))})


@pytest.fixture(scope="module")
def held_out():
    """The test split of 40 synthetic subjects (never seen by anything tuned) plus the template."""
    return list(load_subjects("synthetic:40", split="test")) + list(load_subjects("template"))


@pytest.mark.parametrize("task,kwargs", [("landmark", {"landmark": None}), ("plane", {"plane": None})])
def test_oracle_solves_tasks_on_held_out_subjects(held_out, task, kwargs):
    """>= 99% of 150 episodes (random subject, start and landmark/plane) succeed within the 200-step limit."""
    n = 150
    env = MRINavVectorEnv(n, task=task, task_kwargs=kwargs, subjects=held_out, size=8, max_episode_steps=200)
    oracle = make_policy("oracle", seed=0)
    obs, info = env.reset(seed=7)
    assert len(set(info["subject_id"])) == len(held_out)  # every subject drawn
    outcome = np.full(n, -1)
    for _ in range(200):
        obs, _, term, trunc, info = env.step(oracle.act_batch(obs, info))
        first = (term | trunc) & (outcome < 0)
        outcome[first] = term[first]
        if (outcome >= 0).all():
            break
    assert (outcome >= 0).all()
    assert outcome.mean() >= 0.99, f"oracle success {outcome.mean():.3f}"


def test_oracle_single_env_from_info():
    env = MRINavEnv(task="plane", task_kwargs={"plane": "acpc_axial"}, size=8)
    oracle = make_policy("oracle")
    obs, info = env.reset(seed=3)
    start = info["error"]
    for steps in range(1, 201):
        obs, _, terminated, _, info = env.step(oracle.act(obs, info))
        if terminated:
            break
    assert terminated and info["distance_mm"] <= 3.0 and info["angle_deg"] <= 5.0
    assert steps <= start / 2.5 + 5  # near the 5 mm / 5 deg per step bound, not a lucky drift


def test_sync_and_async_vector_envs_give_identical_rollouts():
    import gymnasium as gym

    def run(mode):
        env = gym.make_vec("MRINav-v0", 3, vectorization_mode=mode, size=16, max_episode_steps=10)
        policy = make_policy("mix", seed=0)
        obs, info = env.reset(seed=4)
        frames, actions = [obs], []
        for _ in range(25):  # crosses two auto-resets
            actions.append(policy.act_batch(obs, info))
            obs, _, terminated, truncated, info = env.step(actions[-1])
            policy.episode_start(terminated | truncated)
            frames.append(obs)
        env.close()
        return np.stack(frames), np.stack(actions)

    (fs, as_), (fa, aa) = run("sync"), run("async")
    np.testing.assert_array_equal(fs, fa)
    np.testing.assert_array_equal(as_, aa)
    assert fs.std() > 10


@pytest.mark.parametrize("name", SCRIPTED)
def test_single_then_batched_on_one_policy(name):
    """The docs/rollouts.md snippet: act(obs, info) then act_batch(obs, infos) with another N on one policy."""
    p = make_policy(name, seed=4)
    p.act(None, {k: v[0] for k, v in _infos(1).items()})
    a = p.act_batch(None, _infos(3))
    assert a.shape == (3, 7) and np.all(np.abs(a) <= 1)
    p.episode_start(np.array([True, False, True]))
    assert p.act_batch(None, _infos(3)).shape == (3, 7)
    with pytest.raises(ValueError, match="mask has 2 entries"):
        p.episode_start(np.array([True, False]))


def test_action_autocorrelation_separates_independent_from_smooth_actions():
    rng = np.random.default_rng(0)
    iid = rng.uniform(-1, 1, (64, 16, 7))
    assert abs(action_autocorrelation(iid)) < 0.05
    assert action_autocorrelation(np.cumsum(iid, 1) / 4) > 0.7
    with pytest.raises(ValueError, match="actions must be"):
        action_autocorrelation(iid[:, :1])
