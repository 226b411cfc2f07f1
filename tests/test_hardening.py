"""Bad inputs and faults: each is refused with a clear error naming the argument or file,
concurrent rendering does not abort the process, and damaged or concurrently written rollouts are
detected, named and rebuilt.  docs/validation.md lists what is validated."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import nibabel as nib
import numpy as np
import pytest

import navgym  # noqa: F401  (registers MRINav-v0)
from navgym.env import MRINavEnv, MRINavVectorEnv
from navgym.rollouts import RolloutConfig, RolloutWindows, write_rollouts
from navgym.rollouts.cli import rollouts_main, video_main
from navgym.rollouts.generate import ARRAYS, check_shard
from navgym.tasks import LandmarkTask, PlaneTask
from navgym.volume import VolumeError, load_volume

SMALL = dict(size=32)
NAN, INF = float("nan"), float("inf")

ENV_ARGS = [  # (env kwargs, words the message must contain)
    (dict(max_fov=NAN), "max_fov"),
    (dict(max_fov=INF), "max_fov"),
    (dict(max_fov=-5.0), "max_fov"),
    (dict(max_fov=5.0), "max_fov.*min_fov"),
    (dict(min_fov=0.0), "min_fov"),
    (dict(fov=NAN), "fov"),
    (dict(size=(64,)), "size"),
    (dict(size=None), "size"),
    (dict(size=64.7), "size"),
    (dict(size="64"), "size"),
    (dict(size=(64, 2000)), "size"),
    (dict(max_translation_mm="5"), "max_translation_mm"),
    (dict(task="landmark", task_kwargs={"landmark": "AC", "success_mm": NAN}), "success_mm"),
    (dict(task="landmark", task_kwargs={"landmark": "AC", "success_mm": -1.0}), "success_mm"),
    (dict(task="landmark", task_kwargs={"success_mm": 0.0}), "success_mm"),
    (dict(task="plane", task_kwargs={"success_deg": NAN}), "success_deg"),
    (dict(task="plane", task_kwargs={"success_deg": 0.0}), "success_deg"),
    (dict(task="plane", task_kwargs={"success_mm": -2.0}), "success_mm"),
    (dict(task="plane", task_kwargs={"mm_per_degree": -1.0}), "mm_per_degree"),
    (dict(task="landmark", task_kwargs={"success_bonus": INF}), "success_bonus"),
]


@pytest.mark.parametrize("kwargs, words", ENV_ARGS)
def test_bad_env_arguments_name_the_argument(kwargs, words):
    with pytest.raises(ValueError, match=words):
        MRINavEnv(**{**SMALL, **kwargs})


def test_good_values_still_work():
    env = MRINavEnv(size=(32, 48), max_fov=200.0, task="landmark", task_kwargs={"success_mm": 2})
    obs, info = env.reset(seed=0)
    assert obs.shape == (1, 32, 48) and np.isfinite(info["fov_mm"]) and info["fov_mm"] <= 200.0
    assert LandmarkTask(success_mm=1).success_mm == 1 and PlaneTask(mm_per_degree=0.0).mm_per_degree == 0.0


VECTOR_ARGS = [
    (dict(max_episode_steps=0), "max_episode_steps"),
    (dict(max_episode_steps=-3), "max_episode_steps"),
    (dict(max_episode_steps=2.5), "max_episode_steps"),
    (dict(num_envs=0), "num_envs"),
    (dict(autoreset_mode="Disabled"), "autoreset_mode"),
    (dict(episode_seed=-1), "episode_seed"),
    (dict(episode_seed=1.5), "episode_seed"),
]


@pytest.mark.parametrize("kwargs, words", VECTOR_ARGS)
def test_bad_vector_env_arguments_name_the_argument(kwargs, words):
    with pytest.raises(ValueError, match=words):
        MRINavVectorEnv(**{**SMALL, **kwargs})


VECTOR_SEEDS = [([1, 2, 3], "seed"), ([1, "x"], r"seed\[1\]"), ([1, -2], r"seed\[1\]"), ("12", "seed")]


@pytest.mark.parametrize("seed, words", VECTOR_SEEDS)
def test_bad_vector_env_seeds_name_the_argument(seed, words):
    venv = MRINavVectorEnv(2, **SMALL)
    with pytest.raises(ValueError, match=words):
        venv.reset(seed=seed)


# --- volumes ------------------------------------------------------------------------------
def _blob(shape=(12, 10, 8), dtype=np.float32):
    return np.random.default_rng(0).uniform(0, 100, shape).astype(dtype)


EYE = np.eye(4)


def _nifti(tmp_path, data, name="vol.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, EYE), str(path))
    return path


VOLUMES = [  # (source builder, load_volume kwargs, words)
    (lambda p: _blob(), dict(affine=np.diag([1e300, 1e300, 1e300, 1])), "affine"),
    (lambda p: _blob(), dict(affine=np.diag([1e5, 1, 1, 1])), "affine scales a voxel"),
    (lambda p: _blob(), dict(affine=np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1.0]])), "not invertible"),
    (lambda p: _blob(), dict(affine=np.diag([1, 1, 1e-9, 1])), "not invertible"),
    (lambda p: _blob(), dict(affine=np.array([[1, 0, 0, 1e6], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])), "world origin"),
    (lambda p: _blob() * (1 + 1j), dict(affine=EYE), "complex"),
    (lambda p: np.ones((1, 1, 1), np.float32), dict(affine=EYE), "too small"),
    (lambda p: _blob((1, 10, 8)), dict(affine=EYE), "too small"),
    (lambda p: np.full((4, 4, 4), "a"), dict(affine=EYE), "numbers"),
    (lambda p: np.full((4, 4, 4), None, object), dict(affine=EYE), "numbers"),
    (lambda p: _blob(), dict(affine=EYE, nan="bogus"), "nan must be 'raise' or 'zero'"),
    (lambda p: _nifti(p, (_blob() * (1 + 2j)).astype(np.complex64)), {}, "complex"),
]


@pytest.mark.parametrize("make, kwargs, words", VOLUMES)
def test_bad_volumes_are_refused_clearly(tmp_path, make, kwargs, words):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no ComplexWarning on the way to the error
        with pytest.raises(ValueError, match=words):
            load_volume(make(tmp_path), **kwargs)


def test_rgb_nifti_is_refused_naming_the_file(tmp_path):
    rgb = np.zeros((6, 5, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.arange(6)[:, None, None]
    path = tmp_path / "colour.nii"
    nib.save(nib.Nifti1Image(rgb, EYE), str(path))
    with pytest.raises(VolumeError, match="colour.*RGB"):
        load_volume(path)


def test_tiny_voxels_are_accepted():
    """0.002 mm voxels: a scale-invariant invertibility test, not an absolute determinant threshold."""
    vol = load_volume(_blob(), np.diag([0.002, 0.002, 0.002, 1]))
    assert np.allclose(vol.spacing, 0.002) and vol.extent_mm > 0
    oblique = np.array([[0, -0.002, 0, 1], [0, 0, 0.003, 2], [0.0025, 0, 0.0001, 3], [0, 0, 0, 1]])
    assert np.isfinite(load_volume(_blob(), oblique).inverse_affine).all()


# --- concurrency ---------------------------------------------------------------------------
THREADS = textwrap.dedent(
    """
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np, navgym
    from navgym import render
    assert render.numba.get_num_threads() > 1  # so the parallel kernels are used
    vol = navgym.template_subject().volume
    rng = np.random.default_rng(0)
    c = vol.brain_center + rng.uniform(-20, 20, (8, 3))
    r, f = np.tile(np.eye(3), (8, 1, 1)), np.full(8, 180.0)
    ref = render.render_slices(vol, c, r, f, (128, 128))
    def job(k):
        for _ in range(20):
            out = render.render_slices(vol, c, r, f, (128, 128), labels=bool(k % 2))
            assert k % 2 or np.array_equal(out, ref)
        return k
    with ThreadPoolExecutor(4) as ex:
        print("done", sorted(ex.map(job, range(8))))
    """
)


def test_concurrent_rendering_from_threads_does_not_abort():
    """Before the fix numba's workqueue layer killed the process (SIGABRT): run it in a subprocess."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done [0, 1, 2, 3, 4, 5, 6, 7]" in proc.stdout


# --- rollouts ------------------------------------------------------------------------------
TINY = dict(episodes=7, steps=10, size=16, episodes_per_shard=3, seed=5)
TINY_ARGS = ["--episodes", "7", "--steps", "10", "--size", "16", "--episodes-per-shard", "3", "--seed", "5",
             "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ref"))
    write_rollouts(RolloutConfig(**TINY), root, progress=False)
    return {d: {n: np.load(os.path.join(root, d, n + ".npy")) for n in ARRAYS} for d in _shards(root)}


def _shards(root):
    return sorted(n for n in os.listdir(root) if n.startswith("shard-"))


def _same_as_reference(root, reference):
    assert _shards(root) == sorted(reference)
    for d, arrays in reference.items():
        assert check_shard(os.path.join(root, d), checksums=True) == []
        for n, a in arrays.items():
            np.testing.assert_array_equal(np.load(os.path.join(root, d, n + ".npy")), a, err_msg=f"{d}/{n}")


def test_shards_record_sizes_and_checksums(tmp_path):
    card = write_rollouts(RolloutConfig(**TINY), str(tmp_path), progress=False)
    meta = json.loads((tmp_path / "shard-000000" / "meta.json").read_text())
    assert set(meta["files"]) == {n + ".npy" for n in ARRAYS}
    assert meta["files"]["frames.npy"]["bytes"] == (tmp_path / "shard-000000" / "frames.npy").stat().st_size
    assert card["shards"][0]["files"] == meta["files"] and len(meta["files"]["frames.npy"]["sha256"]) == 64


def test_a_shard_being_written_by_another_process_is_left_alone(tmp_path, reference, capsys):
    """A second writer skips the shard a first one holds (its lock), keeps its temporary folder, says so."""
    out = str(tmp_path / "run")
    os.makedirs(out)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, sys
            from navgym.rollouts.generate import shard_lock
            with shard_lock({out!r}, 1) as held:
                assert held
                os.makedirs(os.path.join({out!r}, ".tmp-shard-000001-other"))
                print("holding", flush=True)
                sys.stdin.read()  # until the test closes stdin
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert rollouts_main(TINY_ARGS + ["--out", out]) == 0
        err = capsys.readouterr().err
        assert "[1]" in err and "another process" in err
        assert _shards(out) == ["shard-000000", "shard-000002"]
        assert os.path.isdir(os.path.join(out, ".tmp-shard-000001-other"))  # not deleted under the writer
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert rollouts_main(TINY_ARGS + ["--out", out]) == 0  # the holder died: its leftovers go, shard 1 is built
    assert not os.path.exists(os.path.join(out, ".tmp-shard-000001-other"))
    _same_as_reference(out, reference)


def test_two_concurrent_writers_both_finish(tmp_path, reference):
    out = str(tmp_path / "both")
    cmd = [sys.executable, "-c", "import sys; from navgym.rollouts.cli import rollouts_main; "
           "sys.exit(rollouts_main(sys.argv[1:]))", *TINY_ARGS, "--out", out]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (o, e) in zip(procs, results):
        assert p.returncode == 0, e[-2000:]
        assert "No such file" not in e
    _same_as_reference(out, reference)
    card = json.loads((tmp_path / "both" / "manifest.json").read_text())  # the last card written lists every shard
    assert card["complete"] and [s["dir"] for s in card["shards"]] == sorted(reference)
    assert len(RolloutWindows(out, window=4)) > 0


@pytest.mark.parametrize("damage", ["delete meta", "truncate frames", "delete actions"])
def test_damaged_shards_are_named_and_rebuilt_on_resume(tmp_path, reference, capsys, damage):
    out = str(tmp_path / "run")
    write_rollouts(RolloutConfig(**TINY), out, progress=False)
    shard = os.path.join(out, "shard-000001")
    if damage == "delete meta":
        os.remove(os.path.join(shard, "meta.json"))
        named = "shard-000001/meta.json"
    elif damage == "truncate frames":
        with open(os.path.join(shard, "frames.npy"), "r+b") as f:
            f.truncate(200)
        named = "shard-000001/frames.npy"
        with pytest.raises(ValueError, match=named):
            RolloutWindows(out, window=4)
    else:
        os.remove(os.path.join(shard, "actions.npy"))
        named = "shard-000001/actions.npy"
    card = write_rollouts(RolloutConfig(**TINY), out, progress=False)
    assert named in capsys.readouterr().err
    assert card["complete"]
    _same_as_reference(out, reference)
    assert len(RolloutWindows(out, window=4)) == 7 * 7


def test_verify_finds_same_size_corruption_and_rebuilds(tmp_path, reference, capsys):
    out = str(tmp_path / "run")
    write_rollouts(RolloutConfig(**TINY), out, progress=False)
    path = os.path.join(out, "shard-000002", "poses.npy")
    with open(path, "r+b") as f:  # flip bytes in the data, same size: only the checksum sees it
        f.seek(-8, os.SEEK_END)
        f.write(b"\xff" * 8)
    assert check_shard(os.path.dirname(path)) == []
    assert "poses.npy" in check_shard(os.path.dirname(path), checksums=True)[0]
    assert rollouts_main(["--out", out, "--verify", "--quiet", "--workers", "0"]) == 0  # config from the folder
    captured = capsys.readouterr()
    assert "shard-000002/poses.npy" in captured.err and "sha256" in captured.err
    _same_as_reference(out, reference)


def test_rollout_read_errors_name_the_file(tmp_path, capsys):
    out = str(tmp_path / "run")
    write_rollouts(RolloutConfig(**TINY), out, progress=False)
    meta = os.path.join(out, "shard-000000", "meta.json")
    with open(meta, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="shard-000000/meta.json"):
        RolloutWindows(out, window=4)
    with pytest.raises(SystemExit):
        rollouts_main(["--out", str(tmp_path / "nothing"), "--verify", "--quiet"])
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rollouts_main(["--out", out, "--quiet"])  # --episodes needed without --verify
    assert "--episodes" in capsys.readouterr().err


def test_video_checks_its_output_format_before_simulating(tmp_path, capsys):
    with pytest.raises(SystemExit):
        video_main(["--out", str(tmp_path / "x.avi"), "--steps", "2", "--size", "16"])
    assert ".gif or .mp4" in capsys.readouterr().err
    from importlib.util import find_spec

    if find_spec("imageio_ffmpeg") is None:
        with pytest.raises(SystemExit):
            video_main(["--out", str(tmp_path / "x.mp4"), "--steps", "2", "--size", "16"])
        assert "imageio-ffmpeg" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # nothing simulated or written


# --- checkpoints ---------------------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_errors_name_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    from world_model.checkpoint import load_checkpoint

    good = tmp_path / "last.pt"
    torch.save({"config": {"a": 1}, "model": {"w": torch.zeros(500)}, "step": 3}, good)
    assert load_checkpoint(good)["step"] == 3
    data = good.read_bytes()
    cases = {
        "truncated.pt": (data[: len(data) // 2], ValueError, "truncated or corrupt"),
        "empty.pt": (b"", ValueError, "truncated or corrupt"),
        "garbage.pt": (b"hello, not a checkpoint", ValueError, "truncated or corrupt"),
    }
    for name, (payload, exc, words) in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(exc, match=f"{name}.*{words}"):
            load_checkpoint(tmp_path / name)
    torch.save(_Evil(), tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt.*not a plain-weights"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*not a navgym"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(IsADirectoryError, match="folder"):
        load_checkpoint(tmp_path)



def test_docs_rollouts_policy_snippet_runs():
    """The policy snippet in docs/rollouts.md runs as written (act, then act_batch on the same policy)."""
    import re

    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "rollouts.md")).read()
    snippet = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    scope = {}
    exec(compile(snippet, "docs/rollouts.md", "exec"), scope)
    assert scope["A"].shape == (4, 7) and scope["a"].shape == (7,)
