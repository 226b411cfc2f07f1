"""Train an SB3 agent (PPO or SAC) on a navgym task preset.

    python -m agents.train --preset AC-near --encoder pixels --algo ppo --steps 200000 --out runs/ac_ppo

Writes to ``--out``: ``config.json``, TensorBoard events (``loss/…`` from SB3 under ``train/``,
``eval/…``, ``perf/…``), ``checkpoints/`` (SB3 zips every ``--checkpoint-every`` steps; with
``--normalize-reward`` also the reward statistics as ``.npz``, never a pickle),
``model.zip`` (final), ``evaluations.json`` (the held-out learning curve), ``final_eval.json`` and, for a
standardised frozen encoder, ``standardisation.npz`` (its feature statistics, read again on resume and by play).
Evaluation runs on the preset's held-out ``test`` subjects with fixed starts (see
:mod:`agents.episodes`).  Re-running the same command in the same ``--out`` resumes from the
newest checkpoint (the last step is always one), a larger ``--steps`` extends a run, and any other
change of settings is refused (use a new ``--out``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecNormalize
from tqdm.auto import tqdm

from navgym.configs import add_deprecated_alias, add_options, config_field, from_dict, options_config, parse_bool, to_dict
from navgym.deprecation import warn_deprecated
from navgym.files import RunFolderError, atomic_path, differences, write_json_atomic
from navgym.presets import get_preset
from world_model.device import device_field, resolve_device
from world_model.encoders import EncoderSpec
from world_model.standardise import load_statistics, save_statistics, statistics

from .envs import CONTROLS, NavVecEnv, make_nav_vec_env
from .episodes import episode_metrics, model_act_fn, run_episodes
from .extractors import CNNS, NavExtractor, StandardisedEncoder

__all__ = ["AgentConfig", "RunFolderError", "saved_config", "train", "build_agent", "main", "PPO_DEFAULTS", "SAC_DEFAULTS",
           "algo_settings", "build_model", "choose_device"]

#: SB3 PPO settings (``--ppo KEY=VALUE`` overrides one or sets any other plain PPO argument); measured for speed on 2 CPU cores, see docs/agents.md
PPO_DEFAULTS = {"n_steps": 128, "batch_size": 512, "n_epochs": 3, "learning_rate": 3e-4, "gamma": 0.99,
                "gae_lambda": 0.95, "ent_coef": 0.0, "clip_range": 0.2}
#: SB3 SAC settings (``--sac KEY=VALUE``)
SAC_DEFAULTS = {"buffer_size": 30_000, "learning_starts": 1_000, "batch_size": 128, "train_freq": 1,
                "gradient_steps": 2, "learning_rate": 3e-4, "gamma": 0.99}


_f = config_field  # short form for the field table below


@dataclass
class AgentConfig:
    """One agent training run (stored as ``config.json`` in its output folder)."""

    preset: str = _f("AC-near", "task preset id (navgym.presets), e.g. AC-near, mid_sagittal-far")
    encoder: str = _f("pixels", "pixels (a CNN trained end to end) | random-cnn | a world-model checkpoint or method")
    finetune: bool = _f(False, "train the pretrained encoder too (otherwise frozen)")
    cnn: str = _f("small", f"CNN for --encoder pixels: {' | '.join(CNNS)}", choices=tuple(CNNS))
    algo: str = _f("ppo", "ppo | sac", choices=("ppo", "sac"))
    steps: int = _f(100_000, "environment steps to train")
    seed: int = _f(0, "seed of the policy, the training envs and random encoders")
    out: str = _f("runs/agent", "output folder")
    n_envs: int = _f(16, "training envs stepped together")
    size: int = _f(64, "slice pixels per side")
    frames: int = _f(4, "stacked frames the agent sees")
    actions: int = _f(4, "previous actions the agent sees (0: none)")
    controls: str = _f("all", "action components the agent drives: all 7; task: those the task's error "
                       "depends on (landmarks: translations; planes: translations + rotations about the in-plane "
                       "axes; never zoom); "
                       "task+zoom: those and zoom", choices=CONTROLS)
    standardize_features: bool = _f(True, "frozen encoders: standardise each feature dimension by its mean and std "
                                    "over a fixed sample of training slices (pixels and fine-tuned encoders: "
                                    "no effect)")
    log_std_init: float = _f(0.0, "initial log std of the Gaussian policy (PPO; SAC: -3 as SB3)")
    normalize_reward: bool = _f(False, "scale rewards by a running std of the discounted return (SB3 VecNormalize)")
    lr_decay: bool = _f(False, "PPO: learning rate decays linearly from --ppo learning_rate to 0 at --steps")
    eval_every: int = _f(20_000, "steps between held-out evaluations")
    eval_episodes: int = _f(2, "episodes per eval env")
    eval_envs: int = _f(16, "held-out eval envs")
    eval_start_seed: int = _f(12345, "fixed starts of the held-out episodes (the env's episode_seed)")
    checkpoint_every: int = _f(100_000, "steps between checkpoints (resume points)")
    train_subjects: str | None = _f(None, "override the preset's training subjects")
    test_subjects: str | None = _f(None, "override the preset's held-out subjects")
    threads: int = _f(2, "torch CPU threads")
    device: str = device_field()
    progress: bool = _f(True, "progress bar")
    ppo: dict = _f(PPO_DEFAULTS, "PPO settings: any PPO argument that is a number, bool or string, e.g. vf_coef=0.5",
                   parse=lambda s: _setting("ppo", s), metavar="KEY=VALUE", nargs="*")
    sac: dict = _f(SAC_DEFAULTS, "SAC settings: any SAC argument that is a number, bool or string",
                   parse=lambda s: _setting("sac", s), metavar="KEY=VALUE", nargs="*")

    def __post_init__(self):
        get_preset(self.preset)
        resolve_device(self.device, "device")
        if self.algo not in ("ppo", "sac"):
            raise ValueError(f"algo must be 'ppo' or 'sac', got {self.algo!r}")
        if self.controls not in CONTROLS:
            raise ValueError(f"controls must be one of {CONTROLS}, got {self.controls!r}")
        if self.cnn not in CNNS:
            raise ValueError(f"cnn must be one of {sorted(CNNS)}, got {self.cnn!r}")
        for name in ("steps", "n_envs", "size", "frames", "eval_every", "eval_episodes", "eval_envs", "checkpoint_every",
                     "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ppo", "sac"):
            unknown = set(getattr(self, name)) - set(algo_settings(name))
            if unknown:
                raise ValueError(f"{name}: unknown settings {sorted(unknown)}; known: {sorted(algo_settings(name))}")

    @property
    def task(self) -> str:
        """Deprecated name of :attr:`preset`."""
        warn_deprecated("AgentConfig.task", "AgentConfig.preset")
        return self.preset


def choose_device(spec: str = "auto") -> str:
    """Deprecated: ``str(world_model.device.resolve_device(spec))``."""
    warn_deprecated("agents.train.choose_device", "world_model.device.resolve_device")
    return str(resolve_device(spec))


#: training slices whose features give a frozen encoder's standardisation (16 envs x 32 random steps)
STANDARDISE_SAMPLE = (16, 32)
#: the file of a run folder holding its frozen encoder's standardisation statistics
STANDARDISATION_FILE = "standardisation.npz"


def encoder_spec(cfg: AgentConfig) -> EncoderSpec:
    """The :class:`EncoderSpec` of ``cfg.encoder``: a SOURCE alone (``LABEL=`` and ``ft:`` are agents.benchmark's;
    ``--finetune`` fine-tunes), else ``ValueError`` naming it."""
    spec = EncoderSpec.parse(cfg.encoder)
    if spec.label is not None or spec.finetune:
        raise ValueError(f"--encoder {cfg.encoder}: takes an encoder alone (LABEL= and ft: are agents.benchmark "
                         f"--encoders' forms; --finetune fine-tunes)")
    return spec


def frozen_encoder(cfg: AgentConfig, folder: str | Path | None = None, save: bool = False, encoder=None):
    """The frozen encoder module whose features the envs precompute (None: pixels or fine-tuning), loaded once
    (``encoder``: ``cfg.encoder``'s module already loaded by :meth:`EncoderSpec.load` with ``cfg.seed`` and
    ``cfg.size``, used as it is); with ``standardize_features`` wrapped in :class:`StandardisedEncoder` with the statistics saved in the run
    ``folder`` (default ``cfg.out``) as :data:`STANDARDISATION_FILE`.  Where there are none (a new run, or one
    saved before runs kept them), the statistics of its features over a fixed sample of training slices (the
    starts and uniform random actions of :data:`STANDARDISE_SAMPLE` envs x steps, seeded by ``cfg.seed``) are
    measured, and with ``save`` written there, so training, its evaluations and later play use the same."""
    spec = encoder_spec(cfg)
    if spec.kind == "pixels" or cfg.finetune:
        return None
    enc = spec.load(seed=cfg.seed, size=cfg.size) if encoder is None else encoder
    enc.requires_grad_(False)
    enc.eval()
    if not cfg.standardize_features:
        return enc
    path = Path(cfg.out if folder is None else folder) / STANDARDISATION_FILE
    about = {"encoder": cfg.encoder, "seed": cfg.seed, "size": cfg.size, "sample": STANDARDISE_SAMPLE}
    if path.exists():
        mean, std, saved = load_statistics(path, enc.feature_dim)
        if {k: saved.get(k) for k in ("encoder", "seed", "size")} != {k: about[k] for k in ("encoder", "seed", "size")}:
            raise ValueError(f"{path}: statistics of another encoder ({saved}); the run's is {about}")
        return StandardisedEncoder(enc, mean, std).eval()
    n_envs, n_steps = STANDARDISE_SAMPLE
    env = make_nav_vec_env(cfg.preset, n_envs, split="train", size=cfg.size, frames=1, actions=0, seed=cfg.seed,
                           subjects=cfg.train_subjects, controls=cfg.controls)
    try:
        env.action_space.seed(cfg.seed)
        frames = [env.reset()["image"][:, 0]]
        for _ in range(n_steps):
            env.step_async(np.stack([env.action_space.sample() for _ in range(n_envs)]))
            frames.append(env.step_wait()[0]["image"][:, 0])
    finally:
        env.close()
    with torch.no_grad():
        mean, std = statistics(enc.features(torch.from_numpy(np.concatenate(frames))).float(), keepdims=False)
    if save:
        save_statistics(path, mean, std, **about)
    return StandardisedEncoder(enc, mean, std).eval()


def eval_env(cfg: AgentConfig, encoder=None):
    """The held-out evaluation env of ``cfg`` (preset ``test`` subjects, fixed starts)."""
    return make_nav_vec_env(cfg.preset, cfg.eval_envs, split="test", size=cfg.size, frames=cfg.frames,
                        actions=cfg.actions, subjects=cfg.test_subjects, start_seed=cfg.eval_start_seed,
                        encoder=encoder, controls=cfg.controls)


class NavCallback(BaseCallback):
    """Progress bar, held-out evaluation every ``eval_every`` steps (at the first rollout start past each
    multiple, i.e. after an update, and at the end), and timing (``perf/…``).

    perf/cpu_s: CPU seconds of this process (all threads) outside evaluations, a figure less sensitive
    than wall time to other jobs on a shared machine; perf/env_fraction: share of wall time in env stepping + rendering (+ frozen-encoder features,
    perf/encode_fraction); perf/rollout_fraction: share in rollout collection (env + policy forward
    incl. feature extraction); perf/steps_per_s.  ``curve``: earlier evaluations when resuming.
    """

    def __init__(self, cfg: AgentConfig, eval_env, out: Path, curve: list[dict] | None = None):
        super().__init__()
        self.cfg, self.eval_env, self.out = cfg, eval_env, out
        self.curve: list[dict] = list(curve or [])
        self.last_episodes: list[dict] = []
        self.next_eval = 0
        self.t_rollout = 0.0
        self.t_eval = self.cpu_eval = 0.0

    def _on_training_start(self):
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()
        self.steps0 = self.num_timesteps
        self.nav_env = _nav_env(self.training_env)
        self.env_t0, self.enc_t0 = self.nav_env.time_env, self.nav_env.time_encode
        self.bar = tqdm(total=self.cfg.steps, initial=self.num_timesteps, unit="step", smoothing=0.1,
                        desc=f"{self.cfg.algo} {self.cfg.encoder} s{self.cfg.seed}", disable=not self.cfg.progress)
        if self.curve and self.curve[-1]["step"] == self.num_timesteps:
            self.next_eval = (self.num_timesteps // self.cfg.eval_every + 1) * self.cfg.eval_every
        else:
            self._evaluate()

    def _on_rollout_start(self):
        # evaluations happen here (after the previous update), so each one scores the model as saved at that step
        if self.num_timesteps >= self.next_eval:
            self._evaluate()
        self._r0 = time.perf_counter()

    def _on_rollout_end(self):
        self.t_rollout += time.perf_counter() - self._r0

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self):
        if not self.curve or self.curve[-1]["step"] != self.num_timesteps:
            self._evaluate()
        self.bar.close()

    def perf(self) -> dict:
        """Timing of this invocation (a resumed run: since the resume)."""
        wall = max(time.perf_counter() - self.t0 - self.t_eval, 1e-9)
        env = self.nav_env.time_env - self.env_t0
        enc = self.nav_env.time_encode - self.enc_t0
        cpu = time.process_time() - self.cpu0 - self.cpu_eval
        return {"wall_s": wall, "cpu_s": cpu, "steps": self.num_timesteps - self.steps0,
                "steps_per_s": (self.num_timesteps - self.steps0) / wall, "encode_fraction": enc / wall,
                "env_fraction": env / wall, "rollout_fraction": self.t_rollout / wall, "eval_s": self.t_eval,
                "threads": torch.get_num_threads(), "device": str(self.model.device)}

    def _evaluate(self):
        t, c = time.perf_counter(), time.process_time()
        episodes = run_episodes(model_act_fn(self.model), self.eval_env, self.cfg.eval_episodes)
        m = episode_metrics(episodes)
        self.last_episodes = episodes
        self.t_eval += time.perf_counter() - t
        self.cpu_eval += time.process_time() - c
        self.curve.append({"step": int(self.num_timesteps), **m})
        for k in ("success_rate", "median_error", "median_distance_mm", "median_angle_deg", "mean_length", "mean_return"):
            if k in m:
                self.logger.record(f"eval/{k}", m[k])
        if self.num_timesteps > self.steps0:
            for k, v in self.perf().items():
                if not isinstance(v, str):
                    self.logger.record(f"perf/{k}", v)
            self.logger.dump(self.num_timesteps)
        write_json_atomic(self.out / "evaluations.json", self.curve)
        self.bar.set_postfix(success=f"{m['success_rate']:.2f}", err=f"{m['median_error']:.1f}")
        self.next_eval = (self.num_timesteps // self.cfg.eval_every + 1) * self.cfg.eval_every


def _nav_env(env) -> NavVecEnv:
    """The :class:`NavVecEnv` under SB3 wrappers (VecNormalize)."""
    while not isinstance(env, NavVecEnv):
        env = env.venv
    return env


def reward_stats_path(checkpoint: Path) -> Path:
    """Where the reward statistics of ``checkpoints/model_N_steps.zip`` are: ``model_vecnormalize_N_steps.npz``."""
    step = checkpoint.stem.split("_")[1]
    return checkpoint.with_name(f"model_vecnormalize_{step}_steps.npz")


class NavCheckpoint(CheckpointCallback):
    """SB3's checkpoints plus, under :class:`VecNormalize`, its reward statistics as plain arrays
    (:func:`reward_stats_path`; SB3 would pickle the wrapper, and a pickle runs code when loaded)."""

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0 and isinstance(self.model.get_env(), VecNormalize):
            rms = self.model.get_env().ret_rms
            path = reward_stats_path(Path(self._checkpoint_path(extension="zip")))
            atomic_path(path, lambda tmp: np.savez(tmp, mean=rms.mean, var=rms.var, count=np.float64(rms.count)))
        return super()._on_step()


def load_reward_stats(env: VecNormalize, checkpoint: Path) -> None:
    """Restore ``env``'s reward statistics saved with ``checkpoint`` (arrays only, no pickle); raises
    ``FileNotFoundError`` / ``ValueError`` naming the file when they are missing, pickled or damaged."""
    path = reward_stats_path(checkpoint)
    if not path.exists():
        pickled = sorted(p.name for p in checkpoint.parent.glob(f"*vecnormalize_{checkpoint.stem.split('_')[1]}_steps.pkl"))
        hint = (f"; {pickled[0]} is a pickle (it could run code when loaded), which agents.train no longer reads"
                if pickled else "")
        raise FileNotFoundError(f"--normalize-reward: no reward statistics {path} for the resume point {checkpoint}"
                                f"{hint}; resume from scratch with a new --out (or delete {checkpoint.parent})")
    try:
        with np.load(path, allow_pickle=False) as z:
            mean, var, count = (np.asarray(z[k], np.float64) for k in ("mean", "var", "count"))
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"--normalize-reward: {path} is not readable reward statistics: {e}") from None
    rms = env.ret_rms
    if mean.shape != np.shape(rms.mean) or var.shape != np.shape(rms.var) or count.shape != () \
            or not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all() and count > 0):
        raise ValueError(f"--normalize-reward: {path} holds invalid statistics (shapes {mean.shape}, {var.shape}, "
                         f"{count.shape}; need finite values, var >= 0, count > 0)")
    rms.mean, rms.var, rms.count = mean, var, float(count)


def build_agent(cfg: AgentConfig, env, tensorboard_log: str | None):
    """The SB3 model: MultiInputPolicy over :class:`NavExtractor` (normalize_images=False).

    Frozen encoders run inside the envs (``features`` observations), so the policy holds no copy;
    pixels and fine-tuned encoders run in the extractor (SAC: separate actor and critic copies)."""
    policy_kwargs = {
        "features_extractor_class": NavExtractor,
        "features_extractor_kwargs": {"encoder": cfg.encoder, "finetune": cfg.finetune, "cnn": cfg.cnn,
                                      "encoder_seed": cfg.seed},
        "normalize_images": False,
        "net_arch": [256, 256],
    }
    device = str(resolve_device(cfg.device))
    if cfg.algo == "ppo":
        kw = dict(cfg.ppo)
        kw["batch_size"] = min(kw["batch_size"], kw["n_steps"] * env.num_envs)
        if cfg.lr_decay:  # SB3's progress runs 1 -> 0 over the whole run, resumed runs included
            kw["learning_rate"] = LinearSchedule(kw["learning_rate"], 0.0, 1.0)
        return PPO("MultiInputPolicy", env, policy_kwargs={**policy_kwargs, "log_std_init": cfg.log_std_init},
                   seed=cfg.seed, device=device, tensorboard_log=tensorboard_log, verbose=0, **kw)
    return SAC("MultiInputPolicy", env, policy_kwargs=policy_kwargs, seed=cfg.seed, device=device,
               tensorboard_log=tensorboard_log, verbose=0, **cfg.sac)


def build_model(cfg: AgentConfig, env, tensorboard_log: str | None):
    """Deprecated name of :func:`build_agent`."""
    warn_deprecated("agents.train.build_model", "agents.train.build_agent")
    return build_agent(cfg, env, tensorboard_log)


def saved_config(d: dict) -> AgentConfig:
    """The :class:`AgentConfig` of a saved ``config.json`` (fields added since take their defaults; ``task``, the
    old name of ``preset``, is read as it)."""
    if "task" in d:
        d = {**{k: v for k, v in d.items() if k != "task"}, "preset": d["task"]}
    return from_dict(AgentConfig, d)


def _identity(c: dict, ignore: tuple[str, ...]) -> dict:
    """What makes a run: its config less ``ignore`` and settings that cannot affect it (frozen-feature
    standardisation for pixels and fine-tuned encoders)."""
    moot = ("standardize_features",) if c["encoder"] == "pixels" or c["finetune"] else ()
    return {k: v for k, v in c.items() if k not in ignore and k not in moot}


def _differences(saved: dict, cfg: AgentConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Where a saved config (read by :func:`saved_config`) differs from ``cfg`` up to ``ignore``, as
    ``name: saved -> now`` (dict settings per key: ``ppo.gamma: 0.99 -> 0.95``)."""
    try:
        saved = to_dict(saved_config(saved))
    except (TypeError, ValueError) as e:
        return [f"unreadable config ({e})"]
    return differences(_identity(saved, ignore), _identity(to_dict(cfg), ignore))


def _same(saved: dict, cfg: AgentConfig, ignore: tuple[str, ...] = ()) -> bool:
    """Whether a saved config (read by :func:`saved_config`) equals ``cfg`` up to ``ignore``."""
    return not _differences(saved, cfg, ignore)


#: how and where a run executes, not what it is: a finished run is reused whatever they are (a run folder may be
#: moved or copied; a report may be assembled with other threads), and a resumed run may change them
EXECUTION_SETTINGS = ("out", "progress", "threads", "device")
#: settings that may change when a run resumes (everything else must match the saved config.json)
RESUMABLE_CHANGES = ("steps", *EXECUTION_SETTINGS)


def _checkpoints(out: Path) -> dict[int, Path]:
    """The checkpoints of the run in ``out`` by step."""
    return {int(p.stem.split("_")[1]): p for p in out.glob("checkpoints/model_*_steps.zip")}


def _resume_point(cfg: AgentConfig, out: Path) -> tuple[Path | None, list[dict]]:
    """The newest checkpoint of the earlier run in ``out`` and that run's evaluations up to it ((None, []): a new
    run).  Raises :class:`RunFolderError` when ``out`` holds a run whose config differs from ``cfg`` beyond
    :data:`RESUMABLE_CHANGES`, or one that went past ``cfg.steps`` (runs extend, never shrink), or a finished run
    with no checkpoint to extend from (saved before runs checkpointed their last step)."""
    saved = out / "config.json"
    if not saved.exists():
        return None, []
    try:
        diffs = _differences(json.loads(saved.read_text()), cfg, ignore=RESUMABLE_CHANGES)
    except ValueError as e:
        diffs = [f"unreadable config.json ({e})"]
    if diffs:
        raise RunFolderError(f"{out} holds a run with other settings ({'; '.join(diffs)}); use a new --out, or "
                             f"the saved settings to resume or extend it")
    ckpts = _checkpoints(out)
    if ckpts and max(ckpts) > cfg.steps:
        raise RunFolderError(f"{out} holds this run up to step {max(ckpts)}, past --steps {cfg.steps}; use "
                             f"--steps {max(ckpts)} or more to extend it, or a new --out")
    if not ckpts:
        if (out / "final_eval.json").exists():
            raise RunFolderError(f"{out} holds a finished run with no checkpoint to extend from (saved before runs "
                                 f"checkpointed their last step); use a new --out")
        return None, []  # interrupted before its first checkpoint: starts over
    step = max(ckpts)
    curve = json.loads((out / "evaluations.json").read_text()) if (out / "evaluations.json").exists() else []
    return ckpts[step], [c for c in curve if c["step"] <= step]


def train(cfg: AgentConfig, encoder=None) -> dict:
    """Train (or resume), evaluate on held-out subjects, save; returns ``{"config", "curve", "final", "perf",
    "final_episodes", "resumed_from"}``.  A finished run in ``cfg.out`` with the same config up to
    :data:`EXECUTION_SETTINGS` is returned as saved.  ``encoder``: ``cfg.encoder``'s module already loaded
    (:meth:`EncoderSpec.load` with ``cfg.seed`` and ``cfg.size``), so a frozen encoder is not loaded again."""
    out = Path(cfg.out)
    done = out / "final_eval.json"
    if done.exists():
        prev = json.loads(done.read_text())
        if _same(prev["config"], cfg, ignore=EXECUTION_SETTINGS):
            return prev  # this very run has finished
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    resume, curve = _resume_point(cfg, out)
    write_json_atomic(out / "config.json", to_dict(cfg))
    encoder = frozen_encoder(cfg, out, save=True, encoder=encoder)
    env = make_nav_vec_env(cfg.preset, cfg.n_envs, split="train", size=cfg.size, frames=cfg.frames,
                       actions=cfg.actions, seed=cfg.seed, subjects=cfg.train_subjects, encoder=encoder,
                       controls=cfg.controls)
    if cfg.normalize_reward:
        gamma = (cfg.ppo if cfg.algo == "ppo" else cfg.sac)["gamma"]
        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=gamma)
    evaluation = eval_env(cfg, encoder)
    model = build_agent(cfg, env, str(out / "tb"))
    if resume is not None:
        model.set_parameters(str(resume), device=model.device)
        model.num_timesteps = int(resume.stem.split("_")[1])
        if cfg.normalize_reward:
            load_reward_stats(env, resume)
    cb = NavCallback(cfg, evaluation, out, curve)
    ckpt = NavCheckpoint(max(cfg.checkpoint_every // cfg.n_envs, 1), str(out / "checkpoints"), name_prefix="model")
    model.learn(cfg.steps - model.num_timesteps, callback=CallbackList([cb, ckpt]), tb_log_name="tb",
                progress_bar=False, reset_num_timesteps=resume is None)
    model.save(out / "model.zip")
    if not _checkpoints(out).get(model.num_timesteps):  # the last step is always a resume point (a larger --steps extends)
        model.save(out / "checkpoints" / f"model_{model.num_timesteps}_steps.zip")
        if cfg.normalize_reward:
            env.save(str(out / "checkpoints" / f"vecnormalize_{model.num_timesteps}_steps.pkl"))
    result = {"config": to_dict(cfg), "curve": cb.curve, "final": cb.curve[-1], "perf": cb.perf(),
              "final_episodes": cb.last_episodes, "resumed_from": None if resume is None else str(resume)}
    write_json_atomic(out / "final_eval.json", result)
    env.close()
    evaluation.close()
    return result


#: constructor arguments :func:`build_agent` sets itself (not ``--ppo`` / ``--sac`` settings)
_SET_BY_TRAIN = ("policy", "env", "seed", "device", "tensorboard_log", "verbose", "policy_kwargs")
_PLAIN = {"bool": bool, "int": int, "float": float, "str": str, "None": type(None)}


def algo_settings(algo: str) -> dict[str, tuple[type, ...]]:
    """The settings ``--ppo`` / ``--sac`` accept: every constructor argument of SB3's PPO / SAC whose type is a
    plain number, bool or string (possibly None), with those types (read from the signature)."""
    cls = PPO if algo == "ppo" else SAC
    out = {}
    for name, prm in inspect.signature(cls.__init__).parameters.items():
        if name in _SET_BY_TRAIN or name.startswith("_") or prm.default is inspect.Parameter.empty:
            continue
        ann = prm.annotation.__name__ if isinstance(prm.annotation, type) else str(prm.annotation)
        types = tuple(_PLAIN[t.strip()] for t in ann.split("|") if t.strip() in _PLAIN)
        if any(t is not type(None) for t in types):
            out[name] = types
    return out


def parse_setting(algo: str, text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value typed as the constructor argument: bool 1/true/0/false, int, float, str,
    None as ``none``); raises ValueError naming the key and the accepted ones."""
    key, sep, value = text.partition("=")
    known = algo_settings(algo)
    if not sep or key not in known:
        raise ValueError(f"expected KEY=VALUE with KEY a {algo.upper()} argument in {sorted(known)}, got {text!r}")
    types = known[key]
    if type(None) in types and value.lower() == "none":
        return key, None
    for t in types:
        try:
            if t is bool:
                return key, parse_bool(value)
            if t is int and float(value).is_integer():
                return key, int(float(value))
            if t in (float, str):
                return key, t(value)
        except (ValueError, argparse.ArgumentTypeError):
            continue
    raise ValueError(f"{algo} {key}: expected {' or '.join(t.__name__ for t in types)}, got {value!r}")


def _setting(algo: str, text: str) -> tuple[str, object]:
    """argparse type of one ``--ppo`` / ``--sac`` ``KEY=VALUE``."""
    try:
        return parse_setting(algo, text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_config_arguments(p, skip: tuple[str, ...] = (), base: AgentConfig | None = None) -> None:
    """One ``--name`` option per :class:`AgentConfig` field (:func:`navgym.configs.add_options`; defaults from
    ``base``, else the field's); ``--ppo`` / ``--sac`` take ``KEY=VALUE`` overrides of the settings;
    ``--task`` is the deprecated name of ``--preset``."""
    add_options(p, AgentConfig, defaults=base, skip=skip)
    if "preset" not in skip:
        add_deprecated_alias(p, "--task", "--preset")


def config_from_args(a: argparse.Namespace, base: AgentConfig | None = None) -> AgentConfig:
    """The :class:`AgentConfig` of parsed :func:`add_config_arguments` options (other fields from ``base``)."""
    return options_config(AgentConfig, a, base or AgentConfig())


def parser(base: AgentConfig | None = None) -> argparse.ArgumentParser:
    """``python -m agents.train`` options: one per :class:`AgentConfig` field, help from the field, defaults from
    ``base`` (``--config``) or the field."""
    p = argparse.ArgumentParser(prog="python -m agents.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, metavar="FILE",
                   help="start from a run's settings (its config.json); options given here override them "
                        "(default: none)")
    add_config_arguments(p, base=base)
    return p


def parse_args(argv=None) -> AgentConfig:
    """The config of the command line: ``--config FILE``'s settings (if given), the options on top."""
    with warnings.catch_warnings():  # a deprecated option warns once, in the full parse below
        warnings.simplefilter("ignore", DeprecationWarning)
        first, _ = parser().parse_known_args(argv)
    base = None
    if first.config is not None:
        try:
            base = saved_config(json.loads(Path(first.config).read_text()))
        except (OSError, TypeError, ValueError) as e:
            parser().error(f"--config {first.config}: {e}")
    p = parser(base)
    try:
        return config_from_args(p.parse_args(argv), base)
    except ValueError as e:
        p.error(str(e))


def main(argv=None) -> None:
    try:
        r = train(parse_args(argv))
    except RunFolderError as e:
        parser().error(str(e))
    f, perf = r["final"], r["perf"]
    print(f"final held-out success {f['success_rate']:.3f}  median error {f['median_error']:.2f}  "
          f"steps/s {perf['steps_per_s']:.0f}  env fraction {perf['env_fraction']:.1%}")


if __name__ == "__main__":
    main()
