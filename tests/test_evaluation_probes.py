"""Probes and metrics: signal vs noise, mirror-invariant errors, the mean baseline, the shuffled-label
control, Student-t intervals and verdicts."""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from navgym.subjects import template_subject
from world_model.evaluation import probes as P
from world_model.evaluation import stats
from world_model.evaluation.data import MIRRORED_LANDMARKS, ProbeDataConfig, make_probe_data, mirror_pose

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = P.ProbeConfig(logistic_iters=50, attentive_steps=300, eval_every=50, batch_size=64)


@pytest.fixture(scope="module")
def sets():
    cfg = ProbeDataConfig(train_per_subject=400, eval_per_subject=150, size=(32, 32), train_clips_per_subject=0,
                          eval_clips_per_subject=0)
    return {k: make_probe_data([template_subject()], cfg, seed=i, split=k).slices
            for i, k in enumerate(("train", "val", "test"))}


def _truth(ps):
    canon = P._pose_targets(ps)[:, 6:]
    return np.concatenate([canon / [30, 30, 30, 1, 1, 1], ps.landmark_mm / 30, ps.landmark_hit * 2.0,
                           np.eye(4)[ps.region]], 1)


def _feats(ps, rng, noise=False):
    """Features that linearly encode the ground truth (+ nuisance), or pure noise; a spatial map too."""
    truth = rng.normal(size=_truth(ps).shape) if noise else _truth(ps)
    f = truth @ np.random.default_rng(123).normal(size=(truth.shape[1], 48)) + 0.05 * rng.normal(size=(len(ps), 48))
    pair = f + ps.pair_action @ np.random.default_rng(7).normal(size=(7, 48)) * (0 if noise else 0.2)
    spatial = np.repeat(f[:, :, None, None], 4, 2).repeat(4, 3) + 0.1 * rng.normal(size=(len(ps), 48, 4, 4))
    return {"frames": f.astype(np.float32), "pair": pair.astype(np.float32), "spatial": spatial.astype(np.float32)}


def test_linear_probes_recover_signal_and_fail_on_noise(sets):
    rng = np.random.default_rng(0)
    good = {k: _feats(v, rng) for k, v in sets.items()}
    noise = {k: _feats(v, rng, noise=True) for k, v in sets.items()}
    res = {t: (P.run_linear_probe(t, good, sets, CFG)[0], P.run_linear_probe(t, noise, sets, CFG)[0])
           for t in P.PROBE_TASKS}
    g, n = res["pose"]
    assert g["center_err_mirror_mm"] < 0.3 * n["center_err_mirror_mm"]
    assert g["normal_err_mirror_deg"] < 0.5 * n["normal_err_mirror_deg"]
    g, n = res["inverse_dynamics"]
    assert g["action_r2"] > 0.5 and n["action_r2"] < 0.1
    g, n = res["landmark_distance"]
    assert g["mae_mirror_mm"] < 0.5 * n["mae_mirror_mm"]
    g, n = res["landmark_hit"]
    assert g["auroc"] > 0.85 and n["auroc"] < 0.65
    g, n = res["region"]
    assert g["accuracy"] > 0.9 and n["accuracy"] < 0.45


def test_attentive_probe_recovers_signal_and_fails_on_noise(sets):
    rng = np.random.default_rng(1)
    tasks = list(P.FRAME_TASKS)
    good, _ = P.run_attentive_probe(tasks, {k: _feats(v, rng)["spatial"] for k, v in sets.items()}, sets, CFG)
    bad, _ = P.run_attentive_probe(tasks, {k: _feats(v, rng, True)["spatial"] for k, v in sets.items()}, sets, CFG)
    assert good["pose"]["center_err_mirror_mm"] < 0.6 * bad["pose"]["center_err_mirror_mm"]
    assert good["region"]["accuracy"] > bad["region"]["accuracy"] + 0.3
    assert good["landmark_hit"]["auroc"] > bad["landmark_hit"]["auroc"] + 0.15


def test_mirror_invariant_metrics(sets):
    ps = sets["test"]
    mc, mn = mirror_pose(ps.center_t, ps.normal_t)
    mirrored = np.concatenate([mc, mn, mc, mn], 1)  # predicting every slice's mirror image
    m = P._pose_metrics(mirrored, ps)
    assert m["center_err_mirror_mm"] < 1e-4 and m["normal_err_mirror_deg"] < 0.1
    assert m["center_err_mm"] > 5 and m["normal_err_deg"] > 5  # the raw errors count the mirror as wrong
    exact = P._pose_metrics(P._pose_targets(ps), ps)
    assert exact["center_err_mm"] < 1e-4 and exact["center_err_mirror_mm"] < 1e-4
    lm = P._landmark_metrics(ps.landmark_mm[:, MIRRORED_LANDMARKS], ps)
    assert lm["mae_mirror_mm"] < 1e-4 and lm["mae_mm"] > 1


def test_mean_baseline_and_shuffled_label_control(sets):
    rng = np.random.default_rng(2)
    good = {k: _feats(v, rng) for k, v in sets.items()}
    for task, metric in (("pose", "center_err_mirror_mm"), ("landmark_distance", "mae_mirror_mm"),
                         ("region", "accuracy")):
        mean = P.mean_baseline(task, sets["train"], sets["test"])[metric]
        real = P.run_linear_probe(task, good, sets, CFG)[0][metric]
        shuffled = P.run_linear_probe(task, good, sets, CFG, shuffle_labels=True)[0][metric]
        if metric == "accuracy":  # no better than the majority class (a classifier of noise may do worse)
            assert shuffled <= mean + 0.05, (task, shuffled, mean)
        else:  # the control lands at the mean baseline
            assert abs(shuffled - mean) < 0.1 * abs(mean), (task, shuffled, mean)
        assert abs(real - mean) > 0.3 * abs(mean)  # while the real labels are learnt
    assert P.mean_baseline("landmark_hit", sets["train"], sets["test"])["auroc"] == 0.5


def test_auroc():
    assert P.auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert P.auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(P.auroc(np.arange(3.0), np.zeros(3)))


def test_mean_ci_t_interval():
    m, h, n = stats.mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and h == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
    m, h, n = stats.mean_ci([5.0, np.nan])
    assert (m, n) == (5.0, 1) and np.isnan(h)
    assert stats.mean_ci([2.0, 2.0, 2.0])[1] == 0.0
    rng = np.random.default_rng(0)  # ~95% coverage of the true mean 0
    hits = [abs(m) <= h for m, h, _ in (stats.mean_ci(rng.normal(size=3)) for _ in range(2000))]
    assert 0.93 < np.mean(hits) < 0.97


def test_compare_methods_verdicts():
    rows = [dict(method=m, seed=i, task="t", probe="linear", n_labels=None, metric=metric, value=v)
            for m, metric, vals in (("navwm", "accuracy", [0.9, 0.91, 0.92]), ("random", "accuracy", [0.5, 0.52, 0.51]),
                                    ("navwm", "mae_mm", [3.0, 3.1, 2.9]), ("random", "mae_mm", [2.0, 2.1, 1.9]))
            for i, v in enumerate(vals)]
    got = {c["metric"]: c for c in stats.compare_methods(stats.mean_ci_by_method(rows), "navwm", "random")}
    assert got["accuracy"]["verdict"] == "better (intervals do not overlap)"
    assert got["accuracy"]["advantage"] == pytest.approx(0.4)
    assert got["mae_mm"]["verdict"] == "worse (intervals do not overlap)"  # lower is better
    assert got["mae_mm"]["advantage"] == pytest.approx(-1.0)


def _design_data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    x = {s: rng.normal(size=(m, d)) * rng.uniform(0.5, 3, d) + 1.0 for s, m in (("train", n), ("val", 80), ("test", 90))}
    w = rng.normal(size=(d, 3))
    y = {s: v @ w + rng.normal(size=(len(v), 3)) for s, v in x.items()}
    return x, y


@pytest.mark.parametrize("n,d", [(200, 30), (60, 150)])  # primal (d <= n) and dual (d > n)
def test_ridge_is_the_closed_form_for_every_target(n, d):
    """One Gram and one factorisation per alpha for several targets give each target its own closed-form ridge
    (NumPy, standardised features and targets, penalty alpha * n) and its own probe-val choice of alpha."""
    x, y = _design_data(n, d)
    alphas = (1e-3, 1e-1, 10.0)
    design = P.LinearDesign(x["train"], x["val"], x["test"])
    assert design.dual == (d > n)
    targets = [(torch.as_tensor(y["train"][:, :2]), torch.as_tensor(y["val"][:, :2])),
               (torch.as_tensor(y["train"][:, 2:] * 100), torch.as_tensor(y["val"][:, 2:] * 100))]
    fits = P.fit_ridge(design, targets, alphas)
    mx, sx = x["train"].mean(0), x["train"].std(0)
    z = {s: (v - mx) / sx for s, v in x.items()}
    for (ytr, yval), fit in zip(targets, fits):
        ytr, yval = ytr.numpy(), yval.numpy()
        my, sy = ytr.mean(0), ytr.std(0)
        best = None
        for a in alphas:
            w = np.linalg.solve(z["train"].T @ z["train"] + a * n * np.eye(d), z["train"].T @ ((ytr - my) / sy))
            mse = (((z["val"] @ w) - (yval - my) / sy) ** 2).mean()
            if best is None or mse < best[0]:
                best = (mse, a, (z["test"] @ w) * sy + my)
        assert float(fit["alpha"]) == best[1]
        assert float(fit["val_mse_std"]) == pytest.approx(best[0], rel=1e-8)
        np.testing.assert_allclose(fit["test"].numpy(), best[2], rtol=1e-6, atol=1e-6 * np.abs(best[2]).max())


@pytest.mark.parametrize("kind", ["multilabel", "multiclass"])
@pytest.mark.parametrize("n,d", [(300, 20), (80, 150)])
def test_logistic_reaches_the_penalised_optimum(kind, n, d):
    """The batched majorisation solver ends at the minimiser of mean loss + wd |W|^2 for every wd (gradient
    ~ 0, by autograd in float64), in the primal and in the dual."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, d)
    logits = x @ rng.normal(size=(d, 4)) / np.sqrt(d) * 3
    y = (logits + rng.logistic(size=logits.shape) > 0).astype(float) if kind == "multilabel" else logits.argmax(1)
    design = P.LinearDesign(x, x[:10], x[:10])
    wds = (1e-3, 1e-2, 1e-1)
    ytr = torch.as_tensor(y, dtype=torch.long if kind == "multiclass" else torch.float64)
    coef, bias = P.logistic_mm(design, ytr, wds, kind, 4, 300)
    z = torch.as_tensor((x - x.mean(0)) / x.std(0))
    for i, wd in enumerate(wds):
        w = (z.T @ coef[i] if design.dual else coef[i]).clone().requires_grad_()
        b = bias[i].clone().requires_grad_()
        out = z @ w + b
        loss = F.cross_entropy(out, ytr) if kind == "multiclass" else F.binary_cross_entropy_with_logits(out, ytr)
        (loss + wd * (w ** 2).sum()).backward()
        assert float(w.grad.abs().max()) < 1e-6 and float(b.grad.abs().max()) < 1e-6, (wd, w.grad.abs().max())


def _count_reads(monkeypatch):
    """Count the calls that read a tensor's value back to the host (a sync on a GPU)."""
    calls = []
    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "__array__"):
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return calls


def test_linear_probes_read_back_once(sets, monkeypatch):
    """Every task, the shuffled-label control and every penalty: one read-back of the results (``cpu`` then
    ``numpy`` of that copy), however many solver steps -- no value is read back inside the optimisation."""
    rng = np.random.default_rng(3)
    feats = {k: {n: torch.as_tensor(f) for n, f in _feats(v, rng).items() if n != "spatial"} for k, v in sets.items()}
    counts = []
    for iters in (3, 30):
        calls = _count_reads(monkeypatch)
        res = P.run_linear_probes(list(P.PROBE_TASKS), feats, sets, replace(CFG, logistic_iters=iters),
                                  shuffled_control=True)
        counts.append(list(calls))
        monkeypatch.undo()
        assert len(res) == 2 * len(P.PROBE_TASKS)
    assert counts[0] == counts[1] == ["cpu", "numpy"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_linear_probes_do_not_synchronise_on_cuda(sets):
    """On a GPU (torch's sync debug mode): the synchronising calls do not grow with the solver's steps."""
    rng = np.random.default_rng(3)
    feats = {k: {n: torch.as_tensor(f, device="cuda") for n, f in _feats(v, rng).items() if n != "spatial"}
             for k, v in sets.items()}
    counts = []
    for iters in (3, 30):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                P.run_linear_probes(list(P.PROBE_TASKS), feats, sets, replace(CFG, logistic_iters=iters),
                                    device="cuda", shuffled_control=True)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    assert counts[0] == counts[1], counts
