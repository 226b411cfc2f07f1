"""Downstream evaluation: probe datasets, probes (signal vs noise), CIs, latent planning, the report CLI."""

import json

import numpy as np
import pytest
import torch

from navgym.subjects import template_subject
from world_model import probes
from world_model.eval_data import LANDMARK_NAMES, ProbeDataConfig, make_probe_set

CFG = probes.ProbeConfig(mlp_epochs=30, seg_epochs=10, lbfgs_iters=50, batch_size=32)


@pytest.fixture(scope="module")
def sets():
    s = template_subject()
    cfg = ProbeDataConfig(per_subject=160, size=(32, 32))
    return {k: make_probe_set([s], cfg, seed=i) for i, k in enumerate(("train", "val", "test"))}


def _signal_feats(ps, rng, noise_only=False):
    """Features that linearly encode the ground truth (plus nuisance dims), or pure noise."""
    n = len(ps)
    truth = np.concatenate(
        [ps.center_t / 30, ps.normal_t, ps.landmark_mm / 30, ps.landmark_hit * 2.0,
         np.eye(2)[ps.hemisphere], np.eye(4)[ps.region]], axis=1
    )
    if noise_only:
        truth = rng.normal(size=truth.shape)
    mix = np.random.default_rng(123).normal(size=(truth.shape[1], 48))
    f = truth @ mix + 0.05 * rng.normal(size=(n, 48))
    pair = f + ps.pair_action @ np.random.default_rng(7).normal(size=(7, 48)) * (0 if noise_only else 0.2)
    return {"frames": f.astype(np.float32), "pair": pair.astype(np.float32)}


def test_probe_set_ground_truth(sets):
    ps = sets["train"]
    assert ps.frames.dtype == np.uint8 and ps.frames.shape == (160, 32, 32) and ps.frames.std() > 10
    assert set(np.unique(ps.tissue)) <= {0, 1, 2, 3} and len(np.unique(ps.tissue)) == 4
    np.testing.assert_allclose(np.linalg.norm(ps.normal_t, axis=1), 1, atol=1e-5)
    assert ps.landmark_mm.shape == (160, len(LANDMARK_NAMES)) and ps.landmark_hit.any(0).sum() >= 5
    assert set(ps.hemisphere) == {0, 1} and set(ps.region) == {0, 1, 2, 3}
    # template subject: template space = subject space, so the hemisphere is the sign of x
    again = make_probe_set([template_subject()], ProbeDataConfig(per_subject=160, size=(32, 32)), seed=0)
    np.testing.assert_array_equal(again.frames, ps.frames)  # deterministic in the seed


@pytest.mark.parametrize("probe", ["linear", "mlp"])
def test_probes_recover_signal_and_fail_on_noise(sets, probe):
    rng = np.random.default_rng(0)
    good = {k: _signal_feats(v, rng) for k, v in sets.items()}
    noise = {k: _signal_feats(v, rng, noise_only=True) for k, v in sets.items()}
    res = {name: (probes.run_task(name, probe, good, sets, CFG)[0], probes.run_task(name, probe, noise, sets, CFG)[0])
           for name in probes.TASKS}
    (g, n) = res["pose"]
    assert g["center_err_mm"] < 0.5 * n["center_err_mm"] and g["normal_err_deg"] < 0.5 * n["normal_err_deg"]
    g, n = res["inverse_dynamics"]
    assert g["action_r2"] > 0.5 and n["action_r2"] < 0.1
    g, n = res["landmark_distance"]
    assert g["mae_mm"] < 0.5 * n["mae_mm"]
    g, n = res["landmark_hit"]
    assert g["auroc"] > 0.85 and n["auroc"] < 0.65
    for name, chance in (("hemisphere", 0.5), ("region", 0.25)):
        g, n = res[name]
        assert g["accuracy"] > 0.9 and n["accuracy"] < chance + 0.2


@pytest.mark.parametrize("probe", ["linear", "mlp"])
def test_segmentation_decoder_signal_vs_noise(sets, probe):
    def spatial(ps, noise):
        # 16x16 grid of tissue fractions per 2x2 patch (+ noise), or pure noise
        t = torch.as_tensor(ps.tissue, dtype=torch.long)
        onehot = torch.nn.functional.one_hot(t, 4).permute(0, 3, 1, 2).float()
        pooled = torch.nn.functional.avg_pool2d(onehot, 2).numpy()
        rng = np.random.default_rng(len(ps))
        extra = rng.normal(size=(len(ps), 4, 16, 16))
        return (rng.normal(size=pooled.shape) if noise else pooled + 0.1 * extra[:, :4]).astype(np.float32)

    good = probes.run_segmentation(probe, {k: spatial(v, False) for k, v in sets.items()}, sets, CFG)[0]
    bad = probes.run_segmentation(probe, {k: spatial(v, True) for k, v in sets.items()}, sets, CFG)[0]
    # upsampling the true fractions themselves gives dice_mean 0.66 on these 32 px slices
    assert good["dice_mean"] > 0.45 and good["dice_mean"] > bad["dice_mean"] + 0.25


def test_metric_helpers():
    assert probes.auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert probes.auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(probes.auroc(np.arange(3.0), np.zeros(3)))
    d = probes.dice_scores(np.array([[0, 1], [1, 2]]), np.array([[0, 1], [2, 2]]), 4)
    np.testing.assert_allclose(d[:3], [1.0, 2 / 3, 2 / 3])
    assert np.isnan(d[3])


def test_mean_ci_t_interval():
    m, h, n = probes.mean_ci([1.0, 2.0, 3.0])
    # t(0.975, df=2) = 4.3027; sd = 1; half width = 4.3027 / sqrt(3)
    assert (m, n) == (2.0, 3) and h == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    m, h, n = probes.mean_ci([5.0, np.nan])
    assert m == 5.0 and np.isnan(h) and n == 1
    assert probes.mean_ci([2.0, 2.0, 2.0])[1] == 0.0
    # coverage: ~95% of intervals from N(0, 1) samples of 3 contain 0
    rng = np.random.default_rng(0)
    hits = [abs(m) <= h for m, h, _ in (probes.mean_ci(rng.normal(size=3)) for _ in range(2000))]
    assert 0.93 < np.mean(hits) < 0.97
