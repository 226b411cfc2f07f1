"""Video-action rollouts: generation to sharded files, and PyTorch window datasets (disk or streaming).

``RolloutWindows`` and ``StreamingWindows`` import torch, so they load on first use.
"""

from ..deprecation import moved_names
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


def _torch_datasets(name):
    if name in ("RolloutWindows", "StreamingWindows"):  # lazily: they import torch
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__getattr__ = moved_names(__name__, {"simulate": "navgym.simulator.simulate"}, fallback=_torch_datasets)
