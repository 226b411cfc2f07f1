"""world_model: shapes, parameter matching, each method's compute_loss, contextual features, jumps,
the collapse flag, the device data path, overfitting, exact resume, data-parallel smoke run, safe
checkpoints, config errors and help, controllability."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from world_model import build_model, load_encoder
from world_model.config import METHODS, MODEL_SIZES, make_config
from world_model.encoders import count_params
from world_model.methods import collapse_diagnostics, controllability
from world_model.train import parse_args, train

ROOT = Path(__file__).resolve().parents[1]
# a small model on 32^2 slices and 3-frame clips from the template (fast on 2 shared cores)
SMALL = dict(size=32, width=4, latent=4, dim=16, depth=1, heads=2, patch=2, window=3, crop=16, voxel_mm=8.0)


def small(method="navwm", **kw):
    return make_config("tiny", method=method, subjects="template", batch=2, log_every=1, eval_every=1000,
                       threads=1, **{**SMALL, **kw})


@pytest.mark.parametrize("method", METHODS)
def test_shapes_and_feature_api(method):
    m = build_model(MODEL_SIZES["tiny"], method)
    frames = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    f = m.features(frames)
    assert f.shape == (3, m.feature_dim) and torch.isfinite(f).all()
    assert torch.allclose(m.features(frames.float()[:, None] / 255.0), f, atol=1e-5)  # float (B,1,H,W) too
    s = m.spatial_features(frames)
    assert s.dim() == 4 and s.shape[0] == 3
    if m.dynamics is not None:
        z = m.encode(frames)
        assert z.shape == (3, 8, 8, 8)
        assert m.predict(torch.stack([z, z], 1), torch.zeros(3, 2, 7)).shape == z.shape
        assert m.clip_features(torch.stack([frames, frames], 1), torch.zeros(3, 2, 7)).shape == f.shape
    with pytest.raises(ValueError, match="frames must be"):
        m.features(torch.zeros(2, 3, 64, 64))


def test_baseline_parameter_counts_match():
    for preset in ("tiny", "small"):
        ref = count_params(build_model(MODEL_SIZES[preset], "navwm"))
        for method in METHODS:
            n = count_params(build_model(MODEL_SIZES[preset], method))
            assert abs(n - ref) <= 0.2 * ref, (preset, method, n, ref)


def test_dynamics_is_block_causal_and_uses_actions():
    m = build_model(make_config("tiny", **SMALL)[0], "navwm")
    z = torch.randn(2, 3, *m.latent_shape)
    a = torch.rand(2, 3, 7) * 2 - 1
    p = m.dynamics(z, a)
    z2 = z.clone()
    z2[:, 2] += 1.0  # a later frame never changes earlier predictions
    assert torch.allclose(m.dynamics(z2, a)[:, :2], p[:, :2], atol=1e-6)
    a2 = a.clone()
    a2[:, 0] = -a2[:, 0]
    assert not torch.allclose(m.dynamics(z, a2)[:, 0], p[:, 0])


def test_tiny_batch_overfits():
    torch.manual_seed(0)
    m = build_model(make_config("tiny", **SMALL)[0], "navwm")
    frames = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    frames[:, :, 8:24, 8:24] = 255
    actions = torch.rand(4, 3, 7) * 2 - 1
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for i in range(150):
        rec, _ = m.tokenizer.compute_loss(frames.flatten(0, 1))
        z = m.tokenizer.encode(frames.flatten(0, 1)).reshape(4, 3, *m.latent_shape).detach()
        dyn = torch.nn.functional.mse_loss(m.dynamics(z, actions)[:, :-1], z[:, 1:])
        loss = rec + dyn
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = [float(rec.detach()), float(dyn.detach())] if first is None else first
    assert float(rec.detach()) < 0.5 * first[0] and float(dyn.detach()) < 0.2 * first[1]


def test_resume_gives_the_same_next_loss(tmp_path):
    mc, tc = small(steps=4, stage1_frac=0.5, out=str(tmp_path / "a"), ckpt_every=2)
    full = train(mc, tc, progress=False)
    mc, tc = small(steps=4, stage1_frac=0.5, out=str(tmp_path / "b"), ckpt_every=2)
    train(mc, tc, progress=False, stop_after=2)  # an interrupted job: checkpoint at step 2 of 4
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert state["step"] == 2 and not load_encoder(str(tmp_path / "b" / "last.pt")).finished
    resumed = train(mc, tc, progress=False)
    assert resumed["loss/total"] == pytest.approx(full["loss/total"], rel=1e-5, abs=1e-7)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert load_encoder(str(tmp_path / "b" / "last.pt")).finished


def test_data_parallel_smoke_gloo(tmp_path):
    out = tmp_path / "ddp"
    args = ["--method", "navwm", "--model-size", "tiny", "--subjects", "template", "--steps", "2", "--batch", "2",
            "--device", "cpu", "--threads", "1", "--stage1-frac", "0.5", "--out", str(out), "--eval-every", "1000"]
    args += sum([[f"--{k.replace('_', '-')}", str(v)] for k, v in SMALL.items()], [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29517", "-m", "world_model.train", *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 2 and state["config"]["train"]["method"] == "navwm"
    assert load_encoder(str(out / "last.pt")).method == "navwm"


FLAG = []


class _Evil:
    def __reduce__(self):
        return (FLAG.append, ("pwned",))


def test_checkpoints_never_unpickle_code(tmp_path):
    mc, tc = small("random", out=str(tmp_path / "r"))
    train(mc, tc, progress=False)
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    state["extra"] = _Evil()
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_encoder(str(tmp_path / "evil.pt"))
    assert FLAG == []
    loaded = load_encoder(str(tmp_path / "r" / "last.pt"))
    assert loaded.method == "random" and loaded.finished  # the initialised model takes no steps


def test_bad_config_values_give_clear_errors():
    with pytest.raises(ValueError, match="lr"):
        make_config("tiny", lr=0.0)
    with pytest.raises(ValueError, match="size"):
        make_config("tiny", size=60)
    with pytest.raises(ValueError, match="dim"):
        make_config("tiny", dim=30, heads=4)
    with pytest.raises(ValueError, match="unknown config fields"):
        make_config("tiny", widht=3)
    with pytest.raises(ValueError, match="model_size"):
        make_config("huge")
    with pytest.raises(SystemExit):
        parse_args(["--method", "vae"])
    with pytest.raises(SystemExit):
        parse_args(["--steps", "ten"])
    assert parse_args(["--model-size", "small", "--steps", "7", "--stride", "3"])[1].stride == 3
    with pytest.raises(SystemExit):
        parse_args(["--joint-loss", "cosine"])


def test_controllability_gap_is_zero_without_actions():
    m = build_model(make_config("tiny", **SMALL)[0], "noaction")
    frames = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    c = controllability(m, frames, torch.rand(4, 3, 7) * 2 - 1)
    assert c["delta_psnr"] == pytest.approx(0.0, abs=1e-6)
    assert set(c) >= {"psnr_true", "psnr_shuffled", "recon_psnr", "latent_mse_true"}
