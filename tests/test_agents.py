"""Agents: presets, the SB3 VecEnv adapter, feature extractors, evaluation metrics, a short training run."""

import contextlib
import io
import json
from dataclasses import asdict, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from agents.benchmark import QUICK, _plot, summarise_runs
from agents.envs import make_nav_vec_env
from agents.episodes import episode_metrics, policy_act_fn, run_episodes, steps_to
from agents.extractors import NavExtractor, RandomCNN
from agents.train import AgentConfig, build_agent, choose_device, train
from navgym.presets import PRESETS, START, get_preset
from navgym.stats import wilson


def _env(n=2, **kw):
    return make_nav_vec_env("AC-near", n, size=40, subjects="template", **kw)


class StandIn(nn.Module):
    """Small encoder following the world-model protocol: features((B, H, W) uint8) -> (B, 8)."""

    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 8)

    def features(self, frames):
        assert frames.dtype == torch.uint8 and frames.ndim == 3
        x = nn.functional.adaptive_avg_pool2d(frames.float()[:, None] / 255.0, 4).flatten(1)
        return self.lin(x)


# --- presets ---------------------------------------------------------------------------------------
def test_presets_registered_and_distinct():
    landmarks = {p.task_kwargs["landmark"] for p in PRESETS.values() if p.task == "landmark"}
    planes = {p.task_kwargs["plane"] for p in PRESETS.values() if p.task == "plane"}
    assert {"AC"} < landmarks and len(landmarks) >= 3 and planes == {"mid_sagittal", "acpc_axial"}
    env = gym.make("MRINav-AC-far-v0", size=32)
    assert env.spec.max_episode_steps == 200
    assert env.unwrapped.config.start_jitter_mm == START["far"]["start_jitter_mm"]
    assert get_preset("MRINav-mid_sagittal-near-v0").task == "plane"
    with pytest.raises(ValueError, match="unknown task preset"):
        get_preset("nope")
    with pytest.raises(ValueError, match="split"):
        get_preset("AC-near").env_kwargs("val")
    assert get_preset("AC-near").env_kwargs("test")["subjects"].endswith(":test")
    # a preset env holds all its training subjects: drawing one per episode never rebuilds one
    pool = env.unwrapped.nav.subjects
    assert len(pool) > 8 and pool.cache_size == len(pool)
    assert gym.make("MRINav-v0", subjects="synthetic:12:train", size=32).unwrapped.nav.subjects.cache_size == 8


def test_renamed_preset_ids_are_deprecated_aliases():
    """fourthventricle-* and midsag-* (preset and gym ids) still work, warning with the new id."""
    assert {"fourth_ventricle-near", "mid_sagittal-far"} <= set(PRESETS) and not {"midsag-far"} & set(PRESETS)
    for old, new in (("midsag-far", "mid_sagittal-far"), ("MRINav-fourthventricle-near-v0", "fourth_ventricle-near")):
        with pytest.warns(DeprecationWarning, match=new):
            assert get_preset(old) is PRESETS[new]
    with pytest.warns(DeprecationWarning, match="MRINav-mid_sagittal-near-v0"):
        env = gym.make("MRINav-midsag-near-v0", size=32)
    assert env.spec.max_episode_steps == 100 and env.unwrapped.task.plane == "mid_sagittal"
    with pytest.warns(DeprecationWarning, match="MRINav-fourth_ventricle-far-v0"):
        vec = gym.make_vec("MRINav-fourthventricle-far-v0", 2, vectorization_mode="vector_entry_point", size=32)
    assert vec.unwrapped.nav.task.landmark == "fourth_ventricle"


# --- VecEnv adapter ----------------------------------------------------------------------------------
def test_vecenv_stacks_frames_and_resets_with_terminal_observation():
    env = _env(2, frames=3, actions=2)
    obs = env.reset()
    assert obs["image"].shape == (2, 3, 40, 40) and obs["actions"].shape == (2, 14)
    assert (obs["image"][:, 0] == obs["image"][:, 2]).all() and not obs["actions"].any()
    a = np.full((2, 7), 0.5, np.float32)
    obs2, r, done, infos = env.step(a)
    assert (obs2["image"][:, :2] == obs["image"][:, 1:]).all() and np.allclose(obs2["actions"][:, 7:], 0.5)
    assert r.shape == (2,) and {"center_mm", "target", "error"} <= set(infos[0])
    act = policy_act_fn("oracle")
    obs, done, infos, starts, n = obs2, np.zeros(2, bool), infos, np.ones(2, bool), 0
    while not done.any():
        obs, _, done, infos = env.step(act(obs, infos, starts))
        starts, n = done, n + 1
    i = int(np.flatnonzero(done)[0])
    ep = infos[i]["episode"]
    assert ep["is_success"] and ep["error"] <= 3.0 and ep["l"] == n + 1 and not infos[i]["TimeLimit.truncated"]
    assert infos[i]["is_success"]  # where SB3 reads the finished episode's success
    assert infos[i]["terminal_observation"]["image"].shape == (3, 40, 40)
    assert not obs["actions"][i].any()  # the new episode starts with an empty action history
    assert infos[i]["error"] > 3.0  # infos describe the new episode's pose


def test_adapter_transitions_equal_the_vector_envs():
    """The SB3 adapter adds memory only: rewards, dones, frames, final observations and infos are
    MRINavVectorEnv's (SAME_STEP autoreset), step for step, through successes and time limits."""
    from gymnasium.vector import AutoresetMode

    from navgym.env import MRINavVectorEnv
    from navgym.presets import subject_kwargs

    n, size = 3, 32
    adapter = make_nav_vec_env("AC-near", n, size=size, frames=2, actions=1, seed=5, subjects="template")
    kw = {**get_preset("AC-near").env_kwargs("train"), **subject_kwargs("template")}
    venv = MRINavVectorEnv(n, max_episode_steps=100, size=size, autoreset_mode=AutoresetMode.SAME_STEP, **kw)
    obs = adapter.reset()
    ref_obs, ref_info = venv.reset(seed=5)
    assert np.array_equal(obs["image"][:, -1], ref_obs[:, 0])
    oracle, rng = policy_act_fn("oracle"), np.random.default_rng(0)
    infos, starts = adapter.current_infos(), np.ones(n, bool)
    kinds = {"terminated": 0, "truncated": 0}
    for t in range(130):
        act = oracle(obs, infos, starts)  # env 0: the oracle (successes), env 1: idle (time limit), env 2: random
        act[1] = 0.0
        act[2] = rng.uniform(-1, 1, 7)
        obs, reward, done, infos = adapter.step(act)
        ref_obs, ref_reward, term, trunc, ref_info = venv.step(act.astype(np.float32))
        starts = done
        assert np.allclose(reward, ref_reward) and np.array_equal(done, term | trunc)
        assert np.array_equal(obs["image"][:, -1], ref_obs[:, 0])
        for i in range(n):
            assert np.allclose(infos[i]["center_mm"], ref_info["center_mm"][i]) and infos[i]["error"] == ref_info["error"][i]
            if done[i]:
                assert np.array_equal(infos[i]["terminal_observation"]["image"][-1], ref_info["final_obs"][i][0])
                assert infos[i]["TimeLimit.truncated"] == bool(trunc[i] and not term[i])
                assert infos[i]["episode"]["error"] == ref_info["final_info"]["error"][i]
                assert infos[i]["episode"]["subject_id"] == ref_info["final_info"]["subject_id"][i]
                assert (obs["image"][i] == obs["image"][i, -1]).all() and not obs["actions"][i].any()
                kinds["truncated" if infos[i]["TimeLimit.truncated"] else "terminated"] += 1
    assert kinds["terminated"] >= 1 and kinds["truncated"] >= 1


def test_task_controls_drive_only_what_the_error_depends_on():
    env = _env(2, actions=1, controls="task", start_seed=3)
    assert env.action_space.shape == (3,)
    env.reset()
    before = env.current_infos()
    obs, *_ = env.step(np.ones((2, 3), np.float32))
    after = env.current_infos()
    assert np.allclose(obs["actions"], [1, 1, 1, 0, 0, 0, 0])  # the history holds the full 7-d action
    assert np.allclose(after[0]["rotation"], before[0]["rotation"]) and after[0]["fov_mm"] == before[0]["fov_mm"]
    assert not np.allclose(after[0]["center_mm"], before[0]["center_mm"])
    plane = make_nav_vec_env("mid_sagittal-near", 1, size=40, subjects="template", controls="task")
    assert plane.action_space.shape == (5,)  # no spin about the normal: it leaves the plane as it is
    zoom = _env(1, actions=1, controls="task+zoom", start_seed=3)
    assert zoom.action_space.shape == (4,)
    zoom.reset()
    fov = zoom.current_infos()[0]["fov_mm"]
    obs, *_ = zoom.step(np.array([[0, 0, 0, 1]], np.float32))  # +1 zooms in
    assert np.allclose(obs["actions"], [0, 0, 0, 0, 0, 0, 1]) and zoom.current_infos()[0]["fov_mm"] < fov
    with pytest.raises(ValueError, match="controls"):
        _env(1, controls="zoom")


def test_lr_decay_runs_linearly_to_zero():
    env = make_nav_vec_env("AC-near", 2, size=40, subjects="template")
    base = replace(AgentConfig(**QUICK), n_envs=2)
    assert build_agent(base, env, None).lr_schedule(0.25) == pytest.approx(3e-4)
    decayed = build_agent(replace(base, lr_decay=True), env, None)
    assert [decayed.lr_schedule(p) for p in (1.0, 0.25, 0.0)] == pytest.approx([3e-4, 7.5e-5, 0.0])


def test_device_choice(monkeypatch):
    from world_model.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "cpu:0", ""):
        with pytest.raises(ValueError, match="--device must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad, "--device")
    with pytest.deprecated_call():
        assert choose_device("cuda:1") == "cuda:1"  # the old name, one more release


def test_cli_help_and_settings(capsys):
    from agents.train import PPO_DEFAULTS, parse_args, parser

    text = parser().format_help()
    assert text.startswith("usage: python -m agents.train") and "(default: AC-near)" in text and "n_epochs=" in text
    cfg = parse_args(["--preset", "midsag-near", "--ppo", "ent_coef=0.01", "n_epochs=2", "--normalize-reward"])
    assert cfg.preset == "midsag-near" and cfg.normalize_reward is True
    with pytest.deprecated_call(match="--task is deprecated; use --preset"):
        assert parse_args(["--task", "midsag-near"]).preset == "midsag-near"
    assert "--task" not in text
    assert cfg.ppo == {**PPO_DEFAULTS, "ent_coef": 0.01, "n_epochs": 2} and isinstance(cfg.ppo["n_epochs"], int)
    cfg = parse_args(["--ppo", "vf_coef=0.5", "target_kl=none", "normalize_advantage=false", "--sac", "ent_coef=auto"])
    assert cfg.ppo["vf_coef"] == 0.5 and cfg.ppo["target_kl"] is None and cfg.ppo["normalize_advantage"] is False
    assert cfg.sac["ent_coef"] == "auto"  # any plain PPO / SAC constructor argument, typed by its signature
    for bad in (["--ppo", "n_steps=1.5"], ["--ppo", "policy_kwargs=x"], ["--ppo", "use_sde=maybe"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    with pytest.raises(SystemExit):
        parse_args(["--ppo", "nonsense=1"])
    with pytest.raises(ValueError, match="ppo: unknown"):
        AgentConfig(ppo={"epochs": 3})


def test_fixed_starts_repeat():
    a, b = _env(3, start_seed=7), _env(3, start_seed=7)
    a.reset(), b.reset()
    centers = [np.stack([i["center_mm"] for i in e.current_infos()]) for e in (a, b)]
    assert np.array_equal(*centers)
    c = _env(3, start_seed=8)
    c.reset()
    assert not np.array_equal(centers[0], np.stack([i["center_mm"] for i in c.current_infos()]))


# --- evaluation on scripted trajectories -------------------------------------------------------------
def test_oracle_and_idle_outcomes_known():
    env = _env(2, start_seed=1)
    eps = run_episodes(policy_act_fn("oracle"), env, 2)
    m = episode_metrics(eps)
    assert len(eps) == 4 and m["success_rate"] == 1.0 and m["median_error"] <= 3.0
    starts = _env(2, start_seed=1)
    starts.reset()
    start_err = [i["error"] for i in starts.current_infos()]
    idle = run_episodes(lambda o, i, s: np.zeros((2, 7)), env, 1)
    assert [e["l"] for e in idle] == [100, 100]  # the AC-near time limit
    assert np.allclose([e["error"] for e in idle], start_err) and not any(e["is_success"] for e in idle)
    assert episode_metrics(idle)["success_rate"] == 0.0


def test_metrics_on_known_episodes():
    eps = [{"r": 1.0, "l": 10, "error": e, "is_success": e <= 3, "distance_mm": e} for e in (1.0, 2.0, 5.0, 9.0)]
    m = episode_metrics(eps)
    assert m["success_rate"] == 0.5 and m["median_error"] == 3.5 and m["mean_length"] == 10
    lo, hi = m["success_ci"]
    assert 0 < lo < 0.5 < hi < 1
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert steps_to([0, 100, 200, 300], [0.0, 0.4, 0.6, 0.9], 0.5) == 200
    assert steps_to([0, 100], [0.0, 0.4], 0.8) is None
    runs = [{"final": episode_metrics(eps), "curve": [{"step": 0, "success_rate": 0.0}, {"step": 50, "success_rate": s}],
             "final_errors": np.array([e["error"] for e in eps])} for s in (0.5, 0.9, 0.1)]
    s = summarise_runs(runs)
    assert s["steps_to_50"] == {"median": 50.0, "reached": 2, "of": 3}
    assert s["steps_to_80"]["reached"] == 1 and s["median_error_ci"][0] == 3.5
    with pytest.raises(ValueError):
        episode_metrics([])


# --- feature extractors ------------------------------------------------------------------------------
def _batch(env):
    obs = env.reset()
    return {k: torch.as_tensor(v).float() for k, v in obs.items()}


def test_extractor_pixels():
    env = _env(2, frames=4, actions=4)
    ex = NavExtractor(env.observation_space, "pixels", cnn="small")
    out = ex(_batch(env))
    assert out.shape == (2, 256 + 28) == (2, ex.features_dim)
    assert NavExtractor(env.observation_space, "pixels", cnn="nature").features_dim == 512 + 28
    with pytest.raises(ValueError, match="cnn"):
        NavExtractor(env.observation_space, "pixels", cnn="resnet")
    assert all(p.requires_grad for p in ex.parameters())
    with pytest.raises(ValueError, match="36"):
        NavExtractor(make_nav_vec_env("AC-near", 1, size=32, subjects="template").observation_space, "pixels")


def test_extractor_frozen_and_finetuned_encoder():
    env = _env(2, frames=2, actions=1)
    raw = env.reset()
    obs = {k: torch.as_tensor(v).float() for k, v in raw.items()}
    enc = StandIn()
    ex = NavExtractor(env.observation_space, enc)
    ex.train()
    assert not enc.training and ex.features_dim == 2 * 8 + 7
    out = ex(obs)
    assert out.shape == (2, 23) and not out.requires_grad
    ref = enc.features(torch.as_tensor(raw["image"][:, 1]))
    assert torch.allclose(out[:, 8:16], ref.detach())
    ft = NavExtractor(env.observation_space, StandIn(), finetune=True)
    ft(obs).sum().backward()
    assert ft.encoder.lin.weight.grad is not None and ft.encoder.training
    rc = NavExtractor(env.observation_space, "random-cnn")
    assert rc(obs).shape == (2, 2 * RandomCNN.feature_dim + 7)


def test_extractor_precomputed_features_and_world_model_random():
    from world_model import load_encoder

    wm = load_encoder("random_init")
    env = make_nav_vec_env("AC-near", 2, size=64, frames=2, actions=1, subjects="template", encoder=wm)
    obs = env.reset()
    assert obs["features"].shape == (2, 2 * wm.feature_dim) and obs["features"].dtype == np.float32
    ex = NavExtractor(env.observation_space)
    out = ex({k: torch.as_tensor(v) for k, v in obs.items()})
    assert out.shape == (2, ex.features_dim) == (2, 2 * wm.feature_dim + 7)
    assert not list(ex.parameters())


# --- training end to end -----------------------------------------------------------------------------
def test_short_training_runs(tmp_path, monkeypatch):
    cfg = replace(AgentConfig(**QUICK), steps=128, eval_every=64, eval_episodes=1, eval_envs=2,
                  out=str(tmp_path / "ppo"))
    r = train(cfg)
    assert [c["step"] for c in r["curve"]] == [0, 128]  # evaluations after updates (rollouts of 4 x 32 steps)
    assert (tmp_path / "ppo" / "checkpoints" / "model_128_steps.zip").exists()  # the last step is a resume point
    assert 0.0 <= r["final"]["success_rate"] <= 1.0 and len(r["final_episodes"]) == 2
    assert r["perf"]["steps_per_s"] > 0 and 0 <= r["perf"]["env_fraction"] <= 1
    saved = json.loads((tmp_path / "ppo" / "evaluations.json").read_text())
    assert len(saved) == 2 and (tmp_path / "ppo" / "model.zip").exists()
    assert any((tmp_path / "ppo" / "tb").rglob("events.out.tfevents.*"))
    from stable_baselines3 import PPO

    model = PPO.load(tmp_path / "ppo" / "model.zip", device="cpu")
    assert model.policy.features_extractor.cnn is not None
    from agents.play import main as play_main, play

    played = play(tmp_path / "ppo" / "model.zip", episodes=1, gif=str(tmp_path / "play.gif"))
    assert [e["error"] for e in played["episodes"]] == [e["error"] for e in r["final_episodes"]]  # the same starts
    import imageio.v3 as iio

    gif = iio.imread(tmp_path / "play.gif")
    assert gif.ndim == 4 and gif.shape[2] == 4 * gif.shape[1] and len(gif) >= 2
    with pytest.raises(SystemExit):
        play_main([str(tmp_path / "ppo" / "model.zip"), "--gif", str(tmp_path / "x.mp4")])
    with pytest.deprecated_call(match="preset="):  # the keyword's old name; another preset of the same target
        far = play(tmp_path / "ppo" / "model.zip", episodes=1, task="AC-far")
    assert far["preset"] == "AC-far" and len(far["episodes"]) == 2
    err = io.StringIO()
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(err):
        play_main([str(tmp_path / "ppo" / "model.zip"), "--preset", "PC-near"])
    assert e.value.code == 2 and "error: preset: 'PC-near' has another target" in err.getvalue()
    resumed = train(replace(cfg, steps=256, checkpoint_every=64, out=str(tmp_path / "res")))
    assert resumed["resumed_from"] is None
    again = train(replace(cfg, steps=384, checkpoint_every=64, out=str(tmp_path / "res")))  # a longer run resumes
    assert again["resumed_from"].endswith("model_256_steps.zip") and again["perf"]["steps"] == 128
    assert [c["step"] for c in again["curve"]] == [0, 128, 256, 384]
    assert again["curve"][:3] == json.loads(json.dumps(resumed["curve"]))
    _refused_without_a_change(tmp_path / "res", replace(cfg, steps=384, checkpoint_every=64, out=str(tmp_path / "res")))
    import shutil

    shutil.copytree(tmp_path / "res", tmp_path / "moved")  # a finished run folder, moved, reused with other threads
    stamp = (tmp_path / "moved" / "model.zip").stat().st_mtime_ns
    reused = train(replace(cfg, steps=384, checkpoint_every=64, threads=2, out=str(tmp_path / "moved")))
    assert reused["perf"] == again["perf"] and (tmp_path / "moved" / "model.zip").stat().st_mtime_ns == stamp
    longer = train(replace(cfg, steps=448, checkpoint_every=64, out=str(tmp_path / "moved")))  # and extended there
    assert longer["resumed_from"].endswith("model_384_steps.zip") and longer["curve"][:4] == reused["curve"]
    sac = replace(cfg, algo="sac", encoder="random-cnn", steps=96, out=str(tmp_path / "sac"))
    r = train(sac)
    assert r["curve"][-1]["step"] == 96 and r["perf"]["encode_fraction"] > 0
    import agents.train as agent_train

    assert (tmp_path / "sac" / agent_train.STANDARDISATION_FILE).exists()
    built = agent_train.make_nav_vec_env

    def test_env_only(*args, split="train", **kw):
        assert split == "test", "play built a training env (it should read the run's standardisation.npz)"
        return built(*args, split=split, **kw)

    monkeypatch.setattr(agent_train, "make_nav_vec_env", test_env_only)
    assert [e["error"] for e in play(tmp_path / "sac" / "model.zip", episodes=1)["episodes"]] == \
        [e["error"] for e in r["final_episodes"]]  # the run's statistics, so the same episodes
    with pytest.raises(ValueError, match="algo"):
        AgentConfig(algo="dqn")


def _refused_without_a_change(run, cfg):
    """Another config (or fewer steps) in a run's folder is refused, in one line naming the difference, and
    changes nothing there; ``--config`` reads the run's settings back, options on top."""
    from agents.train import RunFolderError, main, parse_args

    saved = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for change, why in ((dict(seed=1), "seed: 0 -> 1"), (dict(ppo={**cfg.ppo, "vf_coef": 0.4}), "ppo.vf_coef: None -> 0.4"),
                        (dict(steps=320), f"up to step {cfg.steps}, past --steps 320")):
        with pytest.raises(RunFolderError, match=why.replace(".", r"\.")):
            train(replace(cfg, **change))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == saved  # nothing overwritten
    assert parse_args(["--config", str(run / "config.json")]) == cfg
    assert parse_args(["--config", str(run / "config.json"), "--seed", "3"]) == replace(cfg, seed=3)
    err = io.StringIO()
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(err):
        main(["--config", str(run / "config.json"), "--seed", "1"])
    last = err.getvalue().splitlines()[-1]
    assert e.value.code == 2 and last.startswith(f"python -m agents.train: error: {run} holds a run with other "
                                                 f"settings (seed: 0 -> 1)")


def test_benchmark_labels_seeds_and_resumes(tmp_path):
    from agents.benchmark import encoder_label, run_benchmark

    assert encoder_label("navwm=runs/wm/navwm_s{seed}/last.pt") == ("navwm", "runs/wm/navwm_s{seed}/last.pt", False)
    assert encoder_label("pixels") == ("pixels", "pixels", False)
    assert encoder_label("ft:random_init") == ("random_init-ft", "random_init", True)
    assert encoder_label("wm=ft:runs/x.pt") == ("wm", "runs/x.pt", True)
    base = replace(AgentConfig(**QUICK), steps=64, eval_every=64, eval_envs=2)
    rep = run_benchmark(["AC-near"], ["px=pixels"], ["ppo"], [0], base, tmp_path)
    methods = rep["presets"]["AC-near"]["methods"]
    assert set(methods) == {"oracle", "random", "ppo-px"}
    assert methods["oracle"]["summary"]["success_pooled"] > methods["random"]["summary"]["success_pooled"]
    model = tmp_path / "runs" / "AC-near" / "ppo-px" / "seed0" / "model.zip"
    stamp = model.stat().st_mtime_ns
    with pytest.deprecated_call(match="presets="):  # a finished run is reused; tasks= is the old keyword
        again = run_benchmark(tasks=["AC-near"], encoders=["px=pixels"], algos=["ppo"], seeds=[0], base=base,
                              out=tmp_path)
    assert model.stat().st_mtime_ns == stamp
    assert again["presets"]["AC-near"]["methods"]["ppo-px"]["summary"] == methods["ppo-px"]["summary"]
    assert (tmp_path / "report.md").read_text().count("| ppo-px |") == 2  # its results row and its encoder row


def test_play_and_benchmark_options():
    """Both CLIs are built from their options dataclass; old option names warn; refusals exit 2 with the usage."""
    from agents import benchmark, play

    assert play.parse_args(["m.zip", "--preset", "AC-far", "--bounds"]) == play.PlayOptions(
        "m.zip", preset="AC-far", bounds=True)
    with pytest.deprecated_call(match="--task is deprecated; use --preset"):
        assert play.parse_args(["m.zip", "--task", "AC-far"]).preset == "AC-far"
    with pytest.deprecated_call(match="--tasks is deprecated; use --presets"):
        a, base = benchmark.parse_args(["--tasks", "PC-near", "AC-near", "--quick", "--steps", "64"])
    assert a.presets == ("PC-near", "AC-near") and a.quick
    assert base == AgentConfig(**{**QUICK, "steps": 64, "out": a.out})  # the report folder, as every run's base
    assert benchmark.parse_args([])[1] == AgentConfig(out="runs/agents_bench")
    for cli, argv, why in ((play, ["m.zip", "--gif", "x.mp4"], "--gif must end in .gif"),
                           (play, ["m.zip", "--preset", "AC-nowhere"], "--preset: unknown task preset"),
                           (play, ["m.zip", "--device", "gpu"], "--device"),
                           (play, ["m.zip"], "model: no such file m.zip"),
                           (benchmark, ["--presets"], "--presets: give at least one"),
                           (benchmark, ["--presets", "AC-nowhere"], "--presets: unknown task preset"),
                           (benchmark, ["--encoders", "x="], "--encoders: encoder spec 'x='"),
                           (benchmark, ["--steps", "0"], "steps must be >= 1")):
        err = io.StringIO()
        with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(err):
            cli.main(argv)
        assert e.value.code == 2 and err.getvalue().startswith("usage:") and why in err.getvalue(), argv


def test_frozen_features_standardised_on_training_slices():
    from agents.extractors import StandardisedEncoder
    from agents.train import STANDARDISE_SAMPLE, _same, frozen_encoder, saved_config

    cfg = replace(AgentConfig(**QUICK), encoder="random-cnn")
    enc = frozen_encoder(cfg)
    assert isinstance(enc, StandardisedEncoder) and enc.feature_dim == 128
    raw = frozen_encoder(replace(cfg, standardize_features=False))
    assert not isinstance(raw, StandardisedEncoder)
    env = make_nav_vec_env(cfg.preset, STANDARDISE_SAMPLE[0], size=cfg.size, frames=1, actions=0, seed=cfg.seed,
                       subjects="template")
    frames = torch.from_numpy(env.reset()["image"][:, 0])
    with torch.no_grad():
        f, r = enc.features(frames), raw.features(frames)
    torch.testing.assert_close(f, (r - enc.mean) / enc.std)
    assert r.std(0).mean() < 0.2 and 0.2 < f.std(0).mean() < 5  # the raw random features barely vary; these do
    assert torch.equal(frozen_encoder(cfg).mean, enc.mean)  # a fixed sample: the same in training, evaluation, play
    # the setting does not matter for pixels
    px = replace(cfg, encoder="pixels")
    assert _same({**asdict(px), "standardize_features": False}, px)
    assert not _same({**asdict(cfg), "standardize_features": False}, cfg)
    # a config.json that names the preset by its old field name reads as it
    old = {("task" if k == "preset" else k): v for k, v in asdict(cfg).items()}
    assert saved_config(old) == cfg and _same(old, cfg)
    with pytest.deprecated_call():
        assert cfg.task == cfg.preset


def test_standardisation_saved_with_the_run_and_read_back(tmp_path, monkeypatch):
    import shutil

    import agents.train as agent_train

    cfg = replace(AgentConfig(**QUICK), encoder="random-cnn", out=str(tmp_path / "run"))
    path = tmp_path / "run" / agent_train.STANDARDISATION_FILE
    measured = agent_train.frozen_encoder(cfg)
    assert not path.exists()  # written only when asked (by train)
    saved = agent_train.frozen_encoder(cfg, save=True)
    assert path.exists() and torch.equal(saved.mean, measured.mean) and torch.equal(saved.std, measured.std)
    shutil.copytree(tmp_path / "run", tmp_path / "moved")

    def no_env(*args, **kwargs):
        raise AssertionError("built a vector env instead of reading the saved statistics")

    monkeypatch.setattr(agent_train, "make_nav_vec_env", no_env)
    again = agent_train.frozen_encoder(cfg, tmp_path / "moved")  # a moved run folder
    assert torch.equal(again.mean, saved.mean) and torch.equal(again.std, saved.std)
    with pytest.raises(ValueError, match="another encoder"):
        agent_train.frozen_encoder(replace(cfg, seed=1), tmp_path / "moved")
    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="standardisation.npz: not readable"):
        agent_train.frozen_encoder(cfg)
    with pytest.raises(ValueError, match="--encoder"):
        agent_train.frozen_encoder(replace(cfg, encoder="wm=ft:random"))


def test_benchmark_frees_each_runs_envs_and_loads_its_encoder_once(tmp_path, monkeypatch):
    """A long matrix runs one training after another in one process: nothing of a finished run may stay alive;
    a frozen encoder is loaded once per run (for the report and the training)."""
    import gc

    from agents.benchmark import _train_or_reuse
    from navgym.env import MRINavVectorEnv
    from world_model.encoders import EncoderSpec

    loads = []
    load = EncoderSpec.load
    monkeypatch.setattr(EncoderSpec, "load", lambda self, *a, **kw: loads.append(str(self)) or load(self, *a, **kw))
    gc.collect()
    before = sum(isinstance(o, MRINavVectorEnv) for o in gc.get_objects())
    r, described = _train_or_reuse(replace(AgentConfig(**QUICK), encoder="random-cnn", standardize_features=False,
                                           steps=64, eval_every=64, eval_envs=2, out=str(tmp_path / "run")))
    assert sum(isinstance(o, MRINavVectorEnv) for o in gc.get_objects()) == before
    assert loads == ["random-cnn"] and described["kind"] == "random CNN" and r["perf"]["encode_fraction"] > 0


def test_benchmark_refuses_unfinished_pretraining(tmp_path):
    from agents.benchmark import run_benchmark
    from world_model.config import make_config
    from world_model.train import train as wm_train

    mc, tc = make_config("tiny", method="tokenizer", subjects="template", batch=2, steps=4, threads=1, size=32,
                         width=4, latent=4, window=3, out=str(tmp_path / "wm"))
    wm_train(mc, tc, progress=False, stop_after=1)  # an interrupted run's checkpoint
    base = replace(AgentConfig(**QUICK), steps=32, eval_every=32, eval_envs=2, size=32)
    with pytest.raises(ValueError, match="unfinished"):
        run_benchmark(["AC-near"], [f"wm={tmp_path}/wm/last.pt"], ["ppo"], [0], base, tmp_path / "bench")
    with pytest.raises(ValueError, match="takes 32-px slices, the frames are 40 px"):  # before any run is written
        run_benchmark(["AC-near"], [f"wm={tmp_path}/wm/last.pt"], ["ppo"], [0], replace(base, size=40), tmp_path / "b2")
    assert not (tmp_path / "b2" / "runs").exists()


def test_report_names_each_encoders_pretraining(tmp_path):
    from agents.benchmark import _encoder_lines, describe_encoder
    from world_model.config import make_config
    from world_model.train import train as wm_train

    mc, tc = make_config("tiny", method="tokenizer", subjects="template", batch=2, steps=3, threads=1, size=32,
                         width=4, latent=4, window=3, out=str(tmp_path / "wm"))
    wm_train(mc, tc, progress=False)
    wm = describe_encoder(str(tmp_path / "wm" / "last.pt"), 0, finetune=False)
    assert (wm["method"], wm["pretrain_steps"], wm["pretrain_frames"], wm["trains"]) == ("tokenizer", 3, 3 * 2 * 3, False)
    assert wm["params"] > 0 and wm["feature_dim"] > 0
    untrained = describe_encoder("random_init", 1, finetune=True)
    assert untrained["pretrain_steps"] is None and untrained["trains"] and untrained["method"] == "random_init"
    assert describe_encoder("pixels", 0, finetune=False) == {"spec": "pixels", "trains": True, "kind": "pixels CNN"}
    table = "\n".join(_encoder_lines({"oracle": {"runs": [{}]}, "ppo-wm": {"runs": [{"encoder": wm}]},
                                      "ppo-rand-ft": {"runs": [{"encoder": untrained}]}}))
    assert "| ppo-wm | tokenizer (custom, conv) |" in table and "3 steps, 18 frames on template | frozen |" in table
    assert "untrained (random init, the run's seed) | fine-tuned |" in table and "oracle" not in table


def test_compact_table_rows_from_a_report():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "agents_table.py"
    spec = importlib.util.spec_from_file_location("agents_table", path)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    reach = lambda m, k: {"median": m, "reached": k, "of": 3}  # noqa: E731
    run = lambda rate: {"final": {"success_rate": rate}}  # noqa: E731
    summary = {"success_mean_ci": (0.5, 0.25, 0.75), "median_error_ci": (2.44, 2.0, 3.0),
               "steps_to_50": reach(125_000, 2), "steps_to_80": reach(None, 0)}
    report = {"config": {"base": {"steps": 1_000_000}},
              "presets": {"AC-near": {"methods": {"oracle": {"summary": summary, "runs": [run(1.0)] * 3},
                                                "ppo-x": {"summary": summary, "runs": [run(0.25), run(0.5), run(0.75)]}}}}}
    assert table.rows(report, ["ppo-x"]) == [
        "| AC-near (1M steps) | ppo-x | 50% [25%, 75%] (25 / 50 / 75) | 2.4 [2.0, 3.0] | 125k (2 of 3) / never (0 of 3) |"]
    assert table.rows(report)[0].endswith("| 2.4 [2.0, 3.0] |  |")  # no steps-to columns for a bound
    frozen = {"summary": summary, "runs": [{**run(0.5), "encoder": {"kind": "world model", "trains": False}}]}
    old = {"config": report["config"], "tasks": report["presets"]}  # a report keeping its presets under "tasks"
    assert table.rows(old) == table.rows(report)
    report["presets"]["AC-near"]["methods"]["ppo-wm"] = frozen
    assert table.rows(report, ["ppo-wm"])[0].startswith("| AC-near (1M steps, raw features) | ppo-wm |")
    report["config"]["base"]["standardize_features"] = True
    assert table.rows(report, ["ppo-wm"])[0].startswith("| AC-near (1M steps) | ppo-wm |")


def test_curves_plot_with_uneven_evaluation_steps(tmp_path):
    """A resumed seed has one more evaluation (at its resume point) than the others."""
    curve = lambda steps: [{"step": s, "success_rate": s / 100} for s in steps]  # noqa: E731
    runs = [{"curve": curve([0, 50, 100])}, {"curve": curve([0, 40, 50, 100])}]
    bounds = [{"final": {"success_rate": 1.0}, "curve": []}]
    _plot("AC-near", {"oracle": bounds, "ppo-pixels": runs}, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0
