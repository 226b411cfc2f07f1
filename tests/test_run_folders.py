"""world_model.train's run folder is new, an exact resume / extension, or refused in one line that says what
differs (agents.train: tests/test_agents.py::test_short_training_runs; navgym-subjects: tests/test_subjects.py);
settings read back with --config."""

import json
import pytest

from world_model.train import main as wm_main
from world_model.train import parse_args as wm_parse_args

SMALL_WM = ["--method", "navwm", "--subjects", "template", "--batch", "2", "--log-every", "1", "--eval-every", "1000",
            "--threads", "1", "--size", "32", "--width", "4", "--latent", "4", "--dim", "16", "--depth", "1",
            "--heads", "2", "--patch", "2", "--window", "3", "--crop", "16", "--voxel-mm", "8.0", "--stage1-frac", "0.5"]


def test_world_model_run_refused_in_one_line_before_resuming(tmp_path, capsys):
    out = str(tmp_path / "wm")
    wm_main(SMALL_WM + ["--steps", "2", "--out", out])
    assert json.loads((tmp_path / "wm" / "config.json").read_text())["train"]["steps"] == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        wm_main(SMALL_WM + ["--steps", "2", "--seed", "1", "--out", out])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "python -m world_model.train: error: " in err and "seed: 0 -> 1" in err
    assert "resuming" not in err
    # --config reads the settings back (the run's config.json or its checkpoint), options on top
    m, t = wm_parse_args(["--config", out + "/config.json", "--steps", "4"])
    m2, t2 = wm_parse_args(SMALL_WM + ["--steps", "4", "--out", out])
    assert (m, t) == (m2, t2) and wm_parse_args(["--config", out + "/last.pt", "--steps", "4"]) == (m, t)
    # --steps 0 is refused as --steps -1 is (only the untrained 'random_init' baseline takes no steps)
    for steps in ("0", "-1"):
        with pytest.raises(SystemExit):
            wm_parse_args(SMALL_WM + ["--steps", steps])
        assert "steps" in capsys.readouterr().err
    assert wm_parse_args(["--method", "random_init", "--steps", "0"])[1].total_steps == 0
