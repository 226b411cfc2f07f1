"""Renamed public names keep working for one release, with a DeprecationWarning naming the new one."""

import importlib
import runpy
import sys

import numpy as np
import pytest

from navgym.tasks import LandmarkTask, Task


def test_task_evaluate_is_score():
    task = LandmarkTask(landmark="AC")
    centers, rotations, targets = np.zeros((2, 3)), np.tile(np.eye(3), (2, 1, 1)), np.array([[0, 0, 3.0], [0, 0, 9.0]])
    want = task.score(centers, rotations, targets)
    with pytest.warns(DeprecationWarning, match="Task.score"):
        got = task.evaluate(centers, rotations, targets)
    assert np.array_equal(got["error"], want["error"]) and list(want["error"]) == [3.0, 9.0]
    with pytest.warns(DeprecationWarning, match="Old.score"):
        class Old(Task):  # a user's task written against the old name is still scored by it
            def evaluate(self, centers, rotations, targets):
                return {"error": np.ones(len(centers)), "is_success": np.ones(len(centers), bool)}
    assert Old().score(centers, rotations, targets)["is_success"].all()


def test_agents_evaluate_module_reexports_episodes():
    import agents.episodes

    sys.modules.pop("agents.evaluate", None)
    with pytest.warns(DeprecationWarning, match="agents.episodes"):
        old = importlib.import_module("agents.evaluate")
    assert old.run_episodes is agents.episodes.run_episodes and old.wilson is agents.episodes.wilson


def test_method_random_is_random_init(tmp_path):
    pytest.importorskip("torch")
    from world_model import load_encoder
    from world_model.config import TrainConfig, config_from_dict, make_config
    from world_model.evaluation.encoders import load_encoder_entry
    from world_model.train import parse_args

    with pytest.warns(DeprecationWarning, match="'random_init'"):
        _, cfg = parse_args(["--method", "random", "--steps", "0", "--out", str(tmp_path)])
    assert cfg.method == "random_init" and cfg.total_steps == 0
    model_cfg, train_cfg = make_config("tiny", method="random_init")
    saved = {"model": model_cfg.__dict__, "train": {**train_cfg.__dict__, "method": "random"}}  # an older checkpoint
    with pytest.warns(DeprecationWarning):
        assert config_from_dict(saved)[1] == train_cfg
    with pytest.warns(DeprecationWarning):
        entry = load_encoder_entry("random:1")
    assert (entry.method, entry.seed) == ("random_init", 1) and entry.encoder.method == "random_init"
    with pytest.warns(DeprecationWarning):
        assert load_encoder("random").method == "random_init"
    with pytest.warns(DeprecationWarning):
        assert TrainConfig(method="random").method == "random_init"


def test_evaluation_entry_points(capsys, monkeypatch):
    pytest.importorskip("torch")
    from world_model.evaluation import pipeline
    from world_model.evaluate import main

    monkeypatch.setattr(sys, "argv", ["python -m world_model.evaluation", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("world_model.evaluation", run_name="__main__")
    assert exit_.value.code == 0 and "python -m world_model.evaluation" in capsys.readouterr().out
    with pytest.warns(DeprecationWarning, match="python -m world_model.evaluation"), pytest.raises(SystemExit):
        main(["--help"])
    calls = []
    monkeypatch.setattr(pipeline, "evaluate_encoders", lambda *a, **kw: calls.append((a, kw)) or {})
    with pytest.warns(DeprecationWarning, match="evaluate_encoders"):
        assert pipeline.evaluate([], {}, None, device="cpu") == {}
    assert calls == [(([], {}, None), {"device": "cpu"})]


def test_method_evaluate_is_held_out_metrics():
    torch = pytest.importorskip("torch")
    from world_model.config import make_config
    from world_model.methods import build_model

    model_cfg, train_cfg = make_config("tiny", size=32, window=3)
    model = build_model(model_cfg, "navwm", train_cfg).eval()
    batch = {"frames": torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), "actions": torch.zeros(2, 3, 7)}
    torch.manual_seed(0)
    want = model.held_out_metrics(batch)
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="held_out_metrics"):
        got = model.evaluate(batch)
    assert {k: v for k, v in got.items() if not k.startswith("_")} == \
        {k: v for k, v in want.items() if not k.startswith("_")}


def test_run_evaluate_is_log_held_out(tmp_path):
    torch = pytest.importorskip("torch")
    from world_model.config import make_config
    from world_model.train import Run

    model_cfg, train_cfg = make_config("tiny", size=32, window=3, out=str(tmp_path))
    run, calls = Run(model_cfg, train_cfg, torch.device("cpu"), tensorboard=False), []
    run.log_held_out = lambda batch, done: calls.append(done)
    with pytest.warns(DeprecationWarning, match="log_held_out"):
        run.evaluate({}, 3)
    assert calls == [3]
