"""Held-out episodes shared by learned agents and the oracle/random bounds (same envs, same starts, same
metrics).

Every policy is run on a :class:`agents.envs.NavVecEnv` built on the preset's held-out ``test``
subjects with ``start_seed`` fixed, so env i's j-th episode starts identically for every policy.
Each env runs the same number of episodes (no bias towards short episodes).
"""

from __future__ import annotations

import numpy as np

from navgym.policies import make_policy
from navgym.stats import bootstrap_median, wilson

__all__ = ["run_episodes", "episode_metrics", "steps_to",
           "model_act_fn", "policy_act_fn"]


def model_act_fn(model, deterministic: bool = True):
    """An ``act(obs, infos, starts)`` for an SB3 model (deterministic actions by default)."""
    def act(obs, infos, starts):
        return model.predict(obs, deterministic=deterministic)[0]
    return act


def policy_act_fn(name: str, seed: int = 0, **kwargs):
    """An ``act(obs, infos, starts)`` for a :mod:`navgym.policies` policy (``oracle``, ``random``...)."""
    policy = make_policy(name, seed=seed, **kwargs)

    def act(obs, infos, starts):
        if starts is not None and starts.any():
            policy.episode_start(starts)
        batch = {k: np.stack([d[k] for d in infos]) for k in ("center_mm", "rotation", "fov_mm", "target")}
        return policy.act_batch(None, batch)
    return act


def run_episodes(act, venv, episodes_per_env: int) -> list[dict]:
    """Run ``act(obs, infos, starts) -> (N, 7)`` until every env finished ``episodes_per_env`` episodes.

    Returns one dict per episode (env order, then episode order): ``r`` (return), ``l`` (steps),
    ``error``, ``is_success``, ``distance_mm`` / ``angle_deg`` (final pose), ``subject_id``, ``env``.
    """
    if episodes_per_env < 1:
        raise ValueError("episodes_per_env must be >= 1")
    n = venv.num_envs
    obs = venv.reset()
    infos = venv.current_infos()
    starts = np.ones(n, bool)
    done_count = np.zeros(n, np.int64)
    out: list[list[dict]] = [[] for _ in range(n)]
    while (done_count < episodes_per_env).any():
        actions = act(obs, infos, starts)
        obs, _, dones, infos = venv.step(actions)
        starts = dones.copy()
        for i in np.flatnonzero(dones):
            if done_count[i] < episodes_per_env:
                out[i].append({**infos[i]["episode"], "env": int(i)})
            done_count[i] += 1
    return [e for per_env in out for e in per_env]


def episode_metrics(episodes: list[dict]) -> dict:
    """Success rate (Wilson 95%), median final error / distance mm / angle deg (bootstrap 95%), mean length."""
    n = len(episodes)
    if n == 0:
        raise ValueError("no episodes to score")
    k = int(sum(e["is_success"] for e in episodes))
    out = {"episodes": n, "success_rate": k / n, "success_ci": wilson(k, n),
           "mean_length": float(np.mean([e["l"] for e in episodes])),
           "mean_return": float(np.mean([e["r"] for e in episodes]))}
    for key in ("error", "distance_mm", "angle_deg"):
        if key in episodes[0]:
            med, lo, hi = bootstrap_median([e[key] for e in episodes])
            out[f"median_{key}"], out[f"median_{key}_ci"] = med, (lo, hi)
    return out


def steps_to(steps, success, threshold: float) -> float | None:
    """First training step at which the evaluated success rate reached ``threshold`` (None: never)."""
    for s, v in zip(steps, success):
        if v >= threshold:
            return float(s)
    return None
