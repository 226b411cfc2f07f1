"""Training data for world models: clip batches (rollout shards or streaming) and 3D MAE crops.

Clips come from :mod:`navgym.rollouts` (``RolloutWindows`` over shards or ``StreamingWindows``
rendered on the fly): frames uint8 (B, T, H, W), actions float32 (B, T, 7) normalised, action t
taking pose t to pose t + 1.  Every source is a pure function of (seed, rank, step), so a resumed
run sees exactly the batches an uninterrupted run would (streams are re-created and fast-forwarded).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .mae3d import random_crops, resample

__all__ = ["clip_batches", "VolumeCrops", "step_generator"]


def step_generator(seed: int, step: int, rank: int = 0, salt: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, rank, salt)."""
    s = np.random.SeedSequence([seed, step, rank, salt]).generate_state(2)
    return torch.Generator().manual_seed(int(s[0]) << 32 | int(s[1]))


def clip_batches(train: TrainConfig, model: ModelConfig, rank: int = 0, world: int = 1, start: int = 0,
                 split: str = "train", seed_salt: int = 0):
    """Endless iterator of {"frames", "actions"} batches of ``train.batch`` clips for this rank,
    starting at step ``start``."""
    if train.data == "stream":
        from navgym.rollouts import StreamingWindows

        ds = StreamingWindows(train.subjects, policy=train.policy, window=model.window, size=model.size,
                              seed=(train.seed * 1000 + seed_salt) * 64 + rank, batch_size=train.batch,
                              split=split, episodes_per_chunk=max(16, train.batch))
        if train.workers:
            it = iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=train.workers,
                                                  persistent_workers=False))
        else:
            it = iter(ds)
        it = ({"frames": b["frames"], "actions": b["actions"]} for b in it)
        return itertools.islice(it, start, None)
    return _shard_batches(train, model, rank, world, start)


def _shard_batches(train, model, rank, world, start):
    from navgym.rollouts import RolloutWindows

    ds = RolloutWindows(train.data, window=model.window, stride=max(1, model.window // 2))
    per_step = train.batch * world
    n = len(ds)
    if n < per_step:
        raise ValueError(f"{train.data}: {n} windows, fewer than one global batch ({per_step})")
    steps_per_epoch = n // per_step
    step = start
    while True:
        epoch, k = divmod(step, steps_per_epoch)
        perm = torch.randperm(n, generator=step_generator(train.seed, epoch, 0, 17))
        idx = perm[k * per_step:(k + 1) * per_step][rank::world]
        items = [ds[int(i)] for i in idx]
        yield {"frames": torch.stack([x["frames"] for x in items]), "actions": torch.stack([x["actions"] for x in items])}
        step += 1


class VolumeCrops:
    """Random ``crop``^3 crops of the training subjects' volumes resampled to ``voxel_mm`` (3D MAE data).

    Volumes are resampled on first use and cached (a 3 mm brain is ~250 kB)."""

    def __init__(self, train: TrainConfig, model: ModelConfig, split: str = "train"):
        from navgym.subjects import load_subjects

        self.subjects = load_subjects(train.subjects, split=split)
        if len(self.subjects) == 0:
            raise ValueError(f"no {split} subjects in {train.subjects!r}")
        self.model, self.cache = model, {}

    def volume(self, i: int):
        if i not in self.cache:
            self.cache[i] = resample(self.subjects[i].volume, self.model.voxel_mm)
        return self.cache[i]

    def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """(n, 1, crop, crop, crop) crops, each from a random subject."""
        idx = torch.randint(0, len(self.subjects), (n,), generator=gen).tolist()
        return torch.cat([random_crops(self.volume(i)[0], self.model.crop, 1, gen) for i in idx])
