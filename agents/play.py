"""Play a trained agent on its task's held-out subjects: success and error per episode, and a GIF.

    python -m agents.play runs/ac_ppo/model.zip --episodes 2 --gif runs/ac_ppo/play.gif
    python -m agents.play runs/ac_ppo/model.zip --task AC-far --bounds --out runs/ac_ppo/far.json

Reads the run's ``config.json`` beside the model (or one folder up, for ``checkpoints/*.zip``) for the
task, observation and encoder, builds the model from it and loads only the zip's weights (a downloaded
zip runs no code: :func:`load_agent`); runs the deterministic policy on the preset's ``test`` subjects with
the same fixed starts as the training run's evaluations; prints one line per episode and the summary
(success rate with its Wilson interval, median final error); writes env 0's first episode as a GIF
of the agent's slice beside the 3-view locator (:func:`navgym.viz.locator_frame`).  ``--task`` plays
another preset with the same target (e.g. an agent trained on ``AC-near`` on the far starts of
``AC-far``); ``--bounds`` adds the oracle and random-action policies on the very same episodes.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from navgym.files import write_json_atomic
from navgym.presets import get_preset

from .benchmark import BOUNDS, bound_episodes
from .episodes import episode_metrics, model_act_fn, run_episodes
from .train import AgentConfig, build_agent, eval_env, frozen_encoder, saved_config

__all__ = ["agent_config", "run_folder", "load_agent", "play", "main"]


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


def play(model_path, episodes: int = 2, envs: int | None = None, gif: str | None = None, device: str = "auto",
         fps: float = 8.0, task: str | None = None, bounds: bool = False) -> dict:
    """Evaluate a saved agent on held-out subjects; returns ``{"task", "metrics", "episodes"}``, with ``bounds``
    also ``"bounds": {"oracle"|"random": metrics}`` on the same episodes (and writes ``gif``).
    ``task``: another preset with the same target as the agent's (default: the agent's own)."""
    cfg = agent_config(model_path)
    encoder = frozen_encoder(cfg, run_folder(model_path))  # the run's own statistics
    if task is not None:
        want, have = get_preset(task), get_preset(cfg.preset)
        if (want.task, want.task_kwargs) != (have.task, have.task_kwargs):
            raise ValueError(f"task: {task!r} has another target than the agent's preset {cfg.preset!r}")
        cfg = replace(cfg, preset=task)
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
    out = {"task": cfg.preset, "metrics": episode_metrics(eps), "episodes": eps}
    if bounds:
        cfg = replace(cfg, eval_episodes=episodes)
        out["bounds"] = {name: episode_metrics(bound_episodes(cfg, name, cfg.seed)) for name in BOUNDS}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m agents.play", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model.zip (or checkpoints/model_N_steps.zip) written by agents.train")
    p.add_argument("--episodes", type=int, default=2, help="episodes per env (default: %(default)s)")
    p.add_argument("--envs", type=int, default=None, help="held-out envs (default: the run's eval_envs)")
    p.add_argument("--gif", default=None, help="write env 0's first episode here (.gif; default: none)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    p.add_argument("--task", default=None, help="another preset with the agent's target, e.g. AC-far for an AC-near "
                                               "agent (default: the agent's task)")
    p.add_argument("--bounds", action="store_true", help="also play the oracle and random actions on the same episodes")
    p.add_argument("--out", default=None, help="write the results here (.json; default: none)")
    a = p.parse_args(argv)
    if a.gif and not a.gif.lower().endswith(".gif"):
        p.error(f"--gif must end in .gif, got {a.gif!r}")
    if a.out and not a.out.lower().endswith(".json"):
        p.error(f"--out must end in .json, got {a.out!r}")
    r = play(a.model, a.episodes, a.envs, a.gif, a.device, task=a.task, bounds=a.bounds)
    for e in r["episodes"]:
        print(f"env {e['env']:2d} {e['subject_id']}: {'success' if e['is_success'] else 'failure'}  "
              f"final error {e['error']:.1f}  steps {e['l']}")
    m = r["metrics"]
    lo, hi = m["success_ci"]
    print(f"{r['task']}: success {m['success_rate']:.0%} [{lo:.0%}, {hi:.0%}] over {m['episodes']} episodes; "
          f"median final error {m['median_error']:.1f}" + (f"; GIF: {a.gif}" if a.gif else ""))
    for name, b in r.get("bounds", {}).items():
        print(f"{name}: success {b['success_rate']:.0%}, median final error {b['median_error']:.1f}")
    if a.out:
        write_json_atomic(a.out, {**r, "command": "python -m agents.play " + " ".join(sys.argv[1:] if argv is None else argv)})


if __name__ == "__main__":
    main()
