"""Files from others are only read as data: agents.play on a model.zip, reward statistics on resume."""

import base64
import json
import pickle
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from agents.benchmark import QUICK
from agents.train import AgentConfig


class Payload:
    """Unpickling this creates ``marker`` (what an attacker's code would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _agent_folder(tmp_path) -> tuple[Path, AgentConfig]:
    from agents.train import build_agent, eval_env

    cfg = AgentConfig(**{**QUICK, "eval_envs": 1, "out": str(tmp_path / "run")})
    out = Path(cfg.out)
    out.mkdir()
    env = eval_env(cfg)
    build_agent(replace(cfg, device="cpu"), env, None).save(out / "model.zip")
    env.close()
    (out / "config.json").write_text(json.dumps(asdict(cfg)))
    return out, cfg


def _poison(zip_path: Path, marker: Path, drop: tuple[str, ...] = ()) -> None:
    """Rewrite ``zip_path`` with its ``data`` entry's policy_class a pickled :class:`Payload`."""
    with zipfile.ZipFile(zip_path) as z:
        entries = {n: z.read(n) for n in z.namelist() if n not in drop}
    data = json.loads(entries["data"])
    data["policy_class"] = {":serialized:": base64.b64encode(pickle.dumps(Payload(marker))).decode()}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zip_path, "w") as z:
        for n, b in entries.items():
            z.writestr(n, b)


def test_play_reads_only_weights_from_a_model_zip(tmp_path):
    from stable_baselines3.common.save_util import json_to_data

    from agents.play import load_agent, play

    out, cfg = _agent_folder(tmp_path)
    marker = tmp_path / "pwned"
    _poison(out / "model.zip", marker)
    with zipfile.ZipFile(out / "model.zip") as z:  # the payload is live: SB3's own loader runs it
        json_to_data(z.read("data").decode())
    assert marker.exists()
    marker.unlink()
    r = play(out / "model.zip", episodes=1, device="cpu")
    assert not marker.exists() and len(r["episodes"]) == cfg.eval_envs
    # a zip without weights, a world-model checkpoint and a pickled weights file are refused by name
    _poison(out / "model.zip", marker, drop=("policy.pth",))
    from agents.train import eval_env

    env = eval_env(cfg)
    try:
        with pytest.raises(ValueError, match=r"model\.zip holds no policy weights"):
            load_agent(out / "model.zip", cfg, env, "cpu")
        import torch

        torch.save({"config": {}, "model": {}}, out / "last.pt")
        with pytest.raises(ValueError, match=r"last\.pt holds no policy weights"):
            load_agent(out / "last.pt", cfg, env, "cpu")
        with zipfile.ZipFile(out / "evil.zip", "w") as z:
            z.writestr("policy.pth", pickle.dumps(Payload(marker)))
        with pytest.raises(ValueError, match=r"evil\.zip: cannot load its weights"):
            load_agent(out / "evil.zip", cfg, env, "cpu")
    finally:
        env.close()
    assert not marker.exists()


def test_resume_restores_reward_statistics_and_refuses_pickles(tmp_path, monkeypatch):
    import agents.train as at

    cfg = AgentConfig(**{**QUICK, "steps": 128, "checkpoint_every": 128, "eval_every": 10_000, "eval_envs": 1,
                         "normalize_reward": True, "out": str(tmp_path / "run")})
    at.train(cfg)
    ckpts = Path(cfg.out) / "checkpoints"
    assert not list(ckpts.glob("*.pkl"))
    with np.load(ckpts / "model_vecnormalize_128_steps.npz", allow_pickle=False) as z:
        saved = {k: z[k] for k in ("mean", "var", "count")}
    assert saved["count"] > 100  # statistics of 128 steps, not fresh ones (count 1e-4)
    seen = []
    start = at.NavCallback._on_training_start

    def spy(self):
        rms = self.training_env.ret_rms
        seen.append((rms.mean.copy(), rms.var.copy(), rms.count))
        start(self)

    monkeypatch.setattr(at.NavCallback, "_on_training_start", spy)
    r = at.train(replace(cfg, steps=192))
    assert r["resumed_from"].endswith("model_128_steps.zip")
    mean, var, count = seen[0]
    assert count == saved["count"] and np.array_equal(mean, saved["mean"]) and np.array_equal(var, saved["var"])
    # a run folder with SB3's pickled statistics instead: refused by name, the pickle never loaded
    marker = tmp_path / "pwned"
    for f in ckpts.iterdir():  # back to the folder as the 128-step run left it (the resume saved its last step too)
        if "_128_" not in f.name:
            f.unlink()
    (ckpts / "model_vecnormalize_128_steps.npz").unlink()
    (ckpts / "model_vecnormalize_128_steps.pkl").write_bytes(pickle.dumps(Payload(marker)))
    (Path(cfg.out) / "final_eval.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"model_vecnormalize_128_steps\.pkl is a pickle"):
        at.train(replace(cfg, steps=192))
    assert not marker.exists()
