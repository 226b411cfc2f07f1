"""SB3 agents on navgym task presets: ``python -m agents.train``, ``agents.play``, ``agents.benchmark``;
``agents.load_run(run_folder) -> (model, env)`` gives a trained agent with its env (see :mod:`agents.runs`)."""


def __getattr__(name):  # lazily, so that ``import agents.envs`` does not load the training code
    if name in ("load_run", "make_agent_env"):
        from . import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
