"""Console scripts: ``navgym-rollouts`` (generate shards) and ``navgym-video`` (GIF/MP4 + contact sheet)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from importlib.util import find_spec

import numpy as np

from ..files import atomic_path
from ..policies import POLICIES
from ..subjects import load_subjects
from .generate import RolloutConfig, generate_shard, load_config, shard_dirs, write_rollouts


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"fov\": 150}'")
    return value


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subjects", default="template",
                   help="subject spec: template, synthetic:N, a folder (default: %(default)s)")
    p.add_argument("--split", choices=["train", "val", "test"], default=None,
                   help="only the subjects of this split (default: all of them)")
    p.add_argument("--policy", choices=sorted(POLICIES), default="mix", help="exploration policy (default: %(default)s)")
    p.add_argument("--policy-kwargs", type=_json_dict, default={}, help="JSON options of the policy (default: none)")
    p.add_argument("--task", choices=["explore", "landmark", "plane"], default="explore",
                   help="task (targets for the task-aware policies; default: %(default)s)")
    p.add_argument("--task-kwargs", type=_json_dict, default={},
                   help='JSON task options, e.g. \'{"landmark": null}\' (default: none)')
    p.add_argument("--steps", type=int, default=64, help="steps (frames) per episode (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="base seed: shard k uses SeedSequence([seed, k]) (default: %(default)s)")
    p.add_argument("--nav-overrides", type=_json_dict, default={},
                   help='JSON NavConfig fields, e.g. \'{"fov": 150}\' (default: none)')


def rollouts_main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="navgym-rollouts",
        description="Generate video-action rollout shards (resumable; jobs write disjoint shards).",
    )
    _add_generation_args(p)
    p.add_argument("--episodes", type=int, default=None,
                   help="number of episodes (required, except with --verify on an existing --out)")
    p.add_argument("--episodes-per-shard", type=int, default=64, help="episodes per shard file (default: %(default)s)")
    p.add_argument("--subjects-per-shard", type=int, default=None,
                   help="subjects per shard (default: the fewest covering all subjects; 0 = all in every shard)")
    p.add_argument("--out", required=True, help="output directory (created; reruns resume)")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8), help="processes (0 = this one; default: %(default)s, min(CPUs, 8))")
    p.add_argument("--job-index", type=int, default=0, help="this job's index in 0..num-jobs-1 (default: %(default)s)")
    p.add_argument("--num-jobs", type=int, default=1, help="independent jobs sharing --out (job j writes shards j mod J; default: %(default)s)")
    p.add_argument("--verify", action="store_true",
                   help="check the sha256 checksums of finished shards too (sizes are always checked) and rebuild "
                        "damaged ones; without --episodes the config stored in --out is used")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.episodes is None and not a.verify:
        p.error("--episodes is required (except with --verify on an existing --out)")
    try:
        if a.episodes is None:
            config = load_config(a.out)
        else:
            config = RolloutConfig(
                subjects=a.subjects, split=a.split, policy=a.policy, policy_kwargs=a.policy_kwargs, task=a.task,
                task_kwargs=a.task_kwargs, episodes=a.episodes, steps=a.steps, size=a.size, seed=a.seed,
                episodes_per_shard=a.episodes_per_shard, subjects_per_shard=a.subjects_per_shard,
                nav_overrides=a.nav_overrides,
            )
        card = write_rollouts(config, a.out, a.workers, a.job_index, a.num_jobs, progress=not a.quiet, verify=a.verify)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        p.exit(2, f"navgym-rollouts: error: {e}\n")
    c = card["counts"]
    print(f"{a.out}: {c['shards']}/{c['shards_expected']} shards, {c['episodes']} episodes, {c['frames']} frames")
    return 0


def video_main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="navgym-video",
        description="Write a GIF/MP4 of one episode (slice + 3-view locator) and a contact-sheet PNG.",
    )
    _add_generation_args(p)
    p.add_argument("--rollouts", default=None, help="take the episode from this rollout directory instead of simulating")
    p.add_argument("--episode", type=int, default=0, help="episode index (in --rollouts, or in the simulated batch; default: %(default)s)")
    p.add_argument("--out", required=True, help="video path: .gif or .mp4 (mp4 needs imageio-ffmpeg)")
    p.add_argument("--sheet", default=None, help="contact-sheet PNG path (default: next to --out)")
    p.add_argument("--columns", type=int, default=8, help="contact-sheet columns (default: %(default)s)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default: %(default)s)")
    a = p.parse_args(argv)
    ext = os.path.splitext(a.out)[1].lower()
    if ext not in (".gif", ".mp4"):
        p.exit(2, f"navgym-video: error: --out must end in .gif or .mp4, got {a.out!r}\n")
    missing = [m for m in ("imageio",) + (("imageio_ffmpeg",) if ext == ".mp4" else ()) if find_spec(m) is None]
    if missing:  # before simulating, not after
        p.exit(2, f"navgym-video: error: writing {ext} needs {' and '.join(missing)} "
                  f"(pip install {' '.join(m.replace('_', '-') for m in missing)}); or write a .gif\n")
    try:
        subject, poses, frames = _episode(a)
    except (ValueError, KeyError, IndexError, FileNotFoundError) as e:
        p.exit(2, f"navgym-video: error: {e}\n")
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
    config = RolloutConfig(
        subjects=a.subjects, split=a.split, policy=a.policy, policy_kwargs=a.policy_kwargs, task=a.task,
        task_kwargs=a.task_kwargs, episodes=a.episode + 1, steps=a.steps, size=a.size, seed=a.seed,
        episodes_per_shard=a.episode + 1, nav_overrides=a.nav_overrides,
    )
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


def __getattr__(name):
    if name == "write_video":
        import warnings

        from .. import viz

        warnings.warn("navgym.rollouts.cli.write_video is deprecated; use navgym.viz.write_video", DeprecationWarning,
                      stacklevel=2)
        return viz.write_video
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(rollouts_main())
