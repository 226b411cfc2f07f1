"""Generate video-action rollouts: simulate a policy with the batched Navigator, then render.

Storage (one directory per shard, written atomically)::

    root/
      config.json                 the RolloutConfig (a resumed run must match it)
      manifest.json               dataset card: config, versions, counts, seeds, shards, subjects
      shard-000000/
        frames.npy                uint8 (E, T, H, W)
        actions.npy               float32 (E, T, 7)  normalised actions in [-1, 1]
        actions_physical.npy      float32 (E, T, 7)  mm x3, degrees x3, ln(fov_before / fov_after)
        poses.npy                 float32 (E, T, 13) subject world mm: centre, rotation row-major, fov
        template_poses.npy        float32 (E, T, 13) the same in template (MNI) mm (NaN if unknown)
        meta.json                 subject ids, policy, seeds, counts, each file's size and sha256
      .lock-shard-000000          lock file: held (flock) by the process writing that shard

Convention: frame t is rendered at pose t, and applying action t to pose t gives pose t + 1
(so an episode of T steps stores T frames and T actions; the last action's result is not stored).

Shard k holds episodes [k * E, (k + 1) * E) and depends only on (config, k): its random streams
come from ``SeedSequence([seed, k])``.  So any split into processes or jobs writes identical
shards, a killed run resumes by skipping finished shards, and job j of J writes shards k = j mod J.

Several writers may share an output folder: a writer holds shard k's lock file while it writes k
(in ``.tmp-shard-k-*``), skips shards another process holds, and removes only the temporary folders
of shards whose lock it holds.  On resume every finished shard is checked (:func:`check_shard`: meta.json's
counts against the config, each file's size and .npy header against meta.json; the sha256 checksums too with
``verify=True``); damaged or incomplete shards are reported, naming the file, and rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, fields

import numpy as np

from ..configs import config_field, from_dict, parse_json_dict, to_dict
from ..files import write_json_atomic
from ..geometry import pack_poses
from ..policies import POLICIES, action_autocorrelation, make_policy
from ..provenance import versions
from ..render import render_poses, render_slices
from .. import simulator
from ..simulator import NavConfig
from ..subjects import load_subjects
from ..tasks import make_task
from ..deprecation import moved_names, warn_deprecated

__all__ = [
    "RolloutConfig",
    "render_frames",
    "generate_shard",
    "write_rollouts",
    "shard_dirs",
    "check_shard",
    "verify_checksums",
    "ARRAYS",
]

ARRAYS = ("frames", "actions", "actions_physical", "poses", "template_poses")
_FORMAT = 1


@dataclass(frozen=True)
class RolloutConfig:
    """What to generate (``navgym-rollouts`` options).  Content depends on every field here; never on workers or
    jobs.  ``subjects_per_shard``: each shard uses m subjects (episode i -> the shard's subject i mod m), taken in
    turn from a seeded permutation so all are covered evenly; subjects are built or loaded per process (a
    synthetic one costs ~0.5 s), so few per shard keeps that cost amortised."""

    subjects: str = config_field("template", "subject spec: template, synthetic:N, a folder "
                                             "(navgym.subjects.load_subjects)")
    split: str | None = config_field(None, "only the subjects of this split", choices=("train", "val", "test"),
                                     show="all of them")
    policy: str = config_field("mix", "exploration policy (navgym.policies)", choices=tuple(sorted(POLICIES)))
    policy_kwargs: dict = config_field({}, "JSON options of the policy", parse=parse_json_dict)
    task: str = config_field("explore", "task (targets for the task-aware policies; the oracle needs landmark or "
                                        "plane)", choices=("explore", "landmark", "plane"))
    task_kwargs: dict = config_field({}, 'JSON task options, e.g. \'{"landmark": null}\'', parse=parse_json_dict)
    episodes: int = config_field(64, "number of episodes")
    steps: int = config_field(64, "steps (frames) per episode")
    size: int = config_field(64, "frame side in pixels (square frames)")
    seed: int = config_field(0, "base seed: shard k uses SeedSequence([seed, k])")
    episodes_per_shard: int = config_field(64, "episodes per shard file set")
    subjects_per_shard: int | None = config_field(None, "subjects per shard (0 = all subjects in every shard)",
                                                  show="the fewest covering all subjects")
    nav_overrides: dict = config_field({}, 'JSON NavConfig fields, e.g. \'{"fov": 150}\' (size is its own option)',
                                       parse=parse_json_dict)

    def __post_init__(self):
        if not isinstance(self.subjects, str):
            raise TypeError("RolloutConfig.subjects is a spec string (e.g. 'template', 'synthetic:200')")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose from {sorted(POLICIES)}")
        for name in ("episodes", "steps", "episodes_per_shard"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.subjects_per_shard is not None and int(self.subjects_per_shard) < 0:
            raise ValueError(f"subjects_per_shard must be >= 0, got {self.subjects_per_shard!r}")
        if self.split not in (None, "train", "val", "test"):
            raise ValueError(f"split must be None, 'train', 'val' or 'test', got {self.split!r}")
        if self.policy == "oracle" and self.task == "explore":
            raise ValueError("the oracle policy needs task='landmark' or 'plane' (explore has no target)")
        self.nav_config()  # validates size and nav_overrides
        make_task(self.task, **self.task_kwargs)

    @property
    def num_shards(self) -> int:
        return -(-self.episodes // self.episodes_per_shard)

    def shard_episodes(self, k: int) -> int:
        return min(self.episodes_per_shard, self.episodes - k * self.episodes_per_shard)

    def shard_subjects(self, k: int, num_subjects: int) -> np.ndarray | None:
        """(E,) subject index of each episode of shard k, or None to draw freely."""
        m = self.subjects_per_shard
        m = -(-num_subjects // self.num_shards) if m is None else int(m)
        if m == 0 or m >= num_subjects:
            return None
        perm = np.random.default_rng([self.seed, 0x5B7EC7]).permutation(num_subjects)
        chosen = perm[(k * m + np.arange(m)) % num_subjects]
        return chosen[np.arange(self.shard_episodes(k)) % m]

    def nav_config(self) -> NavConfig:
        unknown = set(self.nav_overrides) - {f.name for f in fields(NavConfig)} | ({"size"} & set(self.nav_overrides))
        if unknown:
            raise ValueError(f"unknown or duplicate NavConfig fields in nav_overrides: {sorted(unknown)} (size is its own option)")
        return NavConfig(size=(self.size, self.size), **self.nav_overrides)

    def to_json(self) -> dict:
        """Deprecated: :func:`navgym.configs.to_dict`."""
        warn_deprecated("RolloutConfig.to_json", "navgym.configs.to_dict")
        return to_dict(self)


def render_frames(subjects, sim: dict, size: int, device=None, renderers: dict | None = None):
    """uint8 (E, T, size, size) frames of a :func:`navgym.simulator.simulate` result (see
    :func:`navgym.render.render_poses`: a numpy array, or a tensor on a torch ``device``)."""
    e, t = sim["fovs"].shape
    frames = render_poses(
        subjects, np.repeat(sim["subject_index"], t), sim["centers"].reshape(-1, 3),
        sim["rotations"].reshape(-1, 3, 3), sim["fovs"].reshape(-1), (size, size), device=device, renderers=renderers,
    )
    return frames.reshape(e, t, size, size)


def pose_arrays(subjects, sim: dict) -> tuple[np.ndarray, np.ndarray]:
    """float32 (E, T, 13) poses in subject space and in template space (NaN where no transform)."""
    e, t = sim["fovs"].shape
    pack = lambda c, r, f: pack_poses(c, r, f).astype(np.float32)  # noqa: E731
    poses = pack(sim["centers"], sim["rotations"], sim["fovs"])
    template = np.full_like(poses, np.nan)
    for s in np.unique(sim["subject_index"]):
        subject = subjects[s]
        if subject.to_template is None:
            continue
        sel = np.flatnonzero(sim["subject_index"] == s)
        c, r, f = subject.poses_to_template(
            sim["centers"][sel].reshape(-1, 3), sim["rotations"][sel].reshape(-1, 3, 3), sim["fovs"][sel].reshape(-1)
        )
        template[sel] = pack(c, r, f).reshape(len(sel), t, 13)
    return poses, template


def generate_shard(config: RolloutConfig, k: int, subjects=None, on_episode=None) -> tuple[dict, dict]:
    """Arrays (see :data:`ARRAYS`) and meta of shard ``k``; a pure function of (config, k).  Frames are rendered
    one episode at a time; ``on_episode()`` is called after each (progress)."""
    if not 0 <= k < config.num_shards:
        raise ValueError(f"shard index {k} out of range [0, {config.num_shards})")
    subjects = load_subjects(config.subjects, config.split) if subjects is None else subjects
    n = config.shard_episodes(k)
    policy = make_policy(config.policy, **_policy_kwargs(config))
    task = make_task(config.task, **config.task_kwargs)
    sim = simulator.simulate(
        subjects, policy, task, config.nav_config(), n, config.steps, np.random.SeedSequence([config.seed, k]),
        config.shard_subjects(k, len(subjects)),
    )
    poses, template = pose_arrays(subjects, sim)
    frames = np.empty((n, config.steps, config.size, config.size), np.uint8)
    for e in range(n):
        frames[e] = render_frames(subjects, {key: v[e:e + 1] for key, v in sim.items()}, config.size)[0]
        if on_episode is not None:
            on_episode()
    arrays = {
        "frames": frames,
        "actions": sim["actions"],
        "actions_physical": sim["actions_physical"],
        "poses": poses,
        "template_poses": template,
    }
    meta = {
        "format": _FORMAT,
        "shard": k,
        "episodes": n,
        "steps": config.steps,
        "size": config.size,
        "first_episode": k * config.episodes_per_shard,
        "seed": [config.seed, k],
        "policy": config.policy,
        "actions_lag1_autocorr": action_autocorrelation(sim["actions"]) if config.steps > 1 else None,
        "subject_ids": [subjects[s].subject_id for s in sim["subject_index"]],
    }
    return arrays, meta


def _policy_kwargs(config: RolloutConfig) -> dict:
    kw = dict(config.policy_kwargs)
    if config.policy == "oracle":
        nav = config.nav_config()
        kw.setdefault("max_translation_mm", nav.max_translation_mm)
        kw.setdefault("max_rotation_deg", nav.max_rotation_deg)
    return kw


# --- storage -----------------------------------------------------------------------------
def shard_name(k: int) -> str:
    return f"shard-{k:06d}"


def shard_dirs(root) -> list[str]:
    """Finished shard directories under ``root``, sorted (temporary ones are ignored)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no rollout directory {root!r}")
    names = sorted(n for n in os.listdir(root) if n.startswith("shard-") and os.path.isfile(os.path.join(root, n, "meta.json")))
    return [os.path.join(root, n) for n in names]


def write_shard(root: str, k: int, arrays: dict, meta: dict) -> str:
    """Write shard ``k`` into a temporary directory, fsync, then rename it into place (atomic).

    ``meta.json`` (written last) records each array file's size and sha256 for :func:`check_shard`.
    """
    final = os.path.join(root, shard_name(k))
    tmp = tempfile.mkdtemp(prefix=f".tmp-{shard_name(k)}-", dir=root)  # unique per writer
    try:
        files = {}
        for name in ARRAYS:
            path = os.path.join(tmp, name + ".npy")
            with open(path, "wb") as f:
                np.save(f, arrays[name])
                f.flush()
                os.fsync(f.fileno())
            files[name + ".npy"] = {"bytes": os.path.getsize(path), "sha256": _sha256(path)}
        write_json_atomic(os.path.join(tmp, "meta.json"), {**meta, "files": files})
        try:
            os.replace(tmp, final)
        except OSError:  # another writer finished the same shard first (identical content): keep theirs
            if not os.path.isfile(os.path.join(final, "meta.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: dtype and trailing shape of each array (leading axes: episodes, steps)
ARRAY_LAYOUT = {"frames": ("uint8", None), "actions": ("float32", (7,)), "actions_physical": ("float32", (7,)),
                "poses": ("float32", (13,)), "template_poses": ("float32", (13,))}


def _npy_header(path: str) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, data offset) from a .npy file's header (memory-maps it; reads no data)."""
    a = np.load(path, mmap_mode="r", allow_pickle=False)
    return a.shape, a.dtype, a.offset


def shard_expect(config: RolloutConfig, k: int) -> dict:
    """What shard ``k``'s meta.json must record under ``config`` (for :func:`check_shard`)."""
    return {"shard": k, "episodes": config.shard_episodes(k), "steps": config.steps, "size": config.size}


def check_shard(path: str, checksums: bool = False, expect: dict | None = None) -> list[str]:
    """Problems of the finished shard directory ``path`` (empty if sound), each naming its file.

    Cheap checks, always: ``meta.json`` reads; its counts equal ``expect`` (any of ``shard``, ``episodes``,
    ``steps``, ``size``, e.g. from the config or the dataset card); every array file exists with the size
    recorded in meta.json, and its .npy header has the dtype and shape that meta.json's counts give
    (episodes x steps x ...), its data filling the file exactly.  With ``checksums`` also the sha256 of each file.
    """
    meta_path = os.path.join(path, "meta.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        return [f"{meta_path} is missing (unfinished or damaged shard)"]
    except (OSError, ValueError) as e:
        return [f"{meta_path} is unreadable: {e}"]
    problems = []
    try:
        n, t = int(meta["episodes"]), int(meta["steps"])
        size = meta.get("size")
        if len(meta["subject_ids"]) != n:
            problems.append(f"{meta_path}: {len(meta['subject_ids'])} subject_ids for {n} episodes")
    except (KeyError, TypeError, ValueError) as e:
        return [f"{meta_path} lacks episode counts ({type(e).__name__}: {e})"]
    for key, want in (expect or {}).items():
        if meta.get(key) != want:
            problems.append(f"{meta_path} records {key} {meta.get(key)!r}, expected {want!r} (edited or from another dataset?)")
    records = meta.get("files", {})
    for name in ARRAYS:
        file = os.path.join(path, name + ".npy")
        record = records.get(name + ".npy")
        if not os.path.isfile(file):
            problems.append(f"{file} is missing")
            continue
        if record is not None and os.path.getsize(file) != record["bytes"]:
            problems.append(f"{file} has {os.path.getsize(file)} bytes, meta.json records {record['bytes']} (truncated?)")
            continue
        dtype, tail = ARRAY_LAYOUT[name]
        want = (n, t, *((size, size) if tail is None and size is not None else tail or ()))
        try:
            shape, got, offset = _npy_header(file)
        except (OSError, ValueError) as e:
            problems.append(f"{file} is unreadable: {e}")
            continue
        if got != np.dtype(dtype) or (shape != want if tail is not None or size is not None else shape[:2] != want):
            problems.append(f"{file} holds {got} {shape}, meta.json implies {dtype} {want}")
        elif offset + got.itemsize * int(np.prod(shape)) != os.path.getsize(file):
            problems.append(f"{file} has {os.path.getsize(file)} bytes, its header implies {offset + got.itemsize * int(np.prod(shape))}")
        elif checksums and record is not None and _sha256(file) != record["sha256"]:
            problems.append(f"{file}: sha256 differs from the one in meta.json (corrupted)")
    return problems


def verify_checksums(path: str) -> list[str]:
    """sha256 problems of the finished shard ``path``'s array files (those meta.json records), each naming its file."""
    with open(os.path.join(path, "meta.json")) as f:
        records = json.load(f).get("files", {})
    return [f"{os.path.join(path, name)}: sha256 differs from the one in meta.json (corrupted)"
            for name, record in records.items() if _sha256(os.path.join(path, name)) != record["sha256"]]


@contextlib.contextmanager
def shard_lock(root: str, k: int):
    """Try to take shard ``k``'s lock file without waiting; yields whether this process holds it.

    An ``flock`` lock: released when the file closes, also when the process is killed (no stale locks).
    """
    fd = os.open(os.path.join(root, f".lock-{shard_name(k)}"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        yield held
    finally:
        os.close(fd)


#: the packages whose versions the dataset card records (:func:`navgym.provenance.versions`)
VERSIONS_OF = ("navgym", "numpy", "numba", "scipy", "nibabel")


def write_manifest(root: str, config: RolloutConfig) -> dict:
    """Scan finished shards and write ``manifest.json`` (atomic; safe to call from any job).

    Scan and write hold ``.lock-manifest``, so concurrent writers take turns and the last card written
    lists every shard finished before it (without the lock, a writer's older scan could land last)."""
    fd = os.open(os.path.join(root, ".lock-manifest"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _write_manifest(root, config)
    finally:
        os.close(fd)


def _write_manifest(root: str, config: RolloutConfig) -> dict:
    shards, subjects, acs = [], {}, []  # acs: (episodes, lag-1 autocorrelation) of the shards that record it
    for d in shard_dirs(root):
        with open(os.path.join(d, "meta.json")) as f:
            m = json.load(f)
        shards.append({"dir": os.path.basename(d), "shard": m["shard"], "episodes": m["episodes"], "seed": m["seed"],
                       "files": m.get("files")})
        if m.get("actions_lag1_autocorr") is not None:
            acs.append((m["episodes"], m["actions_lag1_autocorr"]))
        for s in m["subject_ids"]:
            subjects[s] = subjects.get(s, 0) + 1
    episodes = sum(s["episodes"] for s in shards)
    card = {
        "description": "navgym video-action rollouts: frame t rendered at pose t; action t moves pose t to pose t+1",
        "format": _FORMAT,
        "config": to_dict(config),
        "nav_config": to_dict(config.nav_config()),
        "versions": versions(VERSIONS_OF),
        "complete": len(shards) == config.num_shards,
        "counts": {"shards": len(shards), "shards_expected": config.num_shards, "episodes": episodes,
                   "frames": episodes * config.steps, "subjects": len(subjects)},
        "seeds": {"base": config.seed, "shard_seed": "SeedSequence([seed, shard])"},
        "arrays": {
            "frames": "uint8 (E, T, H, W)",
            "actions": "float32 (E, T, 7) normalised [-1, 1]: translate u, v, n; rotate u, v, n; zoom",
            "actions_physical": "float32 (E, T, 7) mm, mm, mm, deg, deg, deg, ln(fov_before/fov_after)",
            "poses": "float32 (E, T, 13) subject world RAS+ mm: centre (3), rotation row-major (9, columns u v n), fov mm",
            "template_poses": "float32 (E, T, 13) the same in template (MNI) mm; NaN without a transform",
        },
        "actions_lag1_autocorr": (sum(n * a for n, a in acs) / sum(n for n, _ in acs)) if acs else None,
        "subject_episodes": subjects,
        "shards": shards,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(os.path.join(root, "manifest.json"), card)
    return card


def load_config(root: str) -> RolloutConfig:
    """The :class:`RolloutConfig` stored in ``root/config.json``."""
    path = os.path.join(root, "config.json")
    try:
        with open(path) as f:
            return from_dict(RolloutConfig, json.load(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: is {root!r} a navgym-rollouts output folder?") from None
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is unreadable: {e}") from None


# --- generation at scale -----------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(config: RolloutConfig, episodes_done=None) -> None:
    import numba

    _WORKER["episodes_done"] = episodes_done  # a shared counter the parent's progress bar reads

    numba.set_num_threads(1)  # one process per core; the kernels' own threads would oversubscribe
    if sys.platform.startswith("linux"):  # die with the parent (a killed run must not leave writers behind)
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    _WORKER["subjects"] = load_subjects(config.subjects, config.split)


def _work(args) -> tuple[int, int | None]:
    """Write shard k unless another process holds its lock: (k, episodes written, or None if skipped)."""
    config, root, k, rebuild = args
    with shard_lock(root, k) as held:
        if not held:
            return k, None
        for n in os.listdir(root):  # temporary folders of k left by a killed writer (nobody else holds k)
            if n.startswith(f".tmp-{shard_name(k)}-"):
                shutil.rmtree(os.path.join(root, n), ignore_errors=True)
        final = os.path.join(root, shard_name(k))
        if os.path.isdir(final):
            if not rebuild and not check_shard(final, expect=shard_expect(config, k)):
                return k, 0  # finished meanwhile by another writer
            shutil.rmtree(final)
        counter = _WORKER.get("episodes_done")
        on_episode = _WORKER.get("on_episode") or (None if counter is None else lambda: _add(counter, 1))
        arrays, meta = generate_shard(config, k, _WORKER["subjects"], on_episode)
        write_shard(root, k, arrays, meta)
        return k, meta["episodes"]


def _add(counter, n: int) -> None:
    with counter.get_lock():
        counter.value += n


def _warm(subject) -> None:
    vol = subject.volume
    render_slices(vol, vol.center[None], np.eye(3)[None], [100.0], (8, 8), out=np.empty((1, 8, 8), np.uint8))


def write_rollouts(
    config: RolloutConfig, root: str, workers: int = 0, job_index: int = 0, num_jobs: int = 1,
    progress: bool = True, max_shards: int | None = None, verify: bool = False,
) -> dict:
    """Generate (or resume) the shards of job ``job_index`` of ``num_jobs`` under ``root``.

    workers : 0 = in this process; n >= 1 = a pool of n processes (fork where available).
    max_shards : stop after writing this many shards (for tests and partial runs).
    verify : also compare the sha256 of every finished shard's files (sizes are always checked);
        damaged shards are reported on stderr, naming the file, and rebuilt.
    Shards that another process is writing (its lock held) are left to it and reported.
    Returns the manifest.  Raises ValueError if ``root`` holds rollouts of a different config.
    """
    if not 0 <= job_index < num_jobs:
        raise ValueError(f"need 0 <= job_index < num_jobs, got {job_index} of {num_jobs}")
    if workers < 0:
        raise ValueError("workers must be >= 0")
    os.makedirs(root, exist_ok=True)
    cfg_path = os.path.join(root, "config.json")
    new = to_dict(config)
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            old = json.load(f)
        if old != new:
            diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise ValueError(f"{root} holds rollouts made with a different config (differs in {diff}); use another --out")
    else:
        write_json_atomic(cfg_path, new)
    todo, damaged = [], set()
    for k in range(job_index, config.num_shards, num_jobs):
        final = os.path.join(root, shard_name(k))
        problems = check_shard(final, checksums=verify, expect=shard_expect(config, k)) if os.path.isdir(final) else None
        if problems:
            damaged.add(k)
            sys.stderr.write("".join(f"navgym-rollouts: damaged shard, rebuilding: {p}\n" for p in problems))
        if problems is None or problems:
            todo.append(k)
    if max_shards is not None:
        todo = todo[:max_shards]
    total = sum(config.shard_episodes(k) for k in todo)
    from tqdm.auto import tqdm

    # progress in episodes rendered (each worker adds to a shared counter), with an ETA
    bar = tqdm(total=total, unit="ep", desc=f"rollouts job {job_index}/{num_jobs}", disable=not progress)
    jobs = [(config, root, k, k in damaged) for k in todo]
    skipped = []
    import multiprocessing as mp

    fork = "fork" in mp.get_all_start_methods()
    ctx = mp.get_context("fork" if fork else "spawn")
    episodes_done = ctx.Value("q", 0)

    def show():
        if episodes_done.value > bar.n:
            bar.update(episodes_done.value - bar.n)

    def done(result):
        k, n = result
        if n is None:
            skipped.append(k)
        elif n == 0:  # finished meanwhile by another writer: counts as done here
            _add(episodes_done, config.shard_episodes(k))
        show()

    if workers == 0:
        _WORKER["subjects"] = load_subjects(config.subjects, config.split)
        _WORKER["on_episode"] = lambda: (_add(episodes_done, 1), show())
        try:
            for job in jobs:
                done(_work(job))
        finally:
            _WORKER.pop("on_episode")
    else:
        if fork:  # compile the kernel and build the first subject's sample store once, before forking
            _warm(load_subjects(config.subjects, config.split)[0])
        with ctx.Pool(workers, initializer=_init_worker, initargs=(config, episodes_done)) as pool:
            pending = [pool.apply_async(_work, (job,)) for job in jobs]
            while pending:
                pending[0].wait(0.5)
                show()
                for r in [r for r in pending if r.ready()]:
                    pending.remove(r)
                    done(r.get())
    bar.close()
    if skipped:
        sys.stderr.write(
            f"navgym-rollouts: shards {sorted(skipped)} are being written by another process (their .lock-shard-* "
            f"files are held), so this run left them to it; rerun to finish them if that process dies\n"
        )
    return write_manifest(root, config)


__getattr__ = moved_names(__name__, {"simulate": "navgym.simulator.simulate"})
