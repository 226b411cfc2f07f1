"""PyTorch sources of training windows: from rollout shards on disk, or rendered on the fly.

A window is a dict of

* ``frames`` uint8 (T, H, W), ``actions`` float32 (T, 7) normalised, ``actions_physical`` float32 (T, 7),
* ``poses`` float32 (T, 13) subject world mm, ``template_poses`` float32 (T, 13) template mm,
* ``subject_id`` str,

where frame t is rendered at pose t and action t moves pose t to pose t + 1 (so the model's
next frame for (frames[t], actions[t]) is frames[t + 1]).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..geometry import apply_actions, pack_poses, random_jumps
from ..policies import make_policy
from ..render import render_poses
from ..simulator import NavConfig, simulate
from ..subjects import load_subjects
from ..tasks import make_task
from .generate import ARRAYS, check_shard, load_config, pose_arrays, render_frames, shard_expect, verify_checksums

__all__ = ["RolloutWindows", "StreamingWindows"]


#: arrays that are finite by construction (template poses are NaN where a subject has no template transform)
FINITE_ARRAYS = ("actions", "actions_physical", "poses")


class RolloutWindows(Dataset):
    """Windows of ``window`` consecutive steps from the shards under ``root``.

    Window starts are every ``stride`` steps within each episode (windows never cross episodes).
    Shards are opened as read-only memory maps on first use in each process, so a window reads
    only its own T x H x W bytes; the dataset pickles without its maps (DataLoader workers reopen).

    Checked on construction (cheap: sizes and headers, no data read), each failure a ``ValueError`` naming
    the file: every ``shard-*`` folder has a readable ``meta.json``; the dataset card (``manifest.json``)
    lists exactly these shards with the same episodes and file records; each meta.json's counts match
    ``config.json``; every array file has the size recorded in meta.json and the dtype and shape its counts
    give.  ``checksums=True`` (the default) also compares each shard's sha256 checksums with meta.json on
    its first read in each process (a byte flipped in place keeps the size); ``navgym-rollouts --verify``
    rebuilds damaged shards.  A window with NaN/inf actions or poses raises ``ValueError`` naming the file.
    """

    def __init__(self, root: str, window: int = 16, stride: int = 1, checksums: bool = True):
        if window < 1 or stride < 1:
            raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
        self.root, self.window, self.stride = root, int(window), int(stride)
        self.checksums = bool(checksums)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"no rollout directory {root!r}")
        self.shards = sorted(os.path.join(root, n) for n in os.listdir(root)
                             if n.startswith("shard-") and os.path.isdir(os.path.join(root, n)))
        if not self.shards:
            raise FileNotFoundError(f"no finished rollout shards under {root!r}")
        expect = _expected_counts(root, self.shards)
        problems = [p for d in self.shards for p in check_shard(d, expect=expect.get(d))]
        if problems:
            raise ValueError(
                f"damaged rollout shards under {root}: " + "; ".join(problems)
                + f"; rebuild them with: navgym-rollouts --out {root} --verify"
            )
        metas = [_read_meta(d) for d in self.shards]
        steps = {m["steps"] for m in metas}
        if len(steps) != 1:
            raise ValueError(f"shards under {root} disagree on episode length: {sorted(steps)}")
        self.steps = steps.pop()
        sizes = {m.get("size") for m in metas}
        self.size = sizes.pop() if len(sizes) == 1 else None
        if self.window > self.steps:
            raise ValueError(f"window {self.window} is longer than the episodes ({self.steps} steps)")
        self.starts_per_episode = (self.steps - self.window) // self.stride + 1
        self.episodes = np.array([m["episodes"] for m in metas])
        self.offsets = np.concatenate([[0], np.cumsum(self.episodes * self.starts_per_episode)])
        self.subject_ids = [m["subject_ids"] for m in metas]
        self._maps: dict = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int, int]:
        """(shard, episode, start step) of window ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        index %= len(self)
        s = int(np.searchsorted(self.offsets, index, side="right") - 1)
        e, j = divmod(int(index - self.offsets[s]), self.starts_per_episode)
        return s, e, j * self.stride

    def _arrays(self, s: int) -> dict:
        maps = self._maps.get(s)
        if maps is None:
            if self.checksums:
                problems = verify_checksums(self.shards[s])
                if problems:
                    raise ValueError("; ".join(problems) + f"; rebuild with: navgym-rollouts --out {self.root} --verify")
            maps = {}
            for n in ARRAYS:
                path = os.path.join(self.shards[s], n + ".npy")
                try:
                    maps[n] = np.load(path, mmap_mode="r")
                except (OSError, ValueError) as e:
                    raise ValueError(f"cannot read rollout file {path}: {e}") from e
            self._maps[s] = maps
        return maps

    def __getitem__(self, index: int) -> dict:
        s, e, t = self.locate(index)
        maps, sl = self._arrays(s), slice(t, t + self.window)
        out = {n: torch.from_numpy(np.array(maps[n][e, sl])) for n in ARRAYS}
        for n in FINITE_ARRAYS:
            if not torch.isfinite(out[n]).all():
                raise ValueError(f"{os.path.join(self.shards[s], n + '.npy')}: NaN/inf in episode {e}, steps "
                                 f"{t}..{t + self.window - 1} (a shard written with bad values?)")
        out["subject_id"] = self.subject_ids[s][e]
        return out

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state


def _expected_counts(root: str, shards: list[str]) -> dict[str, dict]:
    """What each shard's meta.json must record, from ``config.json`` and the dataset card ``manifest.json``
    (each where present); raises ``ValueError`` naming the card when its shard list differs from the folders."""
    expect = {d: {} for d in shards}
    if os.path.isfile(os.path.join(root, "config.json")):
        config = load_config(root)
        for d in shards:
            k = int(os.path.basename(d).split("-")[1])
            if not 0 <= k < config.num_shards:
                raise ValueError(f"{d}: shard {k} is beyond the {config.num_shards} shards of {root}/config.json")
            expect[d] = shard_expect(config, k)
    card_path = os.path.join(root, "manifest.json")
    if os.path.isfile(card_path):
        try:
            with open(card_path) as f:
                listed = {s["dir"]: s for s in json.load(f)["shards"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot read the dataset card {card_path}: {e}") from e
        present = {os.path.basename(d) for d in shards}
        missing, extra = sorted(listed.keys() - present), sorted(present - listed.keys())
        if missing or extra:
            raise ValueError(
                f"{card_path} does not match the shard folders under {root}: "
                + (f"listed but missing: {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"not listed: {extra} (written after the card? rerun navgym-rollouts --out {root} to update it)"
                   if extra else ""))
        for d in shards:
            card = listed[os.path.basename(d)]
            expect[d] = {**expect[d], "episodes": card["episodes"], **({"files": card["files"]} if card.get("files") else {})}
    return expect


def _read_meta(shard: str) -> dict:
    path = os.path.join(shard, "meta.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read rollout file {path}: {e}") from e


class StreamingWindows(IterableDataset):
    """Endless windows rendered on the fly (no disk), from the same simulator and policies.

    Each chunk simulates ``episodes_per_chunk`` episodes of ``episode_steps`` (default ``window``)
    steps and cuts every episode into non-overlapping windows.  Chunk c of DataLoader worker w
    uses ``SeedSequence([seed, w, c])``, so workers never repeat each other and a run is reproducible.

    subjects : spec (see :func:`navgym.subjects.load_subjects`) or a sequence of Subjects.
    batch_size : None yields single windows; an int yields collated batches (use
        ``DataLoader(ds, batch_size=None)``), with frames (B, T, H, W) and subject_id a list.
    device : None renders with the numba CPU kernel; a torch device (e.g. "cuda") renders with
        :class:`navgym.TorchRenderer` there and yields frames on that device (use num_workers=0).
    max_windows : stop after this many windows per worker (None = endless).
    resident_subjects, swap_every : each worker draws episodes from a resident set of this many
        subjects and swaps one for the next of a seeded permutation every ``swap_every`` chunks,
        so building subjects (~0.5 s for a synthetic one) stays a small share of the time.
    jump : None, or ``{"mm": .., "deg": .., "zoom_pct": ..}``: each window also gets one far jump from
        its last pose (:func:`navgym.geometry.random_jumps`, drawn from its own seeded stream, so the
        windows are the same with or without it): ``jump_frames`` (B, H, W) uint8 rendered at
        ``jump_poses`` (B, 13) and the physical jump ``jump_actions_physical`` (B, 7).
    """

    def __init__(
        self, subjects="template", policy: str = "mix", window: int = 16, size: int = 64, seed: int = 0,
        batch_size: int | None = None, split: str | None = None, task: str = "explore",
        task_kwargs: dict | None = None, policy_kwargs: dict | None = None, episodes_per_chunk: int = 64,
        episode_steps: int | None = None, device=None, max_windows: int | None = None, nav_overrides: dict | None = None,
        resident_subjects: int = 4, swap_every: int = 8, jump: dict | None = None,
    ):
        episode_steps = window if episode_steps is None else episode_steps
        if window < 1 or episode_steps < window or episodes_per_chunk < 1:
            raise ValueError("need window >= 1, episode_steps >= window and episodes_per_chunk >= 1")
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be None or >= 1")
        self.subjects_spec, self.split = subjects, split
        self.policy, self.policy_kwargs = policy, dict(policy_kwargs or {})
        self.window, self.size, self.seed, self.batch_size = int(window), int(size), int(seed), batch_size
        self.task = make_task(task, **(task_kwargs or {}))
        self.config = NavConfig(size=(size, size), **(nav_overrides or {}))
        self.episodes_per_chunk, self.episode_steps = int(episodes_per_chunk), int(episode_steps)
        self.device, self.max_windows = device, max_windows
        if resident_subjects < 1 or swap_every < 1:
            raise ValueError("resident_subjects and swap_every must be >= 1")
        self.resident_subjects, self.swap_every = int(resident_subjects), int(swap_every)
        if jump is not None and set(jump) != {"mm", "deg", "zoom_pct"}:
            raise ValueError(f"jump must be None or a dict with keys mm, deg, zoom_pct, got {jump!r}")
        self.jump = None if jump is None else {k: float(v) for k, v in jump.items()}
        make_policy(policy, **self.policy_kwargs)  # fail early on a bad name or option

    def _chunks(self, subjects, worker: int):
        policy = make_policy(self.policy, **self.policy_kwargs)
        renderers: dict = {}
        n, m = len(subjects), min(self.resident_subjects, len(subjects))
        perm = np.random.default_rng([self.seed, worker, 0x5B7EC7]).permutation(n)
        c = 0
        while True:
            first = c // self.swap_every  # the resident set slides along the permutation
            resident = perm[(first + np.arange(m)) % n]
            sim = simulate(
                subjects, policy, self.task, self.config, self.episodes_per_chunk, self.episode_steps,
                np.random.SeedSequence([self.seed, worker, c]), resident[np.arange(self.episodes_per_chunk) % m],
            )
            for key in list(renderers):  # renderers of subjects no longer resident
                if not set(key) <= set(resident.tolist()):
                    del renderers[key]
            poses, template = pose_arrays(subjects, sim)
            frames = self._render(subjects, sim, renderers)
            k = self.episode_steps // self.window
            cut = lambda a: a[:, : k * self.window].reshape(-1, self.window, *a.shape[2:])  # noqa: E731
            ids = np.repeat([subjects[s].subject_id for s in sim["subject_index"]], k)
            chunk = {
                "frames": cut(frames),
                "actions": torch.from_numpy(cut(sim["actions"])),
                "actions_physical": torch.from_numpy(cut(sim["actions_physical"])),
                "poses": torch.from_numpy(cut(poses)),
                "template_poses": torch.from_numpy(cut(template)),
                "subject_id": list(ids),
            }
            if self.jump is not None:
                chunk.update(self._jumps(subjects, sim, k, np.random.default_rng([self.seed, worker, c, 0x7A4D]), renderers))
            yield chunk
            c += 1

    def _jumps(self, subjects, sim, k, rng, renderers) -> dict:
        """One far jump from the last pose of each of the chunk's windows (see ``jump``)."""
        last = np.arange(k) * self.window + self.window - 1  # the last step of each window of an episode
        sub = np.repeat(sim["subject_index"], k)
        c0, r0, f0 = (sim[key][:, last].reshape(-1, *sim[key].shape[2:]) for key in ("centers", "rotations", "fovs"))
        delta = random_jumps(len(sub), self.jump["mm"], self.jump["deg"], self.jump["zoom_pct"], rng)
        c1, r1, f1 = apply_actions(c0, r0, f0, delta)
        frames = render_poses(subjects, sub, c1, r1, f1, (self.size, self.size), device=self.device, renderers=renderers)
        return {"jump_frames": torch.from_numpy(frames) if self.device is None else frames,
                "jump_poses": torch.from_numpy(pack_poses(c1, r1, f1).astype(np.float32)),
                "jump_actions_physical": torch.from_numpy(delta.astype(np.float32))}

    def _render(self, subjects, sim, renderers):
        frames = render_frames(subjects, sim, self.size, self.device, renderers)
        return torch.from_numpy(frames) if self.device is None else frames

    def __iter__(self):
        info = get_worker_info()
        worker = 0 if info is None else info.id
        if info is not None and self.device is None:
            import numba

            numba.set_num_threads(1)  # one DataLoader worker per core; kernel threads would oversubscribe
        subjects = load_subjects(self.subjects_spec, self.split)
        emitted, b = 0, self.batch_size
        for chunk in self._chunks(subjects, worker):
            n = len(chunk["subject_id"])
            step = b or 1
            for i in range(0, n - step + 1, step):
                if self.max_windows is not None and emitted >= self.max_windows:
                    return
                if b is None:
                    yield {k: v[i] for k, v in chunk.items()}
                else:
                    yield {k: v[i : i + b] for k, v in chunk.items()}
                emitted += step
