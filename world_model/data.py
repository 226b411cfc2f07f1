"""Training data for world models: clip batches (rollout shards or streaming) and 3D MAE crops.

Clips come from :mod:`navgym.rollouts` (``RolloutWindows`` over shards or ``StreamingWindows``
rendered on the fly): frames uint8 (B, T, H, W), actions float32 (B, T, 7) normalised, action t
taking pose t to pose t + 1, poses float32 (B, T, 13) (``navgym.geometry.pack_poses``).  Every
source is a pure function of (seed, rank, step), so a resumed run sees exactly the batches an
uninterrupted run would (streams are re-created and fast-forwarded).

Where clips are rendered (``TrainConfig.render``): ``cpu`` uses navgym's numba kernel in this
process (or ``workers`` DataLoader processes); ``device`` renders with :class:`navgym.TorchRenderer`
on the training device inside the training process (``resident_subjects`` volumes resident there;
poses from the same policies; no workers), so a GPU is fed without a CPU bottleneck.

Jumps (``stride`` > 1): the stream renders clips of ``(window - 1) * stride + 1`` frames and the
model sees every ``stride``-th frame (``mixed_strides``: strides drawn in 1..stride per transition)
with the composed action between them (:func:`composed_actions`, from the poses; it may exceed 1).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from .config import ModelConfig, TrainConfig
from .mae3d import random_crops, resample

__all__ = ["clip_batches", "held_out_config", "VolumeCrops", "step_generator", "composed_actions", "render_device"]


def step_generator(seed: int, step: int, rank: int = 0, salt: int = 0, device=None) -> torch.Generator:
    """A generator (on the CPU, or on ``device``) that depends only on (seed, step, rank, salt)."""
    s = np.random.SeedSequence([seed, step, rank, salt]).generate_state(2)
    return torch.Generator(device or "cpu").manual_seed(int(s[0]) << 32 | int(s[1]))


def render_device(train: TrainConfig, device: torch.device) -> torch.device | None:
    """The device clips are rendered on (None = navgym's CPU kernel)."""
    if train.render == "device" or (train.render == "auto" and device.type == "cuda"):
        return device
    return None


def held_out_config(train: TrainConfig, clips: int) -> TrainConfig:
    """``train`` for a fixed held-out batch of ``clips`` streamed clips (no workers, no jumps between frames)."""
    return replace(train, data="stream", batch=clips, workers=0, stride=1)


def clip_batches(train: TrainConfig, model: ModelConfig, rank: int = 0, world: int = 1, start: int = 0,
                 split: str = "train", seed_salt: int = 0, device: torch.device | None = None,
                 frames: int | None = None, jumps: bool = False):
    """Endless iterator of {"frames", "actions", "poses"} batches of ``train.batch`` clips of
    ``frames`` (default ``model.window``) frames for this rank, starting at step ``start``; rendered on
    ``device`` when given (see the module docstring), else on the CPU.

    jumps : each clip also gets one far jump from its last pose (``navgym.rollouts.StreamingWindows``'s
    ``jump``, sized by ``train.jump_mm``, ``jump_deg``, ``jump_zoom_pct``): ``jump_frames``
    (B, H, W) uint8, ``jump_poses`` (B, 13) and ``jump_actions`` (B, 7), the jump as a normalised action
    (the stream's units: navgym.simulator.NavConfig; a 30 mm jump is 6)."""
    if train.data != "stream":
        if jumps:
            raise ValueError(f"jumps are rendered on the fly: data must be 'stream', got {train.data!r}")
        return _shard_batches(train, model, rank, world, start)
    from navgym.rollouts import StreamingWindows
    from navgym.simulator import NavConfig

    rendered = ((frames or model.window) - 1) * train.stride + 1
    jump = {"mm": train.jump_mm, "deg": train.jump_deg, "zoom_pct": train.jump_zoom_pct} if jumps else None
    ds = StreamingWindows(train.subjects, policy=train.policy, window=rendered, size=model.size,
                          seed=(train.seed * 1000 + seed_salt) * 64 + rank, batch_size=train.batch,
                          split=split, episodes_per_chunk=max(16, train.batch), device=device,
                          resident_subjects=train.resident_subjects, jump=jump)
    if train.workers and device is None:
        it = iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=train.workers,
                                              persistent_workers=False))
    else:
        it = iter(ds)
    it = itertools.islice(it, start, None)
    if jumps:
        scale = torch.from_numpy(NavConfig().action_scale()).float()
        return ({**{k: b[k] for k in ("frames", "actions", "poses", "jump_frames", "jump_poses")},
                 "jump_actions": b["jump_actions_physical"] / scale} for b in it)
    if train.stride == 1:
        return ({k: b[k] for k in ("frames", "actions", "poses")} for b in it)
    return (_jump(b, train, model.window, step_generator(train.seed, step, rank, 23 + seed_salt))
            for step, b in enumerate(it, start))


def _jump(b: dict, train: TrainConfig, window: int, gen: torch.Generator) -> dict:
    """Every stride-th frame (or mixed strides) of a rendered clip with the composed actions."""
    n = len(b["frames"])
    if train.mixed_strides:
        steps = torch.randint(1, train.stride + 1, (n, window - 1), generator=gen)
    else:
        steps = torch.full((n, window - 1), train.stride)
    idx = torch.cat([torch.zeros(n, 1, dtype=torch.long), steps.cumsum(1)], 1)  # (n, window)
    rows = torch.arange(n)[:, None]
    poses = b["poses"][rows, idx]
    actions = torch.empty(n, window, 7)
    actions[:, :-1] = composed_actions(poses[:, :-1], poses[:, 1:])
    actions[:, -1] = b["actions"][rows[:, 0], idx[:, -1]]  # after the last frame: the recorded step
    frames = b["frames"][rows.to(b["frames"].device), idx.to(b["frames"].device)]
    return {"frames": frames, "actions": actions, "poses": poses}


def composed_actions(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Normalised action taking each pose ``before`` (..., 13) to ``after`` in one step: translation
    and rotation vector in ``before``'s plane frame and ln zoom (navgym.geometry.apply_actions' form)
    divided by the stream's per-unit action scale (navgym.simulator.NavConfig)."""
    from navgym.geometry import unpack_poses
    from navgym.simulator import NavConfig

    c0, r0, f0 = unpack_poses(before.numpy())
    c1, r1, f1 = unpack_poses(after.numpy())
    shift = np.einsum("...ji,...j->...i", r0, c1 - c0)
    rel = np.einsum("...ji,...jk->...ik", r0, r1).reshape(-1, 3, 3)
    rot = np.rad2deg(Rotation.from_matrix(rel).as_rotvec()).reshape(*shift.shape)
    phys = np.concatenate([shift, rot, np.log(f0 / f1)[..., None]], -1)
    return torch.from_numpy(phys / NavConfig().action_scale()).float()


def _shard_batches(train, model, rank, world, start):
    from navgym.rollouts import RolloutWindows

    ds = RolloutWindows(train.data, window=model.window, stride=max(1, model.window // 2))
    if ds.size is not None and ds.size != model.size:
        raise ValueError(f"--data {train.data}: its shards hold {ds.size}-px frames, the model takes {model.size} px; "
                         f"pass --size {ds.size} (or generate rollouts with --size {model.size})")
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
        yield {k: torch.stack([x[k] for x in items]) for k in ("frames", "actions", "poses")}
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
