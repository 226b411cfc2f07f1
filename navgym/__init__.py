"""navgym: learn 3D anatomy by navigating it.

World space is RAS+ millimetres (NIfTI/nibabel convention).  ``gym.make("MRINav-v0")``
navigates the MNI152 2009 template shipped inside nilearn.
"""

import os

import numba
from gymnasium.envs.registration import register

# Fork-safe numba threads (tbb, else workqueue): GNU OpenMP kills forked workers, which
# breaks AsyncVectorEnv and DataLoader workers once a kernel has run in the parent.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "forksafe"

from .geometry import Plane, SlicePose, apply_actions
from .render import TorchRenderer, render_slice, render_slices
from .subjects import Subject, template_subject
from .volume import Volume, VolumeError, load_volume

__version__ = "0.1.0"

__all__ = [
    "Plane",
    "SlicePose",
    "Subject",
    "TorchRenderer",
    "Volume",
    "VolumeError",
    "apply_actions",
    "load_volume",
    "render_slice",
    "render_slices",
    "template_subject",
]

register(
    id="MRINav-v0",
    entry_point="navgym.env:MRINavEnv",
    vector_entry_point="navgym.env:MRINavVectorEnv",
    max_episode_steps=200,
)
from . import presets  # noqa: E402,F401  (registers MRINav-<preset>-v0 task ids)
