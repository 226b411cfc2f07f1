"""The report's verdict pairs: a navwm variant is compared with its own controls, and the verdict table
counts what the prose says."""

from world_model.evaluation.report import _verdict_table, verdict
from world_model.evaluation.stats import summarize


def _rows(method, base):
    return [dict(method=method, seed=s, task="pose", probe="linear", n_labels=None, metric="center_err_mirror_mm",
                 value=base + 0.1 * s) for s in range(3)]


def test_joint_variant_is_compared_with_its_own_controls():
    rows = _rows("navwm_joint", 10.0) + _rows("shuffled_joint", 20.0) + _rows("noaction_joint", 10.05) \
        + _rows("random", 30.0) + _rows("navwm", 15.0)
    comps = verdict(summarize(rows), ["pose"])
    pairs = {(c["method"], c["baseline"]) for c in comps}
    assert {("navwm_joint", "shuffled_joint"), ("navwm_joint", "noaction_joint"), ("navwm_joint", "random"),
            ("navwm", "navwm_joint")} <= pairs
    assert ("shuffled_joint", "navwm_joint") not in pairs
    table = "\n".join(_verdict_table(comps))
    assert "| navwm_joint | shuffled_joint | 1 | 0 | 0 |" in table  # 10 mm vs 20 mm: better, intervals apart
    assert "| navwm_joint | noaction_joint | 0 | 0 | 1 |" in table  # 10.0 vs 10.05 with seed spread: within


def test_reference_choice_keeps_the_other_units_cache_keys():
    from dataclasses import replace
    from types import SimpleNamespace

    import numpy as np

    from world_model.evaluation.pipeline import EvalConfig, _Parts

    class Slices(np.ndarray):  # len() and .frames, all the fingerprint reads
        pass

    def split(ids):
        slices = np.zeros(3).view(Slices)
        slices.frames = np.zeros((3, 4, 4), np.uint8)
        return SimpleNamespace(subject_ids=ids, slices=slices)

    data = {"train": split(["a"]), "val": split(["b"]), "test": split(["c"])}
    base = _Parts("/unused", EvalConfig(), data).base
    assert _Parts("/unused", EvalConfig(reference_arch="capable", reference_seeds=(0,)), data).base == base
    assert _Parts("/unused", replace(EvalConfig(), tasks=("pose",)), data).base != base
