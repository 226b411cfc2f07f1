"""Packaging: the env side of navgym imports without the training extras (torch, tensorboard, SB3)."""

import subprocess
import sys
import textwrap

import numpy as np


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_env_side_imports_without_torch():
    r = _run(
        """
        import sys
        import gymnasium as gym
        import navgym, navgym.env, navgym.subjects, navgym.policies, navgym.presets, navgym.viz
        import navgym.rollouts, navgym.rollouts.cli, navgym.subjects.cli
        env = gym.make("MRINav-v0", size=32)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        heavy = sorted(m for m in ("torch", "tensorboard", "stable_baselines3", "matplotlib") if m in sys.modules)
        print("heavy:", heavy)
        """
    )
    assert r.returncode == 0, r.stderr
    assert "heavy: []" in r.stdout


def test_torch_renderer_without_torch_says_how_to_install():
    r = _run(
        """
        import sys

        class NoTorch:  # as if PyTorch were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ModuleNotFoundError("No module named 'torch'")

        sys.meta_path.insert(0, NoTorch())
        import navgym
        from navgym.subjects import template_subject
        try:
            navgym.TorchRenderer(template_subject().volume)
        except ImportError as e:
            print("error:", e)
        """
    )
    assert r.returncode == 0, r.stderr
    assert "TorchRenderer needs PyTorch" in r.stdout and "navgym[train]" in r.stdout


def test_make_imports_neither_sklearn_nor_pandas():
    """gym.make reads the template files from the installed nilearn without importing nilearn.datasets."""
    r = _run(
        """
        import sys
        import gymnasium as gym
        import navgym
        gym.make("MRINav-v0", size=32).reset(seed=0)
        print("heavy:", sorted(m for m in ("sklearn", "pandas", "nilearn") if m in sys.modules))
        """
    )
    assert r.returncode == 0, r.stderr
    assert "heavy: []" in r.stdout


def test_template_label_cache_round_trips(tmp_path, monkeypatch):
    from navgym import anatomy

    monkeypatch.setenv("NAVGYM_CACHE", str(tmp_path))
    folder = anatomy.template_dir()
    built = anatomy._template_labels(folder)
    (cached,) = tmp_path.glob("mni152_2009_labels_*.npy")
    assert (anatomy._template_labels(folder) == built).all()
    cached.write_bytes(b"broken")  # a damaged cache is rebuilt, not trusted
    assert (anatomy._template_labels(folder) == built).all()
    assert set(np.unique(built).tolist()) == {0, 1, 2, 3}
