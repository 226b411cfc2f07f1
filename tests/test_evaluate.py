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


# --- latent planning ---------------------------------------------------------------------------
class _ShiftModel:
    """Toy latent model: the latent is a 3-vector moved by the first three action components."""

    def encode(self, frames):
        return torch.zeros(len(frames), 3)

    def predict(self, latents, actions):
        assert latents.shape[1] == actions.shape[1]  # one action after each latent
        return latents[:, -1] + actions[:, -1, :3]


def test_cem_finds_actions_that_reach_the_goal():
    from world_model.planning import PlanConfig, cem_plan

    cfg = PlanConfig(horizon=3, population=128, elites=12, iterations=5)
    goal = torch.tensor([[2.0, -1.5, 0.5], [-0.5, 0.0, 2.5]])
    plan = cem_plan(_ShiftModel(), torch.zeros(2, 1, 3), torch.zeros(2, 0, 7), goal, cfg, torch.Generator().manual_seed(0))
    assert plan.shape == (2, 3, 7) and plan.abs().max() <= 1 and (plan[..., 6] == 0).all()
    reached = plan[:, :, :3].sum(1)
    assert torch.linalg.norm(reached - goal, dim=1).max() < 0.5  # from 2.5 and 2.5 away


def test_run_planning_policies():
    from world_model.planning import PlanConfig, run_planning

    subj = [template_subject()]
    cfg = PlanConfig(episodes=3, steps=2, goal_steps=3, population=8, elites=2, iterations=1, size=(32, 32))
    stay = run_planning(subj, cfg, policy="stay")
    assert 0 < stay["final_dist_mm"] <= 3 * np.sqrt(3) * 5 + 1e-6 and len(stay["per_episode_dist_mm"]) == 3
    rand = run_planning(subj, cfg, policy="random")
    assert rand["final_dist_mm"] != stay["final_dist_mm"]

    class Pooled(_ShiftModel):
        def encode(self, frames):
            return torch.nn.functional.avg_pool2d(frames.float()[:, None] / 255, 8).flatten(1)

        def predict(self, latents, actions):
            return latents[:, -1]

    # a perfect model (the true pose) reaches the goals: the harness and CEM budget work
    oracle = run_planning(subj, PlanConfig(episodes=4, size=(32, 32)), policy="oracle")
    assert oracle["success_rate"] >= 0.75 and oracle["final_dist_mm"] < 2.0
    cem = run_planning(subj, cfg, model=Pooled())
    assert set(cem) >= {"success_rate", "final_dist_mm", "final_angle_deg"} and 0 <= cem["success_rate"] <= 1
    with pytest.raises(ValueError, match="needs a latent model"):
        run_planning(subj, cfg, policy="cem")


# --- the report ------------------------------------------------------------------------------
class StandIn(torch.nn.Module):
    """A fixed random conv projection (a stand-in for a pretrained encoder)."""

    def __init__(self, seed):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(seed)))
        self.feature_dim = 8 * 4 * 4

    def spatial_features(self, frames):
        return torch.relu(torch.nn.functional.conv2d(frames.float()[:, None] / 255, self.w, stride=4))

    def features(self, frames):
        return torch.nn.functional.adaptive_avg_pool2d(self.spatial_features(frames), 4).flatten(1)


def test_compare_verdicts():
    from world_model.evaluate import compare

    def row(method, values, metric="accuracy", higher=True):
        m, h, n = probes.mean_ci(values)
        return dict(task="t", probe="linear", metric=metric, method=method, mean=m, ci95=h, n=n, values=values,
                    higher_is_better=higher)

    summary = [row("navwm", [0.9, 0.91, 0.92]), row("mae3d", [0.5, 0.52, 0.51]), row("shuffled", [0.85, 0.95, 0.9]),
               row("navwm", [3.0, 3.1, 2.9], "err", False), row("mae3d", [2.0, 2.1, 1.9], "err", False)]
    got = {(c["metric"], c["baseline"]): c for c in compare(summary)}
    assert got["accuracy", "mae3d"]["verdict"] == "better (intervals do not overlap)"
    assert got["accuracy", "mae3d"]["advantage"] == pytest.approx(0.4)
    assert got["accuracy", "shuffled"]["verdict"] == "better (intervals overlap)"
    assert got["err", "mae3d"]["verdict"] == "worse (intervals do not overlap)"  # lower is better
    assert got["err", "mae3d"]["advantage"] == pytest.approx(-1.0)


def test_evaluate_end_to_end_with_stand_in_encoders(tmp_path):
    from world_model import evaluate as ev
    from world_model.planning import PlanConfig

    cfg = ev.EvalConfig(
        data=ProbeDataConfig(per_subject=60, size=(32, 32)),
        probe=probes.ProbeConfig(mlp_epochs=3, seg_epochs=2, lbfgs_iters=20, e2e_epochs=1),
        plan=PlanConfig(episodes=2, steps=2, population=8, elites=2, iterations=1, size=(32, 32)),
        supervised_seeds=(0,), finetune=True,
    )

    class Latent(StandIn):
        def encode(self, frames):
            return self.features(frames)

        def predict(self, latents, actions):
            return latents[:, -1]

    entries = [ev.Entry(m, s, StandIn(s + 10 * i), latent_model=Latent(s) if m == "navwm" else None)
               for i, m in enumerate(("navwm", "random")) for s in range(2)]
    result = ev.evaluate(entries, [template_subject()], cfg)
    result["timings"]["total_s"] = 1.0
    doc = ev.write_report(result, cfg, tmp_path, ["python", "-m", "world_model.evaluate", "--test"])
    n_metrics = sum(len(v) for v in probes.TASK_METRICS.values())
    # 4 encoders x (linear, mlp, finetune) + pixels x (linear, mlp) + 1 supervised seed, every metric once
    assert len(result["rows"]) == (4 * 3 + 2 + 1) * n_metrics
    assert {r["probe"] for r in result["rows"] if r["method"] == "supervised"} == {"e2e"}
    assert {r["method"] for r in result["planning"]} == {"navwm", "random_actions", "no_move", "pose_oracle"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["command"].endswith("--test") and saved["versions"]["torch"] == torch.__version__
    assert saved["config"]["data"]["per_subject"] == 60 and len(saved["comparisons"]) > 10
    report = (tmp_path / "report.md").read_text()
    assert "| pose | center_err_mm ↓ |" in report and "Does navwm beat each baseline?" in report
    assert "## fine-tuned end to end" in report and "supervised (e2e)" in report
    assert "only the slices differ" in report  # one subject: said plainly
    assert {"plot_linear.png", "plot_mlp.png", "plot_plan.png"} <= {p.name for p in tmp_path.iterdir()}


def test_load_entry_specs():
    from world_model.evaluate import image_size, load_entry

    e = load_entry("random:3")
    assert (e.method, e.seed) == ("random", 3) and e.latent_model is e.encoder and image_size(e.encoder) == 64
    with pytest.raises(FileNotFoundError):
        load_entry("navwm:0=no/such/checkpoint.pt")


@pytest.mark.slow
def test_quick_cli_end_to_end(tmp_path):
    """The full ``--quick`` run: trains tiny models with world_model.train, evaluates, writes the report."""
    from world_model.evaluate import QUICK_METHODS, main

    doc = main(["--quick", "--out", str(tmp_path)])
    assert {e["method"] for e in doc["entries"]} == set(QUICK_METHODS) | {"pixels"}
    assert (tmp_path / "report.md").exists() and len(doc["comparisons"]) > 0


def test_mae3d_plane_features_sample_the_volume_map_along_the_plane():
    """A feature map holding each cell's world coordinates, sampled on a plane, gives the plane's points."""
    from world_model.mae3d import MAE3D

    rng = np.random.default_rng(0)
    affine = np.array([[0, 0, -3.0, 90], [2.5, 0, 0, -100], [0, 3.5, 0, -70], [0, 0, 0, 1]])  # oblique voxel order
    shape = (16, 20, 18)  # map cells; each covers 4 voxels per axis
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) * 4 + 1.5  # cell centre, voxels
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    fmap = torch.from_numpy(world.transpose(3, 0, 1, 2).astype(np.float32))
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rot[:, 2] = np.cross(rot[:, 0], rot[:, 1])
    center, fov, size = np.array([5.0, -10.0, 20.0]), 60.0, 8
    got = MAE3D(4).plane_features(fmap, affine, center[None], rot[None], [fov], size)[0].numpy()  # (3, s, s)
    s = (np.arange(size) + 0.5) / size - 0.5
    want = center + fov * (s[None, :, None] * rot[:, 0] - s[:, None, None] * rot[:, 1])  # row 0 = +v, col 0 = -u
    np.testing.assert_allclose(got.transpose(1, 2, 0), want, atol=1e-3)


def test_mae3d_probe_features_read_the_volume(sets):
    """In the probes, the 3D MAE's features come from its volume map along each slice's plane."""
    from world_model.encoders import build_model
    from world_model.config import MODEL_SIZES
    from world_model.evaluate import Entry, EvalConfig, extract

    torch.manual_seed(0)
    enc = build_model(MODEL_SIZES["tiny"], "mae3d").eval()
    subjects = {k: [template_subject()] for k in sets}
    feats = extract(Entry("mae3d", 0, enc), sets, EvalConfig(), subjects)
    ps = sets["test"]
    assert feats["test"]["spatial"].shape == (len(ps), enc.width * 2, 8, 8)  # 32 px slices -> H/4
    p = ps.pose[:3]
    with torch.no_grad():
        direct = enc.plane_spatial_features(template_subject().volume, p[:, :3], p[:, 3:12].reshape(-1, 3, 3), p[:, 12], 8)
    np.testing.assert_allclose(feats["test"]["spatial"][:3], direct.numpy(), atol=1e-5)
    slab = extract(Entry("mae3d", 0, enc), sets, EvalConfig())  # frames only: the thin-slab features
    assert not np.allclose(slab["test"]["frames"], feats["test"]["frames"])
    assert not np.allclose(feats["test"]["frames"], feats["test"]["pair"])  # the pair's own planes
