"""Video-action rollouts: generation to sharded files, and PyTorch window datasets (disk or streaming).

``RolloutWindows`` and ``StreamingWindows`` import torch, so they load on first use.
"""

from .generate import (
    ARRAYS,
    RolloutConfig,
    generate_shard,
    load_config,
    render_frames,
    shard_dirs,
    write_manifest,
    write_rollouts,
)

__all__ = [
    "ARRAYS",
    "RolloutConfig",
    "RolloutWindows",
    "StreamingWindows",
    "generate_shard",
    "load_config",
    "render_frames",
    "shard_dirs",
    "write_manifest",
    "write_rollouts",
]


def __getattr__(name):
    if name in ("RolloutWindows", "StreamingWindows"):
        from . import dataset

        return getattr(dataset, name)
    if name == "simulate":
        import warnings

        from .. import simulator

        warnings.warn("navgym.rollouts.simulate is deprecated; use navgym.simulator.simulate", DeprecationWarning,
                      stacklevel=2)
        return simulator.simulate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
