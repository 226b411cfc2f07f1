"""The evaluation run and its report (stand-in encoders), encoder entries, the 3D MAE's probe features,
latent planning, and the ``python -m world_model.evaluation`` CLI."""

import json

import numpy as np
import pytest
import torch

from navgym.subjects import template_subject
from world_model.evaluation.data import PROBE_SPLITS, ProbeDataConfig, make_probe_data
from world_model.evaluation.encoders import EncoderEntry, frozen_features, image_size, load_encoder_entry
from world_model.evaluation.finetune import FinetuneConfig
from world_model.evaluation.pipeline import EvalConfig, Progress, evaluate_encoders
from world_model.evaluation.planning import PlanConfig, cem_plan, pose_errors, run_planning
from world_model.evaluation.probes import ProbeConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = ProbeDataConfig(train_per_subject=150, eval_per_subject=60, size=(32, 32), train_clips_per_subject=12,
                       eval_clips_per_subject=6)


@pytest.fixture(scope="module")
def data():
    return {k: make_probe_data([template_subject()], DATA, seed=i, split=k) for i, k in enumerate(PROBE_SPLITS)}


class StandIn(torch.nn.Module):
    """A fixed random conv projection (a stand-in for a pretrained encoder), with a latent model."""

    def __init__(self, seed):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(seed)))
        self.feature_dim = 8 * 4 * 4

    def spatial_features(self, frames):
        return torch.relu(torch.nn.functional.conv2d(frames.float()[:, None] / 255, self.w, stride=4))

    def features(self, frames):
        return torch.nn.functional.adaptive_avg_pool2d(self.spatial_features(frames), 4).flatten(1)

    def encode(self, frames):
        return self.features(frames)

    def predict(self, latents, actions):
        return latents[:, -1]


SMALL = EvalConfig(
    data=DATA, probe=ProbeConfig(logistic_iters=20, attentive_steps=20, eval_every=10),
    finetune_cfg=FinetuneConfig(n_labels=(32, 128), steps=10, eval_every=5, reference_steps=10),
    plan=PlanConfig(episodes=2, steps=2, population=8, elites=2, iterations=1, size=(32, 32)),
    reference_seeds=(0, 1), random_twins=False)


def test_evaluate_and_report_with_stand_in_encoders(tmp_path, data, capsys, monkeypatch):
    from world_model.evaluation.report import write_report

    entries = [EncoderEntry(m, s, StandIn(s + 10 * i), latent_model=StandIn(s) if m == "navwm" else None)
               for i, m in enumerate(("navwm", "random_init")) for s in range(2)]
    subjects = {s: [template_subject()] for s in PROBE_SPLITS}
    log = Progress(always=True)
    result = evaluate_encoders(entries, data, SMALL, subjects, log=log, parts_dir=tmp_path / "parts")
    assert "frozen probes 5/5: random_init seed 1" in capsys.readouterr().out  # progress lines, seed by seed
    probes = {(r["method"], r["probe"]) for r in result["rows"]}
    assert {("navwm", "linear"), ("navwm", "attentive"), ("navwm", "finetune"), ("random_init", "finetune"),
            ("supervised", "reference"), ("mean", "mean"), ("pooled_pixels", "attentive"),
            ("random_init", "linear_shuffled_labels")} <= probes
    assert ("pooled_pixels", "finetune") not in probes  # nothing to fine-tune
    assert {r["n_labels"] for r in result["rows"] if r["probe"] == "finetune"} == {32, 128}
    assert {r["task"] for r in result["rows"]} >= {"clip_pose", "clip_landmark_distance", "planning"}
    assert {r["method"] for r in result["planning"]} == {"navwm", "no_move", "random_actions", "true_pose_model"}
    # a rerun resumes from the finished parts: no work redone, the same numbers
    import tqdm.auto

    bars = []

    class Bar(tqdm.auto.tqdm):
        def __init__(self, *a, **kw):
            super().__init__(*a, **{**kw, "disable": False})  # as on a terminal
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    again = evaluate_encoders(entries, data, SMALL, subjects, parts_dir=tmp_path / "parts")
    assert again["rows"] == result["rows"] and again["timings"] == result["timings"]
    units = len(list((tmp_path / "parts").glob("*.json")))
    assert [(b.total, b.n) for b in bars] == [(units, units)]  # the progress bar moves once per unit

    result["timings"]["total_s"] = 1.0
    out = tmp_path / "report"
    doc = write_report(result, SMALL, out, ["python", "-m", "world_model.evaluation", "--test"], {"device": "cpu"})
    saved = json.loads((out / "results.json").read_text())
    assert saved["command"].endswith("--test") and saved["versions"]["torch"] == torch.__version__
    assert saved["config"]["data"]["train_per_subject"] == 150 and saved["device"] == "cpu"
    report = (out / "report.md").read_text()
    assert "## Sanity: which tasks a slice can answer" in report and "## Label efficiency" in report
    assert "## Clip-level probes" in report and "Shuffled-label control" in report and "## Verdict" in report
    assert "only the slices differ" in report  # one subject: said plainly
    assert {c["task"] for c in doc["sanity"]} >= {"pose", "region", "clip_pose"}
    assert any(c["method"] == "navwm" and c["baseline"] == "random_init" for c in doc["comparisons"]) or not doc["kept_tasks"]
    assert {"label_efficiency.png", "frozen_probes.png", "clip_probes.png"} <= set(doc["plots"])
    assert (out / "readme_snippet.md").read_text().startswith("Frozen linear probes")


def test_sanity_flags_a_task_the_reference_cannot_learn():
    from world_model.evaluation.report import sanity
    from world_model.evaluation.stats import mean_ci_by_method

    rows = [dict(method="mean", seed=None, task=t, probe="mean", n_labels=None, metric=m, value=v)
            for t, m, v in (("pose", "center_err_mirror_mm", 30.0), ("region", "accuracy", 0.3))]
    rows += [dict(method="supervised", seed=s, task=t, probe="reference", n_labels=100, metric=m, value=v + 0.01 * s)
             for s in range(3) for t, m, v in (("pose", "center_err_mirror_mm", 12.0), ("region", "accuracy", 0.31))]
    rows += [dict(method="random_init", seed=s, task=t, probe="linear", n_labels=None, metric=m, value=v + 0.01 * s)
             for s in range(3) for t, m, v in (("pose", "center_err_mirror_mm", 25.0), ("region", "accuracy", 0.3))]
    got = {c["task"]: c for c in sanity(mean_ci_by_method(rows))}
    assert got["pose"]["learnable"] and got["pose"]["separated"]
    assert not got["region"]["learnable"]  # the reference does not beat the majority class clearly


def test_load_encoder_entry_specs():
    e = load_encoder_entry("random_init:3")
    assert (e.method, e.seed) == ("random_init", 3) and e.latent_model is e.encoder and image_size(e.encoder) == 64
    t = load_encoder_entry("tokenizer:1")
    assert (t.method, t.latent_model) == ("tokenizer", None)
    with pytest.raises(FileNotFoundError, match="checkpoints"):
        load_encoder_entry("navwm:0=no/such/checkpoint.pt")


def test_a_checkpoints_label_must_match_its_config(tmp_path):
    from world_model.config import make_config
    from world_model.train import train

    mc, tc = make_config("tiny", method="tokenizer", steps=1, seed=2, size=32, width=4, latent=4, dim=16, depth=1,
                         heads=2, patch=2, window=3, out=str(tmp_path / "tok"))
    path = train(mc, tc, progress=False)["checkpoint"]
    assert (load_encoder_entry(path).method, load_encoder_entry(f"tokenizer:2={path}").seed) == ("tokenizer", 2)
    for label in ("navwm:2", "tokenizer:7"):
        with pytest.raises(ValueError, match=rf"label {label} differs from the checkpoint's own config \(tokenizer:2\)"):
            load_encoder_entry(f"{label}={path}")


def test_clip_features_use_context_for_the_dynamics_family(data):
    from world_model.evaluation.encoders import clip_features, has_clip_features

    clips = data["test"].clips
    dyn, static = load_encoder_entry("random_init:0").encoder, load_encoder_entry("tokenizer:0").encoder
    assert has_clip_features(dyn) and not has_clip_features(static)
    big = torch.nn.functional.interpolate(torch.from_numpy(clips.frames).float(), size=64).round().to(torch.uint8)
    from dataclasses import replace
    clips64 = replace(clips, frames=big.numpy())
    f = clip_features(dyn, clips64)
    assert f.shape == (len(clips), dyn.feature_dim)
    g = clip_features(static, clips64)
    k = clips.frames.shape[1]
    assert g.shape == (len(clips), k * static.feature_dim + (k - 1) * 7)


def test_mae3d_probe_features_read_the_volume(data):
    """In the probes, the 3D MAE's features come from its volume map along each slice's plane."""
    from world_model import load_encoder

    enc = load_encoder("mae3d", seed=0)
    sets = {s: data[s].slices for s in PROBE_SPLITS}
    subjects = {k: [template_subject()] for k in PROBE_SPLITS}
    feats = frozen_features(enc, sets, subjects)
    ps = sets["test"]
    assert feats["test"]["spatial"].shape[:2] == (len(ps), enc.width * 2) and feats["test"]["spatial"].shape[2] == 8
    p = ps.pose[:3]
    with torch.no_grad():
        direct = enc.plane_spatial_features(template_subject().volume, p[:, :3], p[:, 3:12].reshape(-1, 3, 3),
                                            p[:, 12], 8)
    np.testing.assert_allclose(feats["test"]["spatial"][:3], direct.numpy(), atol=1e-5)
    assert not np.allclose(feats["test"]["frames"], feats["test"]["pair"])  # the pair's own planes


def test_mae3d_plane_features_read_cells_at_their_voxel_centres():
    """The 3D MAE's map cell f covers voxels 4f .. 4f+3, so a plane through voxel 4f + 1.5 reads cell f."""
    from navgym.geometry import canonical_rotation
    from world_model.mae3d import MAE3D

    fmap = torch.rand(3, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    # identity affine; axial: u = +i, v = +j, 4 mm pixels -> columns at i = 1.5, 5.5 and rows at j = 5.5, 1.5
    got = MAE3D().plane_features(fmap, np.eye(4), np.array([[3.5, 3.5, 5.5]]), canonical_rotation("axial")[None],
                                 np.array([8.0]), size=2)[0]
    want = fmap[:, :, :, 1].flip(-1).transpose(1, 2)  # [c, row, col] = fmap[c, col, 1 - row, 1]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


# --- latent planning ---------------------------------------------------------------------------
class _ShiftModel:
    """Toy latent model: the latent is a 3-vector moved by the first three action components."""

    def encode(self, frames):
        return torch.zeros(len(frames), 3)

    def predict(self, latents, actions):
        assert latents.shape[1] == actions.shape[1]  # one action after each latent
        return latents[:, -1] + actions[:, -1, :3]


def test_cem_finds_actions_that_reach_the_goal():
    cfg = PlanConfig(horizon=3, population=128, elites=12, iterations=5)
    goal = torch.tensor([[2.0, -1.5, 0.5], [-0.5, 0.0, 2.5]])
    plan = cem_plan(_ShiftModel(), torch.zeros(2, 1, 3), torch.zeros(2, 0, 7), goal, cfg, torch.Generator().manual_seed(0))
    assert plan.shape == (2, 3, 7) and plan.abs().max() <= 1 and (plan[..., 6] == 0).all()
    reached = plan[:, :, :3].sum(1)
    assert torch.linalg.norm(reached - goal, dim=1).max() < 0.5  # from 2.5 and 2.5 away


def test_pose_errors():
    rot = np.stack([np.eye(3), np.eye(3)[:, [1, 2, 0]]])
    d, a = pose_errors(np.zeros((2, 3)), rot, np.array([[3.0, 4, 0], [0, 0, 0]]), np.stack([np.eye(3), np.eye(3)]))
    np.testing.assert_allclose(d, [5, 0])
    np.testing.assert_allclose(a, [0, 90], atol=1e-6)


def test_run_planning_policies():
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
    true_pose = run_planning(subj, PlanConfig(episodes=4, size=(32, 32)), policy="true_pose")
    assert true_pose["success_rate"] >= 0.75 and true_pose["final_dist_mm"] < 2.0
    cem = run_planning(subj, cfg, model=Pooled())
    assert set(cem) >= {"success_rate", "final_dist_mm", "final_angle_deg"} and 0 <= cem["success_rate"] <= 1
    with pytest.raises(ValueError, match="needs a latent model"):
        run_planning(subj, cfg, policy="cem")


def test_cli_errors_and_help(capsys):
    from world_model.evaluation.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--out", "/tmp/unused"])
    assert e.value.code == 2 and "error: nothing to evaluate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(default: 24)" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_cli_end_to_end(tmp_path):
    """The full ``--quick`` run: trains tiny models with world_model.train, evaluates, writes the report."""
    from world_model.evaluation.cli import main

    doc = main(["--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    assert {e["method"] for e in doc["entries"]} == {"navwm", "random_init", "pooled_pixels"}
    assert (tmp_path / "report.md").exists() and doc["sanity"]


def test_budget_scales_every_training_budget():
    cfg = EvalConfig()
    half = cfg.scaled(0.5)
    assert half.probe.attentive_steps == cfg.probe.attentive_steps // 2
    assert half.finetune_cfg.steps == cfg.finetune_cfg.steps // 2
    assert half.finetune_cfg.reference_steps == cfg.finetune_cfg.reference_steps // 2
    assert half.finetune_cfg.n_labels == cfg.finetune_cfg.n_labels and half.data == cfg.data
    with pytest.raises(ValueError, match="budget"):
        cfg.scaled(0)
    with pytest.raises(ValueError, match="tasks"):
        EvalConfig(tasks=("hemisphere",))


def test_shards_share_the_work_and_cached_only_assembles_it(tmp_path, data):
    """k processes with --shard i/k compute disjoint units into one cache; a run without it then
    reuses every unit (the same rows as a plain run); --cached-only computes nothing and names the
    units it lacks."""
    from dataclasses import replace

    cfg = replace(SMALL, probes=("linear",), finetune=False, planning=False, linear_n_labels=(16, 64))
    entries = [EncoderEntry(m, s, StandIn(s + 10 * i)) for i, m in enumerate(("navwm", "random_init")) for s in range(2)]
    plain = evaluate_encoders(entries, data, cfg, parts_dir=tmp_path / "plain")
    parts = tmp_path / "shared"
    shards = [evaluate_encoders(entries, data, cfg, parts_dir=parts, shard=(i, 2)) for i in range(2)]
    done = [{(r["method"], r["seed"], r["probe"]) for r in s["rows"] if r["probe"] != "mean"} for s in shards]
    assert done[0] and done[1] and not done[0] & done[1]  # disjoint units, both shards worked
    files = sorted(p.name for p in parts.iterdir())
    assembled = evaluate_encoders(entries, data, cfg, parts_dir=parts, cached_only=True)
    assert sorted(p.name for p in parts.iterdir()) == files  # nothing computed
    key = lambda rows: sorted((r["method"], r["seed"], r["task"], r["probe"], r["n_labels"] or 0, r["metric"], r["value"])  # noqa: E731
                              for r in rows)
    assert key(assembled["rows"]) == key(plain["rows"]) and assembled["missing_units"] == []
    # linear label efficiency: the probe refitted on the first N labels, for every task
    few = {(r["n_labels"], r["task"]) for r in plain["rows"] if r["probe"] == "linear_n"}
    assert {n for n, _ in few} == {16, 64} and {t for _, t in few} == set(cfg.tasks)
    part_lost = next(p for p in parts.iterdir() if p.name.startswith("frozen_navwm_s1"))
    part_lost.unlink()
    partial = evaluate_encoders(entries, data, cfg, parts_dir=parts, cached_only=True)
    assert partial["missing_units"] == ["frozen/navwm_s1"]
    assert not any(r["method"] == "navwm" and r["seed"] == 1 for r in partial["rows"])
    with pytest.raises(ValueError, match="parts_dir"):
        evaluate_encoders(entries, data, cfg, shard=(0, 2))
    with pytest.raises(ValueError, match="linear_n_labels"):
        replace(cfg, linear_n_labels=(0,))


def test_report_shows_linear_label_efficiency_and_missing_units(tmp_path, data):
    from dataclasses import replace

    from world_model.evaluation.report import write_report

    cfg = replace(SMALL, probes=("linear",), finetune=False, planning=False, clips=False, linear_n_labels=(16, 64))
    entries = [EncoderEntry(m, s, StandIn(s + 10 * i)) for i, m in enumerate(("navwm", "random_init")) for s in range(2)]
    result = evaluate_encoders(entries, data, cfg, parts_dir=tmp_path / "parts")
    result["missing_units"] = ["frozen/navwm_s2"]
    doc = write_report(result, cfg, tmp_path / "report", ["python", "-m", "world_model.evaluation"], {"device": "cpu"})
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Label efficiency: frozen linear probe fitted on N labelled slices" in report
    n_all = len(data["train"].slices)
    assert f"| N=16 | N=64 | N={n_all} |" in report
    assert "**Not computed**" in report and "frozen/navwm_s2" in report
    assert "linear_label_efficiency.png" in doc["plots"] and "label_efficiency.png" not in doc["plots"]
    assert doc["config"]["linear_n_labels"] == [16, 64]


def test_cli_shard_and_prepare_data(tmp_path, capsys):
    from world_model.evaluation.cli import main, parse_args

    assert parse_args(["--out", "x", "--shard", "1/3"]).shard == (1, 3)
    for bad in ("3/3", "a/b", "-1/2"):
        with pytest.raises(SystemExit):
            parse_args(["--out", "x", "--shard", bad])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--prepare-data"])
    assert "--prepare-data with --size" in capsys.readouterr().err
    main(["--prepare-data", "--size", "32", "--subjects", "template", "--cache", str(tmp_path / "cache"), "--out",
          str(tmp_path / "out"), "--train-per-subject", "20", "--eval-per-subject", "10", "--threads", "1"])
    assert sorted(p.name.split("_")[1] for p in (tmp_path / "cache").glob("probe_*.npz")) == ["test", "train", "val"]
    assert not (tmp_path / "out" / "report.md").exists()
