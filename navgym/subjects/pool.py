"""SubjectPool: a lazily loaded, LRU-cached sequence of Subjects, and deterministic splits.

Splits
------
A subject's split is a function of its id alone: ``h = int(sha256(id)[:8], 16) / 2**32``;
``train`` if h < 0.70, ``val`` if h < 0.85, else ``test`` (70 / 15 / 15 %).  So the split never
changes when a dataset grows, the three are disjoint, and pretraining (``split="train"``) never
sees a ``test`` subject.  ``synthetic:N`` draws seeds 0..N-1 (ids ``synth000000``...) and then keeps
the requested split, so ``synthetic:200:train`` has ~140 subjects.

Memory
------
Only ``cache_size`` subjects are held per pool (least recently used are dropped; whoever still
references one, e.g. a running episode, keeps it alive).  A 1 mm subject takes ~30-45 MB (float32
image + uint8 labels + the renderer's 8-bit store); see ``docs/subjects.md`` for measured figures.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..volume import Volume, load_volume
from .io import SubjectError, check_landmark_coverage, entry_for_image, find_entries, load_entry
from .subject import Subject, template_subject
from .synthetic import SyntheticConfig, synthetic_id, synthetic_subject

__all__ = ["SubjectPool", "load_subjects", "split_of", "SPLITS"]

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_CACHE_SIZE = 8


def split_of(subject_id: str) -> str:
    """``"train"``, ``"val"`` or ``"test"``, from a hash of the id (70 / 15 / 15 %)."""
    h = int(hashlib.sha256(subject_id.encode()).hexdigest()[:8], 16) / 2**32
    if h < SPLIT_FRACTIONS[0]:
        return "train"
    return "val" if h < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1] else "test"


class SubjectPool(Sequence):
    """Sequence of Subjects loaded (or generated) on first access and kept in an LRU cache.

    Parameters
    ----------
    ids : subject ids, in order.
    loaders : one zero-argument callable per id returning that Subject.
    cache_size : how many loaded subjects to keep (>= 1).
    """

    def __init__(self, ids: Sequence[str], loaders: Sequence[Callable[[], Subject]], cache_size: int = DEFAULT_CACHE_SIZE):
        if len(ids) != len(loaders):
            raise ValueError("need one loader per id")
        if int(cache_size) < 1:
            raise ValueError(f"cache_size (the env's subject_cache: subjects kept loaded) must be >= 1, got {cache_size}")
        self._ids = list(ids)
        self._loaders = list(loaders)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, Subject] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"subject index {index} out of range for {len(self)} subjects")
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        subject = self._loaders[i]()
        if subject.subject_id != self._ids[i]:
            raise SubjectError(f"loaded subject {subject.subject_id!r}, expected {self._ids[i]!r}")
        with self._lock:
            self._cache[i] = subject
            self._cache.move_to_end(i)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return subject

    def __getstate__(self):
        """Pickles without the cache (a pool sent to vector-env workers loads there, lazily)."""
        return {"ids": self._ids, "loaders": self._loaders, "cache_size": self.cache_size}

    def __setstate__(self, state):
        self.__init__(state["ids"], state["loaders"], state["cache_size"])

    def cached(self) -> list[str]:
        """Ids currently held in the cache (least recently used first)."""
        with self._lock:
            return [self._ids[i] for i in self._cache]

    def subset(self, indices: Sequence[int]) -> "SubjectPool":
        """A new pool over the given indices (its own cache of the same size)."""
        return SubjectPool([self._ids[i] for i in indices], [self._loaders[i] for i in indices], self.cache_size)

    def split(self, split: str | None) -> "SubjectPool":
        """The subjects of one split (None: all); raises if it is empty."""
        if split is None:
            return self
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        keep = [i for i, sid in enumerate(self._ids) if split_of(sid) == split]
        if not keep:
            raise SubjectError(
                f"no {split!r} subjects among {len(self)} (splits are by a hash of the id, 70/15/15 %); use more subjects"
            )
        return self.subset(keep)

    def __repr__(self) -> str:
        head = ", ".join(self._ids[:3]) + (", ..." if len(self) > 3 else "")
        return f"SubjectPool({len(self)} subjects: {head}; cache_size={self.cache_size})"


def _given(subject: Subject) -> Subject:
    return subject


def _from_volume(volume: Volume) -> Subject:
    return Subject(volume.name, volume)


def load_subjects(
    spec=None,
    split: str | None = None,
    cache_size: int | None = DEFAULT_CACHE_SIZE,
    synthetic: SyntheticConfig | None = None,
) -> Sequence[Subject]:
    """The one way to turn a subject spec into a sequence of Subjects (a lazy :class:`SubjectPool`).

    spec:
      * ``None`` or ``"template"``: the MNI152 template (one subject, id ``MNI152_2009``, returned
        for any split: it is the source of every synthetic subject, not a held-out anatomy);
      * ``"synthetic:N"`` (seeds 0..N-1), ``"synthetic:N:SPLIT"`` or ``"synthetic:START-END"``
        (seeds START..END-1); generated on access;
      * a folder (plain NIfTI files or BIDS, see :mod:`navgym.subjects.io`) or one NIfTI file,
        loaded on access with the labels and landmarks files beside each image;
      * a list or tuple of Subjects, NIfTI paths, nibabel images or Volumes (mixed is fine);
      * a SubjectPool (returned, restricted to ``split``), or any other sequence of Subjects
        (returned as is; no split).
    split: ``None`` (all), ``"train"``, ``"val"`` or ``"test"`` (see the module docstring).
    cache_size: subjects a new pool keeps loaded (None: ``DEFAULT_CACHE_SIZE``).

    Where only some scans of a folder or list have landmarks, this raises :class:`SubjectError`
    naming those without.
    """
    cache_size = DEFAULT_CACHE_SIZE if cache_size is None else cache_size
    if isinstance(spec, SubjectPool):
        return spec.split(split)
    if spec is None or (isinstance(spec, str) and spec == "template"):
        # the one anatomy every synthetic subject is made from: not a held-out subject, in every split
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        return SubjectPool(["MNI152_2009"], [template_subject], cache_size)
    if isinstance(spec, str) and spec.startswith("synthetic:"):
        parts = spec.split(":")
        if len(parts) == 3:
            if split is not None and split != parts[2]:
                raise ValueError(f"spec {spec!r} names split {parts[2]!r} but split={split!r}")
            split = parts[2]
        elif len(parts) != 2:
            raise ValueError(f"bad synthetic spec {spec!r}; use 'synthetic:N' or 'synthetic:N:train|val|test'")
        seeds = _parse_seeds(parts[1], spec)
        pool = SubjectPool([synthetic_id(s) for s in seeds], [partial(synthetic_subject, s, synthetic) for s in seeds], cache_size)
        return pool.split(split)
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            entries = find_entries(path)
            return SubjectPool([e.subject_id for e in entries], [partial(load_entry, e) for e in entries], cache_size).split(split)
        if path.exists():
            return load_subjects([path], split, cache_size)
        raise SubjectError(f"subjects: {str(spec)!r} is not a folder, a file, 'template' or 'synthetic:N'")
    if isinstance(spec, (Subject, Volume)) or _is_image(spec):
        return load_subjects([spec], split, cache_size)
    if isinstance(spec, np.ndarray):
        raise SubjectError(f"subjects: a bare {spec.ndim}D array has no voxel-to-world affine; pass "
                           f"navgym.load_volume(array, affine), a nibabel image or a NIfTI path")
    if not (hasattr(spec, "__len__") and hasattr(spec, "__getitem__")):
        raise SubjectError(f"cannot load subjects from {type(spec).__name__}")
    if len(spec) == 0:
        raise SubjectError("subjects list is empty")
    if not isinstance(spec, (list, tuple)):
        if split is not None:
            raise ValueError(f"split={split!r} needs a spec or a SubjectPool, not a {type(spec).__name__}")
        return spec  # any other sequence of Subjects
    ids, loaders, entries = [], [], []
    for item in spec:
        if isinstance(item, Subject):
            ids.append(item.subject_id)
            loaders.append(partial(_given, item))
        elif isinstance(item, Volume) or _is_image(item):
            vol = item if isinstance(item, Volume) else load_volume(item)
            ids.append(vol.name)
            loaders.append(partial(_from_volume, vol))
        elif isinstance(item, (str, os.PathLike)):
            entry = entry_for_image(item)
            entries.append(entry)
            ids.append(entry.subject_id)
            loaders.append(partial(load_entry, entry))
        else:
            raise SubjectError(f"cannot make a subject from {type(item).__name__}")
    if len(set(ids)) != len(ids):
        raise SubjectError(f"duplicate subject ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    check_landmark_coverage(entries, "subject files")
    return SubjectPool(ids, loaders, cache_size).split(split)


def _is_image(x) -> bool:
    """A nibabel image (has ``affine`` and ``dataobj``)."""
    return hasattr(x, "affine") and hasattr(x, "dataobj")


def _parse_seeds(text: str, spec: str) -> range:
    try:
        if "-" in text:
            a, b = (int(x) for x in text.split("-"))
            seeds = range(a, b)
        else:
            seeds = range(int(text))
    except ValueError:
        raise ValueError(f"bad synthetic spec {spec!r}: N must be an integer") from None
    if len(seeds) < 1:
        raise ValueError(f"bad synthetic spec {spec!r}: need at least one subject")
    return seeds
