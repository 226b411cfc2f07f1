"""Statistics over pretraining seeds: per-method summaries and pairwise verdicts (intervals from
:func:`navgym.stats.mean_ci`).

A row is a dict with ``method, seed, task, probe, n_labels, metric, value``; a summary groups rows by everything
but ``seed`` and ``value``.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from navgym.stats import mean_ci
from navgym.deprecation import warn_deprecated

__all__ = ["mean_ci", "mean_ci_by_method", "intervals_overlap", "compare_methods", "HIGHER_IS_BETTER", "summarize"]

HIGHER_IS_BETTER = {
    "center_err_mm": False, "normal_err_deg": False, "center_err_mirror_mm": False, "normal_err_mirror_deg": False,
    "mae_mm": False, "mae_mirror_mm": False, "auroc": True, "accuracy": True, "action_r2": True,
    "trans_err_mm": False, "rot_err_deg": False, "success_rate": True, "final_dist_mm": False,
    "final_angle_deg": False,
}


GROUP_KEYS = ("task", "probe", "n_labels", "metric", "method")


def mean_ci_by_method(rows: Iterable[dict]) -> list[dict]:
    """Mean +- 95% interval over seeds for every (task, probe, n_labels, metric, method): one summary dict each
    (``mean``, ``ci95`` half-width, ``n``, ``seeds``, ``values``, ``higher_is_better``)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in GROUP_KEYS), []).append(r)
    out = []
    for key, rs in groups.items():
        vals = [r["value"] for r in rs]
        mean, half, n = mean_ci(vals)
        out.append({**dict(zip(GROUP_KEYS, key)), "mean": mean, "ci95": half, "n": n,
                    "seeds": [r.get("seed") for r in rs], "values": [float(v) for v in vals],
                    "higher_is_better": HIGHER_IS_BETTER.get(key[3], True)})
    return out


def summarize(rows: Iterable[dict]) -> list[dict]:
    """Deprecated name of :func:`mean_ci_by_method`."""
    warn_deprecated("world_model.evaluation.stats.summarize", "mean_ci_by_method")
    return mean_ci_by_method(rows)


def _bounds(s: dict) -> tuple[float, float]:
    half = s["ci95"] if np.isfinite(s["ci95"]) else 0.0  # a single run counts as exact
    return s["mean"] - half, s["mean"] + half


def intervals_overlap(a: dict, b: dict) -> bool:
    """Whether two summaries' intervals overlap (a single run is a point)."""
    (lo1, hi1), (lo2, hi2) = _bounds(a), _bounds(b)
    return bool(lo1 <= hi2 and lo2 <= hi1)


def advantage(a: dict, b: dict) -> float:
    """How much better ``a`` is than ``b`` in the metric's units (positive = better)."""
    d = a["mean"] - b["mean"]
    return float(d if a["higher_is_better"] else -d)


def compare_methods(summary: list[dict], method: str, baseline: str) -> list[dict]:
    """``method`` vs ``baseline`` on every (task, probe, n_labels, metric) both have:
    advantage, overlap and a verdict (better/worse/tied, intervals (do not) overlap)."""
    index = {tuple(s[k] for k in GROUP_KEYS[:4]): s for s in summary if s["method"] == baseline}
    out = []
    for s in summary:
        key = tuple(s[k] for k in GROUP_KEYS[:4])
        if s["method"] != method or key not in index:
            continue
        b = index[key]
        adv, overlap = advantage(s, b), intervals_overlap(s, b)
        word = "better" if adv > 0 else "worse" if adv < 0 else "tied"
        out.append({**dict(zip(GROUP_KEYS[:4], key)), "method": method, "baseline": baseline, "advantage": adv,
                    "overlap": overlap,
                    "verdict": f"{word} (intervals {'overlap' if overlap else 'do not overlap'})"})
    return out
