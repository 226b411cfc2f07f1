"""The report's verdict pairs: a navwm variant is compared with its own controls, and the verdict table
counts what the prose says."""

from world_model.evaluation.report import _verdict_table, verdict
from world_model.evaluation.stats import mean_ci_by_method


def _rows(method, base):
    return [dict(method=method, seed=s, task="pose", probe="linear", n_labels=None, metric="center_err_mirror_mm",
                 value=base + 0.1 * s) for s in range(3)]


def test_joint_variant_is_compared_with_its_own_controls():
    rows = _rows("navwm_joint", 10.0) + _rows("shuffled_joint", 20.0) + _rows("noaction_joint", 10.05) \
        + _rows("random_init", 30.0) + _rows("navwm", 15.0)
    comps = verdict(mean_ci_by_method(rows), ["pose"])
    pairs = {(c["method"], c["baseline"]) for c in comps}
    assert {("navwm_joint", "shuffled_joint"), ("navwm_joint", "noaction_joint"), ("navwm_joint", "random_init"),
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
    assert _Parts("/unused", EvalConfig(linear_n_labels=(256,)), data).base == base  # in the frozen units' identity
    assert _Parts("/unused", replace(EvalConfig(), tasks=("pose",)), data).base != base


def test_single_seeds_are_not_judged_and_a_missing_twin_is_not_an_overlap():
    from world_model.evaluation.report import _verdict_text, sanity

    one = lambda m, v: [dict(method=m, seed=0, task="pose", probe="linear", n_labels=None,  # noqa: E731
                             metric="center_err_mirror_mm", value=v)]
    rows = one("navwm", 10.0) + one("tokenizer", 20.0) + _rows("noaction", 12.0)
    rows += [dict(method="mean", seed=None, task="pose", probe="mean", n_labels=None, metric="center_err_mirror_mm",
                  value=33.0)] + [dict(method="supervised", seed=s, task="pose", probe="reference", n_labels=None,
                                       metric="center_err_mirror_mm", value=12.0 + 0.1 * s) for s in range(3)]
    summary = mean_ci_by_method(rows)
    comps = verdict(summary, ["pose"])
    assert comps == []  # navwm has one seed: no interval, so no "better with non-overlapping intervals"
    checks = sanity(summary)
    text = _verdict_text(comps, ["pose"], checks)
    assert "No comparison is judged" in text and "overlap" not in text  # random init absent: not "overlapping"
    rows += _rows("navwm", 10.0)[1:]  # a second and third seed: now judged
    assert {(c["method"], c["baseline"]) for c in verdict(mean_ci_by_method(rows), ["pose"])} == {("navwm", "noaction")}


def test_rewrite_rebuilds_a_report_from_its_results(tmp_path, monkeypatch):
    import json

    import pytest

    from navgym.provenance import versions
    from world_model.evaluation.report import VERSIONS_OF, rewrite_report

    monkeypatch.setenv("GIT_COMMIT", "abc1234")
    assert versions()["git_commit"] == "abc1234"  # set explicitly: wins over the tree's .git
    rows = _rows("navwm", 10.0) + _rows("random_init", 30.0) + _rows("supervised", 8.0) + [
        dict(method="mean", seed=None, task="pose", probe="mean", n_labels=None, metric="center_err_mirror_mm",
             value=33.0)]
    for r in rows[6:9]:
        r["probe"] = "reference"
    doc = {"command": "python -m world_model.evaluation", "created_utc": "now", "versions": versions(VERSIONS_OF),
           "config": {"data": {"size": [64, 64], "clip_frames": 4}, "finetune": {"reference_steps": 1, "batch_size": 1}},
           "rows": rows, "entries": [{"method": m, "seed": s, "clip_features": False} for m in ("navwm", "random_init")
                                     for s in range(3)],
           "subjects": {"train": ["a"], "val": ["b"], "test": ["c"]}, "held_out_subjects": True,
           "sizes": {k: {"slices": 10, "clips": 0} for k in ("train", "val", "test")},
           "timings": {"total_s": 1.0, "features/random_init/0_s": 2.0},
           "control_method": "random_init", "device": "cpu"}
    (tmp_path / "results.json").write_text(json.dumps(doc))
    out = rewrite_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "| navwm | random_init (random init) | 1 | 0 | 0 |" in report
    assert json.loads((tmp_path / "results.json").read_text())["comparisons"] == out["comparisons"]
    # an older results.json says 'random': rewritten with the label now, every figure the same
    old = json.loads(json.dumps(doc).replace('"random_init"', '"random"'))
    old["timings"] = {"total_s": 1.0, "features/random/0_s": 2.0}
    (tmp_path / "results.json").write_text(json.dumps(old))
    with pytest.warns(DeprecationWarning, match="'random'"):
        relabelled = rewrite_report(tmp_path)
    assert (tmp_path / "report.md").read_text() == report
    assert relabelled["control_method"] == "random_init" and "features/random_init/0_s" in relabelled["timings"]
    assert json.dumps(relabelled["summary"]) == json.dumps(out["summary"])  # NaN intervals compare as text
    doc["rows"][0]["task"] = "hemisphere"  # a task of an older report format
    (tmp_path / "results.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="older report format"):
        rewrite_report(tmp_path)
