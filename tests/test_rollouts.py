"""Rollout shards: determinism, resume, window/action alignment, loaders, CLIs, bad inputs."""

import json
import os

import numpy as np
import pytest
import torch

from navgym.render import render_slices
from navgym.subjects import load_subjects
from navgym.rollouts import (
    ARRAYS,
    RolloutConfig,
    RolloutWindows,
    StreamingWindows,
    generate_shard,
    write_rollouts,
)
from navgym.rollouts.cli import contact_sheet, rollouts_main, video_main
from navgym.simulator import Navigator
from navgym.tasks import make_task

TINY = dict(episodes=7, steps=10, size=16, episodes_per_shard=3, seed=5)


def _read(root):
    out = {}
    for d in sorted(n for n in os.listdir(root) if n.startswith("shard-")):
        for name in ARRAYS:
            out[d, name] = np.load(os.path.join(root, d, name + ".npy"))
        with open(os.path.join(root, d, "meta.json")) as f:
            out[d, "meta"] = json.load(f)
    return out


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if k[1] == "meta":
            assert a[k] == b[k], k
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ref"))
    card = write_rollouts(RolloutConfig(**TINY), root, workers=0, progress=False)
    return root, card


def test_layout_and_manifest(reference):
    root, card = reference
    data = _read(root)
    assert card["complete"] and card["counts"] == {
        "shards": 3, "shards_expected": 3, "episodes": 7, "frames": 70, "subjects": 1,
    }
    assert data["shard-000002", "frames"].shape == (1, 10, 16, 16)  # the last shard holds the remainder
    assert data["shard-000000", "frames"].dtype == np.uint8
    for name, shape in [("actions", (3, 10, 7)), ("actions_physical", (3, 10, 7)), ("poses", (3, 10, 13))]:
        assert data["shard-000000", name].shape == shape and data["shard-000000", name].dtype == np.float32
    meta = data["shard-000001", "meta"]
    assert meta["seed"] == [5, 1] and meta["policy"] == "mix" and meta["subject_ids"] == ["MNI152_2009"] * 3
    assert card["versions"]["numpy"] == np.__version__ and card["config"]["seed"] == 5
    assert data["shard-000000", "frames"].std() > 10  # real images, not blanks
    # the dataset card says how predictable the actions are (mix: smooth behaviours, clearly > 0)
    ac = [data[f"shard-00000{k}", "meta"]["actions_lag1_autocorr"] for k in range(3)]
    assert card["actions_lag1_autocorr"] == pytest.approx((3 * ac[0] + 3 * ac[1] + ac[2]) / 7) and ac[0] > 0.2


def test_same_seed_same_shards_across_processes_and_jobs(reference, tmp_path):
    root, _ = reference
    ref = _read(root)
    write_rollouts(RolloutConfig(**TINY), str(tmp_path / "pool"), workers=2, progress=False)
    _same(ref, _read(tmp_path / "pool"))
    jobs = str(tmp_path / "jobs")
    for j in (1, 0):
        card = write_rollouts(RolloutConfig(**TINY), jobs, workers=0, job_index=j, num_jobs=2, progress=False)
    assert card["complete"]
    _same(ref, _read(jobs))
    write_rollouts(RolloutConfig(**{**TINY, "seed": 6}), str(tmp_path / "other"), progress=False)
    assert not np.array_equal(ref["shard-000000", "frames"], _read(tmp_path / "other")["shard-000000", "frames"])


def test_resume_after_a_kill_loses_only_the_shard_in_flight(reference, tmp_path):
    root, _ = reference
    out = str(tmp_path / "run")
    card = write_rollouts(RolloutConfig(**TINY), out, max_shards=1, progress=False)
    assert not card["complete"] and card["counts"]["shards"] == 1
    first = os.stat(os.path.join(out, "shard-000000", "frames.npy"))
    # a killed worker leaves a half-written temporary shard behind
    junk = os.path.join(out, ".tmp-shard-000001-j0-999")
    os.makedirs(junk)
    open(os.path.join(junk, "frames.npy"), "wb").write(b"partial")
    with pytest.raises(FileNotFoundError):
        RolloutWindows(str(tmp_path / "missing"))
    assert len(RolloutWindows(out, window=4)) == 3 * 7  # readers only see finished shards
    card = write_rollouts(RolloutConfig(**TINY), out, progress=False)
    assert card["complete"] and not os.path.exists(junk)
    assert os.stat(os.path.join(out, "shard-000000", "frames.npy")).st_mtime_ns == first.st_mtime_ns  # not redone
    _same(_read(root), _read(out))
    with pytest.raises(ValueError, match="different config"):
        write_rollouts(RolloutConfig(**{**TINY, "size": 32}), out, progress=False)


def test_windows_align_frames_poses_and_actions(reference):
    """Frame t renders at pose t; action t applied to pose t (the env's dynamics) gives pose t + 1."""
    root, _ = reference
    ds = RolloutWindows(root, window=6, stride=2)
    assert len(ds) == 7 * 3
    subject = load_subjects("template")[0]
    config = RolloutConfig(**TINY).nav_config()
    nav = Navigator(6, [subject], make_task("explore"), config)
    for i in range(6):
        nav.reset(i, np.random.default_rng(i))
    for index in (0, 4, len(ds) - 1):
        w = ds[index]
        assert w["frames"].shape == (6, 16, 16) and w["frames"].dtype == torch.uint8
        assert w["subject_id"] == "MNI152_2009"
        poses = w["poses"].double().numpy()
        c, r, f = poses[:, :3], poses[:, 3:12].reshape(-1, 3, 3), poses[:, 12]
        again = render_slices(subject.volume, c, r, f, (16, 16), out=np.empty((6, 16, 16), np.uint8))
        assert np.abs(again.astype(int) - w["frames"].numpy()).max() <= 1  # float32 pose rounding only
        nav.centers, nav.rotations, nav.fovs = c.copy(), r.copy(), f.copy()
        nav.step(w["actions"].double().numpy())
        np.testing.assert_allclose(nav.centers[:-1], c[1:], atol=1e-3)
        np.testing.assert_allclose(nav.rotations[:-1], r[1:], atol=1e-5)
        np.testing.assert_allclose(nav.fovs[:-1], f[1:], rtol=1e-5)
        np.testing.assert_allclose(w["actions_physical"], w["actions"] * torch.tensor(config.action_scale(), dtype=torch.float32), rtol=1e-6)
        np.testing.assert_allclose(w["template_poses"], w["poses"], atol=1e-4)  # the template is its own template
    s, e, t = ds.locate(4)
    assert (s, e, t) == (0, 1, 2)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_dataloader_workers(reference):
    root, _ = reference
    ds = RolloutWindows(root, window=4)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert sum(len(b["frames"]) for b in batches) == len(ds)
    assert batches[0]["frames"].shape == (8, 4, 16, 16) and batches[0]["template_poses"].shape == (8, 4, 13)
    assert batches[0]["subject_id"] == ["MNI152_2009"] * 8


def test_synthetic_subjects_have_template_poses(tmp_path):
    cfg = RolloutConfig(subjects="synthetic:12", split="train", episodes=4, steps=3, size=16, episodes_per_shard=4, subjects_per_shard=2)
    arrays, meta = generate_shard(cfg, 0)
    assert len(set(meta["subject_ids"])) == 2 and all(s.startswith("synth") for s in meta["subject_ids"])
    assert np.isfinite(arrays["template_poses"]).all()
    assert np.abs(arrays["template_poses"][..., :3] - arrays["poses"][..., :3]).max() > 1.0  # a real warp
    rot = arrays["template_poses"][..., 3:12].reshape(-1, 3, 3).astype(float)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)


def test_oracle_rollouts_reach_the_target():
    cfg = RolloutConfig(policy="oracle", task="landmark", episodes=4, steps=40, size=8, episodes_per_shard=4)
    arrays, _ = generate_shard(cfg, 0)
    target = load_subjects("template")[0].landmarks["AC"]
    assert np.linalg.norm(arrays["poses"][:, -1, :3] - target, axis=1).max() < 3.0


def test_streaming_windows():
    ds = StreamingWindows("template", policy="smooth", window=5, size=16, seed=1, episodes_per_chunk=4, episode_steps=10, max_windows=12)
    items = list(ds)
    assert len(items) == 12
    w = items[0]
    assert w["frames"].shape == (5, 16, 16) and w["frames"].dtype == torch.uint8 and w["actions"].shape == (5, 7)
    assert set(w) == {"frames", "actions", "actions_physical", "poses", "template_poses", "subject_id"}
    # an episode of 10 steps is cut into two windows: window 1 continues window 0
    nav = Navigator(1, load_subjects("template"), make_task("explore"), ds.config)
    nav.reset(0, np.random.default_rng(0))
    last = items[0]["poses"][-1].double().numpy()
    nav.centers, nav.rotations, nav.fovs = last[None, :3].copy(), last[3:12].reshape(1, 3, 3).copy(), last[None, 12].copy()
    nav.step(items[0]["actions"][-1:].double().numpy())
    np.testing.assert_allclose(nav.pose_array()[0], items[1]["poses"][0], atol=1e-3)
    again = list(ds)
    np.testing.assert_array_equal(items[3]["frames"], again[3]["frames"])
    subject = load_subjects("template")[0]
    p = w["poses"].double().numpy()
    img = render_slices(subject.volume, p[:, :3], p[:, 3:12].reshape(-1, 3, 3), p[:, 12], (16, 16), out=np.empty((5, 16, 16), np.uint8))
    assert np.abs(img.astype(int) - w["frames"].numpy()).max() <= 1
    batched = StreamingWindows("template", window=5, size=16, seed=1, batch_size=4, episodes_per_chunk=4, max_windows=8)
    loader = torch.utils.data.DataLoader(batched, batch_size=None, num_workers=2)
    batches = list(loader)
    assert len(batches) == 4 and batches[0]["frames"].shape == (4, 5, 16, 16)
    assert not torch.equal(batches[0]["frames"], batches[1]["frames"])  # the two workers differ


def test_cli_rollouts_and_video(tmp_path, capsys):
    out = str(tmp_path / "ro")
    assert rollouts_main(["--episodes", "3", "--steps", "4", "--size", "16", "--out", out, "--workers", "0", "--quiet", "--policy", "sweep"]) == 0
    assert "1/1 shards, 3 episodes, 12 frames" in capsys.readouterr().out
    gif = str(tmp_path / "ep.gif")
    assert video_main(["--rollouts", out, "--episode", "2", "--out", gif]) == 0
    assert os.path.getsize(gif) > 1000 and os.path.exists(str(tmp_path / "ep_sheet.png"))
    assert video_main(["--steps", "3", "--size", "16", "--out", gif, "--sheet", str(tmp_path / "s.png")]) == 0
    with pytest.raises(SystemExit) as e:
        video_main(["--out", str(tmp_path / "x.avi")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        rollouts_main(["--episodes", "0", "--out", out])
    assert e.value.code == 2 and "episodes must be >= 1" in capsys.readouterr().err
    assert contact_sheet(np.zeros((5, 4, 4), np.uint8), columns=2).shape == (3 * 6 - 2, 2 * 6 - 2)


def test_bad_inputs(reference, tmp_path):
    root, _ = reference
    with pytest.raises(ValueError, match="unknown policy"):
        RolloutConfig(policy="nope")
    with pytest.raises(ValueError, match="oracle"):
        RolloutConfig(policy="oracle")
    with pytest.raises(ValueError, match="NavConfig"):
        RolloutConfig(nav_overrides={"warp": 1})
    with pytest.raises(ValueError, match="size"):
        RolloutConfig(size=2)
    with pytest.raises(ValueError, match="split"):
        RolloutConfig(split="training")
    with pytest.raises(ValueError, match="job_index"):
        write_rollouts(RolloutConfig(**TINY), str(tmp_path / "x"), job_index=2, num_jobs=2)
    with pytest.raises(ValueError, match="out of range"):
        generate_shard(RolloutConfig(**TINY), 3)
    with pytest.raises(ValueError, match="longer than the episodes"):
        RolloutWindows(root, window=11)
    with pytest.raises(ValueError, match="window"):
        RolloutWindows(root, window=0)
    with pytest.raises(ValueError, match="episode_steps"):
        StreamingWindows(window=8, episode_steps=4)


def test_shards_cover_all_subjects_evenly():
    cfg = RolloutConfig(subjects="synthetic:50", episodes=640, episodes_per_shard=64)  # 10 shards -> 5 subjects each
    idx = np.concatenate([cfg.shard_subjects(k, 50) for k in range(cfg.num_shards)])
    assert len(np.unique(cfg.shard_subjects(3, 50))) == 5
    counts = np.bincount(idx, minlength=50)
    assert counts.min() >= 12 and counts.max() <= 13
    assert RolloutConfig(subjects_per_shard=0).shard_subjects(0, 50) is None  # free draws


def test_streaming_with_the_torch_renderer_matches_numba():
    """device= renders with TorchRenderer (CPU here; "cuda" on a GPU): same poses, frames within one level."""
    kw = dict(window=5, size=16, seed=1, episodes_per_chunk=4, max_windows=4)
    numba_items = list(StreamingWindows("template", **kw))
    torch_items = list(StreamingWindows("template", device="cpu", **kw))
    for a, b in zip(numba_items, torch_items):
        assert torch.equal(a["poses"], b["poses"]) and b["frames"].dtype == torch.uint8
        assert (a["frames"].int() - b["frames"].int()).abs().max() <= 1


def test_a_shard_finished_by_another_writer_is_kept(tmp_path):
    from navgym.rollouts.generate import write_shard

    arrays, meta = generate_shard(RolloutConfig(**TINY), 0)
    first = write_shard(str(tmp_path), 0, arrays, meta)
    stamp = os.stat(os.path.join(first, "frames.npy")).st_mtime_ns
    assert write_shard(str(tmp_path), 0, arrays, meta) == first
    assert os.stat(os.path.join(first, "frames.npy")).st_mtime_ns == stamp
    assert sorted(os.listdir(tmp_path)) == ["shard-000000"]


def test_damaged_or_edited_shards_are_named(reference, tmp_path, capsys):
    import shutil

    src, _ = reference
    fresh = lambda name: shutil.copytree(src, tmp_path / name)  # noqa: E731

    root = fresh("flip")  # a byte flipped in place: same size, found by the checksum on first read
    path = root / "shard-000001" / "frames.npy"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    ds = RolloutWindows(str(root), window=4)
    ds[0]  # shard 0 is sound
    with pytest.raises(ValueError, match=r"shard-000001/frames\.npy: sha256 differs"):
        ds[int(ds.offsets[1])]  # shard 1's first window
    assert RolloutWindows(str(root), window=4, checksums=False)[int(ds.offsets[1])]  # opted out: read as it is
    write_rollouts(RolloutConfig(**TINY), str(root), progress=False, verify=True)
    assert "shard-000001/frames.npy: sha256 differs" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(path), np.load(os.path.join(src, "shard-000001", "frames.npy")))

    root = fresh("nan")  # NaN actions in a shard whose checksums match (written so): named on read
    path = root / "shard-000000" / "actions.npy"
    actions = np.load(path)
    actions[1, 2, 0] = np.nan
    np.save(path, actions)
    ds = RolloutWindows(str(root), window=4, checksums=False)
    ds[0]
    with pytest.raises(ValueError, match=r"shard-000000/actions\.npy: NaN/inf in episode 1, steps 0\.\.3"):
        ds[ds.starts_per_episode]

    root = fresh("header")  # an edited .npy header (same length, same file size)
    path = root / "shard-000000" / "poses.npy"
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"(3, 10, 13)", b"(3, 10, 12)", 1))
    with pytest.raises(ValueError, match=r"shard-000000/poses\.npy holds float32 \(3, 10, 12\), meta\.json implies "
                                         r"float32 \(3, 10, 13\)"):
        RolloutWindows(str(root), window=4)

    root = fresh("nometa")  # a deleted meta.json: named, not skipped
    (root / "shard-000002" / "meta.json").unlink()
    with pytest.raises(ValueError, match=r"shard-000002/meta\.json is missing"):
        RolloutWindows(str(root), window=4)

    root = fresh("noshard")  # a shard listed in the dataset card but gone
    shutil.rmtree(root / "shard-000001")
    with pytest.raises(ValueError, match=r"manifest\.json does not match .* listed but missing: \['shard-000001'\]"):
        RolloutWindows(str(root), window=4)

    root = fresh("episodes")  # meta.json's episodes edited 3 -> 5: refused on open, rebuilt by --verify
    meta = root / "shard-000000" / "meta.json"
    m = json.loads(meta.read_text())
    meta.write_text(json.dumps({**m, "episodes": 5}))
    with pytest.raises(ValueError, match=r"shard-000000/meta\.json records episodes 5, expected 3"):
        RolloutWindows(str(root), window=4)
    write_rollouts(RolloutConfig(**TINY), str(root), progress=False, verify=True)
    assert "records episodes 5, expected 3" in capsys.readouterr().err
    assert json.loads(meta.read_text())["episodes"] == 3 and len(RolloutWindows(str(root), window=4)) == len(ds)


def test_trainer_refuses_shards_of_another_frame_size(reference):
    from world_model.config import make_config
    from world_model.data import clip_batches

    root, _ = reference
    mc, tc = make_config("tiny", data=root, size=32, window=3, batch=2)
    with pytest.raises(ValueError, match=r"shards hold 16-px frames, the model takes 32 px; pass --size 16"):
        next(clip_batches(tc, mc))


def test_progress_moves_per_episode(reference, tmp_path, monkeypatch):
    """The bar counts episodes as they are rendered (in workers too), not once per shard."""
    root, _ = reference
    calls = []
    arrays, _ = generate_shard(RolloutConfig(**TINY), 0, on_episode=lambda: calls.append(1))
    assert len(calls) == 3 == len(arrays["frames"])
    import tqdm.auto

    updates = []

    class Bar(tqdm.auto.tqdm):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    write_rollouts(RolloutConfig(**TINY), str(tmp_path / "here"), workers=0, progress=True)
    assert updates == [1] * 7  # shards of 3 episodes
    updates.clear()
    write_rollouts(RolloutConfig(**TINY), str(tmp_path / "pool"), workers=1, progress=True)
    assert sum(updates) == 7  # polled from the workers' shared counter
    _same(_read(root), _read(tmp_path / "pool"))


def test_simulate_old_homes_are_deprecated_aliases():
    import navgym.rollouts
    import navgym.rollouts.generate
    from navgym.simulator import simulate

    for module in (navgym.rollouts, navgym.rollouts.generate):
        with pytest.warns(DeprecationWarning, match="navgym.simulator.simulate"):
            assert module.simulate is simulate


def test_write_video_old_home_is_a_deprecated_alias():
    import navgym.rollouts.cli
    from navgym.viz import write_video

    with pytest.warns(DeprecationWarning, match="navgym.viz.write_video"):
        assert navgym.rollouts.cli.write_video is write_video
