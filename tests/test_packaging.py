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


def test_requirements_match_imports():
    """pyproject's dependencies and extras name what the packages import, and nothing they don't."""
    import ast
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    required = {re.split(r"[<>=\[ ;]", r)[0].lower().replace("-", "_") for r in
                project["dependencies"] + sum(project["optional-dependencies"].values(), [])} - {"navgym"}
    sources = [p for pkg in ("navgym", "world_model", "agents") for p in (root / pkg).rglob("*.py")]
    text = "\n".join(p.read_text() for p in sources)
    imported = set()
    for p in sources:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"navgym", "world_model", "agents"}
    assert third_party <= required, f"imported but not required: {sorted(third_party - required)}"
    test_only = {"pytest", "pytest_xdist", "hypothesis", "pytest_timeout"}
    unused = {r for r in required - third_party - test_only if not re.search(rf"\b{r}\b", text)}
    assert not unused, f"required but never used: {sorted(unused)}"
