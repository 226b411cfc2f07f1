"""Play a trained agent on its preset's held-out subjects: success and error per episode, and a GIF.

    python -m agents.play runs/ac_ppo/model.zip --episodes 2 --gif runs/ac_ppo/play.gif
    python -m agents.play runs/ac_ppo/model.zip --preset AC-far --bounds --out runs/ac_ppo/far.json

Reads the run's ``config.json`` beside the model (or one folder up, for ``checkpoints/*.zip``) for the
preset, observation and encoder, builds the model from it and loads only the zip's weights (a downloaded
zip runs no code: :func:`load_agent`); runs the deterministic policy on the preset's ``test`` subjects with
the same fixed starts as the training run's evaluations; prints one line per episode and the summary
(success rate with its Wilson interval, median final error); writes env 0's first episode as a GIF
of the agent's slice beside the 3-view locator (:func:`navgym.viz.locator_frame`).  ``--preset`` plays
another preset with the same target (e.g. an agent trained on ``AC-near`` on the far starts of
``AC-far``); ``--bounds`` adds the oracle and random-action policies on the very same episodes.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from navgym.configs import add_deprecated_alias, add_options, config_field, options_config
from navgym.deprecation import renamed_keyword
from navgym.files import write_json_atomic
from navgym.presets import get_preset
from world_model.device import device_field

from .benchmark import BOUNDS, bound_episodes
from .episodes import episode_metrics, model_act_fn, run_episodes
from .train import AgentConfig, build_agent, eval_env, frozen_encoder, saved_config

__all__ = ["agent_config", "run_folder", "load_agent", "play", "PlayOptions", "parser", "parse_args", "main"]


def run_folder(model_path: str | Path) -> Path:
    """The run folder of a ``model.zip`` (or checkpoint) of ``agents.train``: the one holding its ``config.json``
    (beside it, or one folder up)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model: no such file {model_path}")
    for folder in (model_path.parent, model_path.parent.parent):
        if (folder / "config.json").exists():
            return folder
    raise FileNotFoundError(f"model: no config.json beside {model_path} or one folder up (agents.train writes it)")


def agent_config(model_path: str | Path) -> AgentConfig:
    """The :class:`AgentConfig` of a ``model.zip`` (or checkpoint) of ``agents.train``: its run's ``config.json``."""
    return saved_config(json.loads((run_folder(model_path) / "config.json").read_text()))


def load_agent(model_path: str | Path, cfg: AgentConfig, env, device: str = "auto"):
    """The SB3 model of ``cfg`` on ``env`` with the weights of ``model_path`` (a ``model.zip`` or checkpoint).

    Only data is read: the model is built from ``cfg`` and the zip's ``.pth`` weights are loaded with
    ``torch.load(weights_only=True)`` (SB3's ``set_parameters``); its ``data`` entry, whose fields SB3 would
    unpickle with cloudpickle (code that runs on load), is never read.  A file that is not such a zip, or
    whose weights do not fit ``cfg``'s model, raises ``ValueError`` naming it."""
    model_path = Path(model_path)
    try:
        with zipfile.ZipFile(model_path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"model: {model_path} is not a zip written by agents.train ({e})") from None
    if "policy.pth" not in names:
        raise ValueError(f"model: {model_path} holds no policy weights (policy.pth); found {sorted(names)[:8]}: "
                         f"not an SB3 model zip written by agents.train")
    model = build_agent(replace(cfg, device=device), env, None)
    try:
        model.set_parameters(str(model_path), device=model.device)
    except Exception as e:  # weights_only refusals (UnpicklingError), missing or misshapen tensors (ValueError, RuntimeError)
        raise ValueError(f"model: {model_path}: cannot load its weights into the {cfg.algo} model of its "
                         f"config.json: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return model


def _record(model, env, cfg: AgentConfig, fps_steps: int) -> list[np.ndarray]:
    """Locator frames of env 0's first episode (subject and poses from the env's infos)."""
    from navgym.geometry import SlicePose
    from navgym.viz import locator_frame

    obs = env.reset()
    subject = env.episode_subjects[0]
    infos, frames = env.current_infos(), []
    for _ in range(fps_steps):
        info = infos[0]
        image = obs["image"][0, -1] if "image" in obs else None
        frames.append(locator_frame(subject.volume, SlicePose(info["center_mm"], info["rotation"], info["fov_mm"]), image))
        obs, _, done, infos = env.step(model.predict(obs, deterministic=True)[0])
        if done[0]:
            ep = infos[0]["episode"]
            last = infos[0]["terminal_observation"]
            frames.append(locator_frame(subject.volume, SlicePose(ep["center_mm"], ep["rotation"], ep["fov_mm"]),
                                        last["image"][-1] if "image" in last else None))
            break
    return frames


@renamed_keyword("task", "preset")
def play(model_path, episodes: int = 2, envs: int | None = None, gif: str | None = None, device: str = "auto",
         fps: float = 8.0, preset: str | None = None, bounds: bool = False) -> dict:
    """Evaluate a saved agent on held-out subjects; returns ``{"preset", "metrics", "episodes"}``, with ``bounds``
    also ``"bounds": {"oracle"|"random": metrics}`` on the same episodes (and writes ``gif``).
    ``preset``: another preset with the same target as the agent's (default: the agent's own; ``task=`` is its
    deprecated name)."""
    cfg = agent_config(model_path)
    encoder = frozen_encoder(cfg, run_folder(model_path))  # the run's own statistics
    if preset is not None:
        want, have = get_preset(preset), get_preset(cfg.preset)
        if (want.task, want.task_kwargs) != (have.task, have.task_kwargs):
            raise ValueError(f"preset: {preset!r} has another target than the agent's preset {cfg.preset!r}")
        cfg = replace(cfg, preset=preset)
    if envs is not None:
        cfg = replace(cfg, eval_envs=envs)
    env = eval_env(cfg, encoder)
    try:
        model = load_agent(model_path, cfg, env, device)
        eps = run_episodes(model_act_fn(model), env, episodes)
        if gif:
            from navgym.viz import write_video

            write_video(gif, _record(model, env, cfg, env.venv.max_episode_steps), fps)
    finally:
        env.close()
    out = {"preset": cfg.preset, "metrics": episode_metrics(eps), "episodes": eps}
    if bounds:
        cfg = replace(cfg, eval_episodes=episodes)
        out["bounds"] = {name: episode_metrics(bound_episodes(cfg, name, cfg.seed)) for name in BOUNDS}
    return out


@dataclass(frozen=True)
class PlayOptions:
    """``python -m agents.play`` options."""

    model: str = config_field(help="model.zip (or checkpoints/model_N_steps.zip) written by agents.train", flag="model")
    episodes: int = config_field(2, "episodes per env")
    envs: int | None = config_field(None, "held-out envs", show="the run's eval_envs")
    gif: str | None = config_field(None, "write env 0's first episode here (.gif)")
    device: str = device_field()
    preset: str | None = config_field(None, "another preset with the agent's target, e.g. AC-far for an AC-near "
                                            "agent", show="the agent's preset")
    bounds: bool = config_field(False, "also play the oracle and random actions on the same episodes")
    out: str | None = config_field(None, "write the results here (.json)")


def parser() -> argparse.ArgumentParser:
    """``python -m agents.play`` options: one per :class:`PlayOptions` field; ``--task`` is the deprecated name of
    ``--preset``."""
    p = argparse.ArgumentParser(prog="python -m agents.play", description=__doc__.split("\n\n")[0])
    add_options(p, PlayOptions)
    add_deprecated_alias(p, "--task", "--preset")
    return p


def parse_args(argv=None, p: argparse.ArgumentParser | None = None) -> PlayOptions:
    """The options of the command line; a bad one is refused with ``parser.error``."""
    p = p or parser()
    a = options_config(PlayOptions, p.parse_args(argv))
    if a.gif and not a.gif.lower().endswith(".gif"):
        p.error(f"--gif must end in .gif, got {a.gif!r}")
    if a.out and not a.out.lower().endswith(".json"):
        p.error(f"--out must end in .json, got {a.out!r}")
    if a.episodes < 1 or (a.envs is not None and a.envs < 1):
        p.error(f"--episodes and --envs must be >= 1, got {a.episodes} and {a.envs}")
    if a.preset is not None:
        try:
            get_preset(a.preset)
        except ValueError as e:
            p.error(f"--preset: {e}")
    return a


def main(argv=None) -> None:
    p = parser()
    a = parse_args(argv, p)
    try:
        r = play(a.model, a.episodes, a.envs, a.gif, a.device, preset=a.preset, bounds=a.bounds)
    except (FileNotFoundError, ValueError) as e:  # the model, its config.json, or a preset of another target
        p.error(str(e))
    for e in r["episodes"]:
        print(f"env {e['env']:2d} {e['subject_id']}: {'success' if e['is_success'] else 'failure'}  "
              f"final error {e['error']:.1f}  steps {e['l']}")
    m = r["metrics"]
    lo, hi = m["success_ci"]
    print(f"{r['preset']}: success {m['success_rate']:.0%} [{lo:.0%}, {hi:.0%}] over {m['episodes']} episodes; "
          f"median final error {m['median_error']:.1f}" + (f"; GIF: {a.gif}" if a.gif else ""))
    for name, b in r.get("bounds", {}).items():
        print(f"{name}: success {b['success_rate']:.0%}, median final error {b['median_error']:.1f}")
    if a.out:
        write_json_atomic(a.out, {**r, "command": "python -m agents.play " + " ".join(sys.argv[1:] if argv is None else argv)})


if __name__ == "__main__":
    main()
