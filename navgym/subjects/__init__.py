"""Subjects: anatomies with ground truth (see :class:`Subject`).

* :func:`load_subjects` -> :class:`SubjectPool` (lazy, LRU-cached) from ``"template"``,
  ``"synthetic:N[:split]"``, a NIfTI/BIDS folder or a list; deterministic splits by id.
* :func:`synthetic_subject` -- the template deformed, re-contrasted and re-acquired from a seed.
* :func:`save_subject` / ``navgym-subjects`` -- BIDS-like folders with JSON sidecars.
"""

from .io import SubjectError, find_entries, load_entry, read_landmarks, save_subject
from .pool import SPLITS, SubjectPool, load_subjects, split_of
from .subject import Subject, identity_transform, template_subject
from .synthetic import CONTRASTS, SyntheticConfig, synthetic_id, synthetic_subject
from .transform import WarpTransform

__all__ = [
    "CONTRASTS",
    "SPLITS",
    "Subject",
    "SubjectError",
    "SubjectPool",
    "SyntheticConfig",
    "WarpTransform",
    "find_entries",
    "identity_transform",
    "load_entry",
    "load_subjects",
    "read_landmarks",
    "save_subject",
    "split_of",
    "synthetic_id",
    "synthetic_subject",
    "template_subject",
]
