"""Console scripts: ``navgym-rollouts`` (generate shards) and ``navgym-video`` (GIF/MP4 + contact sheet)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, replace
from importlib.util import find_spec

import numpy as np

from ..configs import add_options, config_field, options_config
from ..files import atomic_path
from ..subjects import load_subjects
from .generate import RolloutConfig, generate_shard, load_config, shard_dirs, write_rollouts
from ..deprecation import moved_names


@dataclass(frozen=True)
class RolloutJob:
    """How ``navgym-rollouts`` runs (the content is the :class:`RolloutConfig`)."""

    out: str = config_field(help="output directory (created; reruns resume)")
    workers: int = config_field(min(os.cpu_count() or 1, 8), "processes (0 = this one)", show="min(CPUs, 8)")
    job_index: int = config_field(0, "this job's index in 0..num-jobs-1")
    num_jobs: int = config_field(1, "independent jobs sharing --out (job j writes shards j mod J)")
    verify: bool = config_field(False, "check the sha256 checksums of finished shards too (sizes are always checked) "
                                       "and rebuild damaged ones; without --episodes the config stored in --out is used")
    quiet: bool = config_field(False, "no progress bar")


@dataclass(frozen=True)
class VideoOptions:
    """``navgym-video`` options beside the :class:`RolloutConfig` of a simulated episode."""

    out: str = config_field(help="video path: .gif or .mp4 (mp4 needs imageio-ffmpeg)")
    rollouts: str | None = config_field(None, "take the episode from this rollout directory instead of simulating")
    episode: int = config_field(0, "episode index (in --rollouts, or in the simulated batch)")
    sheet: str | None = config_field(None, "contact-sheet PNG path", show="next to --out")
    columns: int = config_field(8, "contact-sheet columns")
    fps: float = config_field(10.0, "frames per second")


#: RolloutConfig fields that are the shards' layout, not an episode's content
_LAYOUT = ("episodes", "episodes_per_shard", "subjects_per_shard")


def rollouts_main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="navgym-rollouts",
        description="Generate video-action rollout shards (resumable; jobs write disjoint shards).",
    )
    add_options(p, RolloutConfig, skip=("episodes",))
    p.add_argument("--episodes", type=int, default=None,
                   help="number of episodes (required, except with --verify on an existing --out; default: none)")
    add_options(p, RolloutJob)
    a = p.parse_args(argv)
    if a.episodes is None and not a.verify:
        p.error("--episodes is required (except with --verify on an existing --out)")
    job = options_config(RolloutJob, a)
    try:
        config = load_config(job.out) if a.episodes is None else options_config(RolloutConfig, a)
        card = write_rollouts(config, job.out, job.workers, job.job_index, job.num_jobs, progress=not job.quiet,
                              verify=job.verify)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        p.error(str(e))
    c = card["counts"]
    print(f"{job.out}: {c['shards']}/{c['shards_expected']} shards, {c['episodes']} episodes, {c['frames']} frames")
    return 0


def video_main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="navgym-video",
        description="Write a GIF/MP4 of one episode (slice + 3-view locator) and a contact-sheet PNG.",
    )
    add_options(p, RolloutConfig, skip=_LAYOUT)
    add_options(p, VideoOptions)
    a = p.parse_args(argv)
    ext = os.path.splitext(a.out)[1].lower()
    if ext not in (".gif", ".mp4"):
        p.error(f"--out must end in .gif or .mp4, got {a.out!r}")
    missing = [m for m in ("imageio",) + (("imageio_ffmpeg",) if ext == ".mp4" else ()) if find_spec(m) is None]
    if missing:  # before simulating, not after
        p.error(f"writing {ext} needs {' and '.join(missing)} "
                f"(pip install {' '.join(m.replace('_', '-') for m in missing)}); or write a .gif")
    try:
        subject, poses, frames = _episode(a)
    except (ValueError, KeyError, IndexError, FileNotFoundError) as e:
        p.error(str(e))
    from ..geometry import SlicePose
    from ..viz import locator_frame, write_video

    video = [locator_frame(subject.volume, SlicePose.from_array(q.astype(np.float64)), f) for q, f in zip(poses, frames)]
    write_video(a.out, video, a.fps)
    sheet = a.sheet or os.path.splitext(a.out)[0] + "_sheet.png"
    write_image(sheet, contact_sheet(frames, a.columns))
    print(f"wrote {a.out} ({len(video)} frames) and {sheet}")
    return 0


def _episode(a):
    """(subject, poses (T, 13), frames (T, H, W) uint8) of the requested episode."""
    if a.rollouts:
        config = load_config(a.rollouts)
        dirs = shard_dirs(a.rollouts)
        for d in dirs:
            with open(os.path.join(d, "meta.json")) as f:
                meta = json.load(f)
            e = a.episode - meta["first_episode"]
            if 0 <= e < meta["episodes"]:
                subjects = {s.subject_id: s for s in load_subjects(config.subjects, config.split)}
                frames = np.load(os.path.join(d, "frames.npy"), mmap_mode="r")[e]
                poses = np.load(os.path.join(d, "poses.npy"), mmap_mode="r")[e]
                return subjects[meta["subject_ids"][e]], np.array(poses), np.array(frames)
        raise IndexError(f"episode {a.episode} is in no finished shard of {a.rollouts}")
    config = replace(options_config(RolloutConfig, a), episodes=a.episode + 1, episodes_per_shard=a.episode + 1)
    subjects = load_subjects(config.subjects, config.split)
    arrays, meta = generate_shard(config, 0, subjects)
    subject = next(s for s in subjects if s.subject_id == meta["subject_ids"][a.episode])
    return subject, arrays["poses"][a.episode], arrays["frames"][a.episode]


def contact_sheet(frames: np.ndarray, columns: int = 8, gap: int = 2) -> np.ndarray:
    """(rows*(H+gap)-gap, cols*(W+gap)-gap) uint8 grid of frames (T, H, W), row-major in time."""
    frames = np.asarray(frames)
    t, h, w = frames.shape
    cols = max(1, min(columns, t))
    rows = -(-t // cols)
    sheet = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), 255, np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, cols)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = f
    return sheet


def write_image(path: str, image: np.ndarray) -> None:
    """A PNG, written atomically."""
    import imageio.v3 as iio

    atomic_path(path, lambda tmp: iio.imwrite(tmp, image))


__getattr__ = moved_names(__name__, {"write_video": "navgym.viz.write_video"})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(rollouts_main())
