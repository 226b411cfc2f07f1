"""Train an SB3 agent (PPO or SAC) on a navgym task preset.

    python -m agents.train --task AC-near --encoder pixels --algo ppo --steps 200000 --out runs/ac_ppo

Writes to ``--out``: ``config.json``, TensorBoard events (``loss/…`` from SB3 under ``train/``,
``eval/…``, ``perf/…``), ``checkpoints/`` (SB3 zips every ``--checkpoint-every`` steps),
``model.zip`` (final), ``evaluations.json`` (the held-out learning curve) and ``final_eval.json``.
Evaluation runs on the preset's held-out ``test`` subjects with fixed starts (see
:mod:`agents.evaluate`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from tqdm.auto import tqdm

from navgym.presets import get_preset

from .envs import make_vec_env
from .evaluate import episode_metrics, model_act_fn, run_episodes
from .extractors import NavExtractor, load_encoder

__all__ = ["TrainConfig", "train", "write_json", "main"]


@dataclass
class TrainConfig:
    """One training run.  ``encoder``: ``pixels`` (NatureCNN), ``random-cnn`` or a world-model checkpoint."""

    task: str = "AC-near"
    encoder: str = "pixels"
    finetune: bool = False
    algo: str = "ppo"
    steps: int = 100_000
    seed: int = 0
    out: str = "runs/agent"
    n_envs: int = 16
    size: int = 64
    frames: int = 4
    actions: int = 4
    eval_every: int = 20_000
    eval_episodes: int = 2  # per eval env
    eval_envs: int = 16
    eval_start_seed: int = 12345
    checkpoint_every: int = 100_000
    train_subjects: str | None = None  # None: the preset's
    test_subjects: str | None = None
    threads: int = 2
    progress: bool = True
    ppo: dict = field(default_factory=lambda: {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "learning_rate": 3e-4,
                                               "gamma": 0.99, "gae_lambda": 0.95, "ent_coef": 0.0, "clip_range": 0.2})
    sac: dict = field(default_factory=lambda: {"buffer_size": 30_000, "learning_starts": 1_000, "batch_size": 128,
                                               "train_freq": 1, "gradient_steps": 2, "learning_rate": 3e-4,
                                               "gamma": 0.99})

    def __post_init__(self):
        get_preset(self.task)
        if self.algo not in ("ppo", "sac"):
            raise ValueError(f"algo must be 'ppo' or 'sac', got {self.algo!r}")
        for name in ("steps", "n_envs", "size", "frames", "eval_every", "eval_episodes", "eval_envs", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def write_json(path, obj) -> None:
    """Atomic JSON write (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def frozen_encoder(cfg: TrainConfig):
    """The frozen encoder module whose features the envs precompute (None: pixels or fine-tuning)."""
    if cfg.encoder == "pixels" or cfg.finetune:
        return None
    enc = load_encoder(cfg.encoder, seed=cfg.seed)
    enc.requires_grad_(False)
    return enc.eval()


def _eval_env(cfg: TrainConfig, encoder=None):
    return make_vec_env(cfg.task, cfg.eval_envs, split="test", size=cfg.size, frames=cfg.frames,
                        actions=cfg.actions, subjects=cfg.test_subjects, start_seed=cfg.eval_start_seed,
                        encoder=encoder)


class NavCallback(BaseCallback):
    """Progress bar, held-out evaluation every ``eval_every`` steps, and timing (``perf/…``).

    perf/env_fraction: share of wall time in env stepping + rendering (+ frozen-encoder features,
    perf/encode_fraction); perf/rollout_fraction:
    share in rollout collection (env + policy forward incl. feature extraction); perf/steps_per_s.
    """

    def __init__(self, cfg: TrainConfig, eval_env, out: Path):
        super().__init__()
        self.cfg, self.eval_env, self.out = cfg, eval_env, out
        self.curve: list[dict] = []
        self.last_episodes: list[dict] = []
        self.next_eval = 0
        self.t_rollout = 0.0
        self.t_eval = 0.0

    def _on_training_start(self):
        self.t0 = time.perf_counter()
        self.env_t0 = self.training_env.time_env
        self.enc_t0 = self.training_env.time_encode
        self.bar = tqdm(total=self.cfg.steps, desc=f"{self.cfg.algo} {self.cfg.encoder} s{self.cfg.seed}",
                        disable=not self.cfg.progress, unit="step", smoothing=0.1)
        self._evaluate()

    def _on_rollout_start(self):
        self._r0 = time.perf_counter()

    def _on_rollout_end(self):
        self.t_rollout += time.perf_counter() - self._r0

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        if self.num_timesteps >= self.next_eval:
            self._evaluate()
        return True

    def _on_training_end(self):
        if not self.curve or self.curve[-1]["step"] != self.num_timesteps:
            self._evaluate()
        self.bar.close()

    def perf(self) -> dict:
        wall = time.perf_counter() - self.t0 - self.t_eval
        env = self.training_env.time_env - self.env_t0
        enc = self.training_env.time_encode - self.enc_t0
        return {"wall_s": wall, "steps_per_s": self.num_timesteps / max(wall, 1e-9),
                "encode_fraction": enc / max(wall, 1e-9),
                "env_fraction": env / max(wall, 1e-9), "rollout_fraction": self.t_rollout / max(wall, 1e-9),
                "eval_s": self.t_eval}

    def _evaluate(self):
        t = time.perf_counter()
        episodes = run_episodes(model_act_fn(self.model), self.eval_env, self.cfg.eval_episodes)
        m = episode_metrics(episodes)
        self.last_episodes = episodes
        self.t_eval += time.perf_counter() - t
        row = {"step": int(self.num_timesteps), **{k: v for k, v in m.items()}}
        self.curve.append(row)
        for k in ("success_rate", "median_error", "median_distance_mm", "median_angle_deg", "mean_length", "mean_return"):
            if k in m:
                self.logger.record(f"eval/{k}", m[k])
        if self.num_timesteps > 0:
            for k, v in self.perf().items():
                self.logger.record(f"perf/{k}", v)
            self.logger.dump(self.num_timesteps)
        write_json(self.out / "evaluations.json", self.curve)
        self.bar.set_postfix(success=f"{m['success_rate']:.2f}", err=f"{m['median_error']:.1f}")
        self.next_eval = (self.num_timesteps // self.cfg.eval_every + 1) * self.cfg.eval_every


def build_model(cfg: TrainConfig, env, tensorboard_log: str | None):
    """The SB3 model: MultiInputPolicy over :class:`NavExtractor` (normalize_images=False).

    Frozen encoders run inside the envs (``features`` observations), so the policy holds no copy;
    pixels and fine-tuned encoders run in the extractor (SAC: separate actor and critic copies)."""
    policy_kwargs = {
        "features_extractor_class": NavExtractor,
        "features_extractor_kwargs": {"encoder": cfg.encoder, "finetune": cfg.finetune, "encoder_seed": cfg.seed},
        "normalize_images": False,
        "net_arch": [256, 256],
    }
    if cfg.algo == "ppo":
        kw = dict(cfg.ppo)
        kw["batch_size"] = min(kw["batch_size"], kw["n_steps"] * env.num_envs)
        return PPO("MultiInputPolicy", env, policy_kwargs=policy_kwargs, seed=cfg.seed, device="cpu",
                   tensorboard_log=tensorboard_log, verbose=0, **kw)
    return SAC("MultiInputPolicy", env, policy_kwargs=policy_kwargs, seed=cfg.seed, device="cpu",
               tensorboard_log=tensorboard_log, verbose=0, **cfg.sac)


def train(cfg: TrainConfig) -> dict:
    """Train, evaluate on held-out subjects, save; returns ``{"config", "curve", "final", "perf", "final_episodes"}``."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    encoder = frozen_encoder(cfg)
    env = make_vec_env(cfg.task, cfg.n_envs, split="train", size=cfg.size, frames=cfg.frames,
                       actions=cfg.actions, seed=cfg.seed, subjects=cfg.train_subjects, encoder=encoder)
    eval_env = _eval_env(cfg, encoder)
    model = build_model(cfg, env, str(out / "tb"))
    cb = NavCallback(cfg, eval_env, out)
    ckpt = CheckpointCallback(max(cfg.checkpoint_every // cfg.n_envs, 1), str(out / "checkpoints"), name_prefix="model")
    model.learn(cfg.steps, callback=CallbackList([cb, ckpt]), tb_log_name="tb", progress_bar=False)
    model.save(out / "model.zip")
    result = {"config": asdict(cfg), "curve": cb.curve, "final": cb.curve[-1], "perf": cb.perf(),
              "final_episodes": cb.last_episodes}
    write_json(out / "final_eval.json", result)
    env.close()
    eval_env.close()
    return result


def parse_args(argv=None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    p.add_argument("--task", default=d.task, help="task preset (navgym.presets), e.g. AC-near, midsag-far")
    p.add_argument("--encoder", default=d.encoder, help="pixels | random-cnn | world-model checkpoint")
    p.add_argument("--finetune", action="store_true", help="train the pretrained encoder too")
    p.add_argument("--algo", choices=("ppo", "sac"), default=d.algo)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=d.out)
    p.add_argument("--n-envs", type=int, default=d.n_envs)
    p.add_argument("--size", type=int, default=d.size)
    p.add_argument("--frames", type=int, default=d.frames)
    p.add_argument("--actions", type=int, default=d.actions, help="action-history length (0: none)")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes, help="episodes per eval env")
    p.add_argument("--eval-envs", type=int, default=d.eval_envs)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--train-subjects", default=None, help="override the preset's training subjects")
    p.add_argument("--test-subjects", default=None, help="override the preset's held-out subjects")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return TrainConfig(
        task=a.task, encoder=a.encoder, finetune=a.finetune, algo=a.algo, steps=a.steps, seed=a.seed, out=a.out,
        n_envs=a.n_envs, size=a.size, frames=a.frames, actions=a.actions, eval_every=a.eval_every,
        eval_episodes=a.eval_episodes, eval_envs=a.eval_envs, checkpoint_every=a.checkpoint_every,
        train_subjects=a.train_subjects, test_subjects=a.test_subjects, threads=a.threads, progress=not a.no_progress,
    )


def main(argv=None) -> None:
    r = train(parse_args(argv))
    f, perf = r["final"], r["perf"]
    print(f"final held-out success {f['success_rate']:.3f}  median error {f['median_error']:.2f}  "
          f"steps/s {perf['steps_per_s']:.0f}  env fraction {perf['env_fraction']:.1%}")


if __name__ == "__main__":
    main()
