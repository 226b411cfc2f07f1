"""world_model.comparison: the one-loop trainer (shared stage 1 bit-identical to separate training,
reproducible, equal frames), the plan that fits a deadline, and the --quick driver end to end."""

import json
from dataclasses import replace

import pytest
import torch

from world_model.comparison import frames_per_run, main, mae3d_crops, plan_steps, run_specs, train_all
from world_model.config import MODEL_SIZES
from world_model.train import train

SMALL = dict(size=32, width=4, latent=4, dim=16, depth=1, heads=2, patch=2, window=3, crop=16, voxel_mm=8.0)


def _specs(root, methods, steps=4):
    return run_specs("tiny", methods, [0], steps, 2, root, SMALL, subjects="template", stage1_frac=0.5, log_every=1,
                     eval_every=1000, threads=1, device="cpu")


def _state(path):
    s = torch.load(path, weights_only=True)
    return s["model"], s["optim"]


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def test_shared_stage1_is_bit_identical_to_training_each_run_alone(tmp_path):
    methods = ["navwm", "shuffled", "navwm_joint"]
    specs = _specs(tmp_path / "together", methods)
    res = train_all(specs, torch.device("cpu"), progress=False)
    assert [r["shared_stage1"] for r in res["runs"]] == [False, True, True]  # stage 1 trained once, copied twice
    assert res["steps"] == 4 and {r["frames"] for r in res["runs"]} == {4 * 2 * 3}
    again = train_all(_specs(tmp_path / "reversed", methods[::-1]), torch.device("cpu"), progress=False)
    for (mc, tc), r in zip(specs, res["runs"]):
        alone = replace(tc, out=str(tmp_path / "alone" / tc.method))
        summary = train(mc, alone, progress=False)
        model, optim = _state(tmp_path / "alone" / tc.method / "last.pt")
        model2, optim2 = _state(tc.out + "/last.pt")
        assert _same(model, model2) and _same(optim["state"], optim2["state"]), tc.method
        assert summary["loss/total"] == r["loss/total"]  # the exact figures, from the seed alone
        other = next(x for x in again["runs"] if x["method"] == tc.method)
        assert other["loss/total"] == r["loss/total"]
        assert _same(_state(other["checkpoint"])[0], model)
    assert not _same(_state(res["runs"][0]["checkpoint"])[0], _state(res["runs"][1]["checkpoint"])[0])


def test_mae3d_and_clip_methods_see_equal_frames():
    for size in ("tiny", "capable"):
        (mc, clip), (_, crops) = run_specs(size, ["navwm", "mae3d"], [0], 100, 16, "/tmp/unused")
        assert crops.batch // 4 == mae3d_crops(mc, 16) == 2  # 2 crops of 64^3 = 128 slices of 64^2 = 16 x 8
        assert frames_per_run(mc, clip) == frames_per_run(mc, crops) == 100 * 16 * MODEL_SIZES[size].window


def test_plan_fits_the_training_time_and_counts_a_shared_stage_once():
    runs = [dict(method="navwm", stage1_s=0.1, stage2_s=0.05, has_stage1=True, shared_stage1=False),
            dict(method="shuffled", stage1_s=0.1, stage2_s=0.05, has_stage1=True, shared_stage1=True),
            dict(method="tokenizer", stage1_s=0.1, stage2_s=0.1, has_stage1=False, shared_stage1=False)]
    cal = {"runs": runs, "data_s": {"clips": 0.02}}
    plan = plan_steps(cal, 100.0, 0.5, 0.4, 10**6)
    per_step = 0.02 + (0.4 * 0.1 + 0.6 * 0.05) + 0.6 * 0.05 + 0.1
    assert plan["seconds_per_step"] == pytest.approx(per_step)
    assert plan["predicted_train_s"] <= 50 < (plan["steps"] + 1) * per_step  # the most steps that fit
    assert plan_steps(cal, 10**6, 1.0, 0.4, 123)["steps"] == 123
    with pytest.raises(ValueError, match="not one step fits"):
        plan_steps(cal, 0.01, 1.0, 0.4, 10**6)


def test_quick_comparison_end_to_end_within_its_deadline_and_rebuilds(tmp_path, capsys):
    out = tmp_path / "report"
    probes = ("--subjects template --train-per-subject 60 --eval-per-subject 30 --tasks pose region --probes linear "
              "--n-labels --no-planning --no-clips --reference-seeds")  # the template only: no subjects to build
    # --frames: a fixed plan (a loaded CI machine cannot make a tight deadline flaky); the plan and the
    # deadline stop are tested above and below
    doc = main(["--quick", "--methods", "navwm", "shuffled", "random_init", "--seconds", "900", "--frames", "160",
                "--out", str(out), "--progress", "false", "--threads", "1", "--calibration-steps", "1",
                "--subjects", "template", "--eval-args", probes])
    c = doc["comparison"]
    assert c["total_s"] <= 900 and c["train"]["steps"] == 5 and c["frames_per_run"] == 5 * 8 * 4
    trained = [r for r in c["train"]["runs"] if r["method"] != "random_init"]
    assert len({r["frames"] for r in trained}) == 1 and trained[0]["frames"] == c["frames_per_run"] > 0
    assert {r["method"] for r in c["train"]["runs"]} == {"navwm", "shuffled", "random_init"}
    assert set(c["phases"]) >= {"setup", "eval_calibration", "calibration", "train", "evaluate"}
    assert {r["method"] for r in doc["rows"]} >= {"navwm", "shuffled", "random_init"}  # the evaluation's rows
    assert not list(out.rglob("*.pt"))  # no checkpoints in the report
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".md"}
    main(["--rewrite", "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".md"} == before
    assert json.loads((out / "results.json").read_text())["comparison"]["frames_per_run"] == c["frames_per_run"]
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "wall-clock deadline of the whole command (default: 480.0)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_loop_on_cuda_with_device_rng_and_bf16(tmp_path):
    specs = run_specs("tiny", ["navwm", "shuffled", "mae2d"], [0], 4, 2, tmp_path, SMALL, subjects="template",
                      stage1_frac=0.5, log_every=2, threads=1, device="cuda", amp=True, device_rng=True)
    res = train_all(specs, torch.device("cuda"), progress=False)
    assert [r["shared_stage1"] for r in res["runs"]] == [False, True, False]
    assert all(torch.isfinite(torch.tensor(r["loss/total"])) for r in res["runs"])


def test_a_method_with_its_own_batches_gets_its_own_stream_unless_it_names_one():
    from world_model.config import make_config
    from world_model.methods import DynamicsMethod, MAE3DMethod, build_method, data_stream

    mc, tc = make_config("tiny", **SMALL)
    assert [data_stream(build_method(mc, m, tc)) for m in ("navwm", "mae2d", "mae3d", "random_init")] == \
        ["clips", "clips", "crops", None]

    class Jumps(DynamicsMethod):  # new data, no stream named: never shares the clips
        def batches(self, *a):
            return super().batches(*a)

    class NamedJumps(Jumps):
        stream = "jumps"

    class Crops(MAE3DMethod):  # the same data as its parent: shares it
        pass

    assert data_stream(Jumps(mc, "navwm").configure(tc)) == "navwm"
    assert data_stream(NamedJumps(mc, "navwm").configure(tc)) == "jumps"
    assert data_stream(Crops(mc, "mae3d", 4, tokenizer=False, mae3d=True).configure(tc)) == "crops"


def test_every_run_stops_at_the_same_step_at_the_training_deadline(tmp_path):
    import time

    specs = _specs(tmp_path, ["navwm", "shuffled", "tokenizer"], steps=50)
    res = train_all(specs, torch.device("cpu"), deadline=time.time(), progress=False)
    assert res["stopped_early"] and res["steps"] == 1 and res["planned_steps"] == 50  # log_every=1: the first check
    assert len({r["frames"] for r in res["runs"]}) == 1 and res["runs"][0]["step"] == 1
    assert res["runs"][1]["shared_stage1"] and res["runs"][1]["loss/total"] == res["runs"][0]["loss/total"]
