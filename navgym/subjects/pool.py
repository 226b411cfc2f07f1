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

from ..volume import Volume, load_volume
from .io import SubjectError, find_entries, load_entry
from .subject import Subject, template_subject
from .synthetic import SyntheticConfig, synthetic_id, synthetic_subject

__all__ = ["SubjectPool", "load_subjects", "split_of", "SPLITS", "resolve_subjects"]

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
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
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


def _from_volume(source, name: str) -> Subject:
    return Subject(name, load_volume(source, name=name))


def load_subjects(
    spec=None,
    split: str | None = None,
    cache_size: int = DEFAULT_CACHE_SIZE,
    synthetic: SyntheticConfig | None = None,
) -> SubjectPool:
    """A :class:`SubjectPool` from a spec.

    spec:
      * ``None`` or ``"template"``: the MNI152 template (one subject, id ``MNI152_2009``, returned
        for any split: it is the source of every synthetic subject, not a held-out anatomy);
      * ``"synthetic:N"`` (seeds 0..N-1), ``"synthetic:N:SPLIT"`` or ``"synthetic:START-END"``
        (seeds START..END-1); generated on access;
      * a folder (plain NIfTI files or BIDS, see :mod:`navgym.subjects.io`), loaded on access;
      * a list of Subjects, NIfTI paths or Volumes (mixed is fine);
      * a SubjectPool (returned, restricted to ``split``).
    split: ``None`` (all), ``"train"``, ``"val"`` or ``"test"`` (see the module docstring).
    """
    if isinstance(spec, SubjectPool):
        return spec.split(split)
    if spec is None or (isinstance(spec, str) and spec == "template"):
        # the one anatomy every synthetic subject is made from: not a held-out subject, in every split
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        return SubjectPool(["MNI152_2009"], [template_subject], cache_size)
    elif isinstance(spec, str) and spec.startswith("synthetic:"):
        parts = spec.split(":")
        if len(parts) == 3:
            if split is not None and split != parts[2]:
                raise ValueError(f"spec {spec!r} names split {parts[2]!r} but split={split!r}")
            split = parts[2]
        elif len(parts) != 2:
            raise ValueError(f"bad synthetic spec {spec!r}; use 'synthetic:N' or 'synthetic:N:train|val|test'")
        seeds = _parse_seeds(parts[1], spec)
        pool = SubjectPool([synthetic_id(s) for s in seeds], [partial(synthetic_subject, s, synthetic) for s in seeds], cache_size)
    elif isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            entries = find_entries(path)
            pool = SubjectPool([e.subject_id for e in entries], [partial(load_entry, e) for e in entries], cache_size)
        elif path.exists():
            return load_subjects([path], split, cache_size)
        else:
            raise SubjectError(f"subjects: {spec!r} is not a folder, a file, 'template' or 'synthetic:N'")
    elif isinstance(spec, Subject):
        return load_subjects([spec], split, cache_size)
    elif hasattr(spec, "__len__") and hasattr(spec, "__getitem__"):
        ids, loaders = [], []
        for item in spec:
            if isinstance(item, Subject):
                ids.append(item.subject_id)
                loaders.append(partial(_given, item))
            elif isinstance(item, Volume):
                ids.append(item.name)
                loaders.append(partial(_from_volume, item, item.name))
            elif isinstance(item, (str, os.PathLike)):
                p = Path(item)
                if not p.exists():
                    raise SubjectError(f"subject file not found: {p}")
                sid = p.name.split(".nii")[0]
                ids.append(sid)
                loaders.append(partial(_from_volume, p, sid))
            else:
                raise SubjectError(f"cannot make a subject from {type(item).__name__}")
        if not ids:
            raise SubjectError("subjects list is empty")
        if len(set(ids)) != len(ids):
            raise SubjectError(f"duplicate subject ids: {sorted({i for i in ids if ids.count(i) > 1})}")
        pool = SubjectPool(ids, loaders, cache_size)
    else:
        raise SubjectError(f"cannot load subjects from {type(spec).__name__}")
    return pool.split(split)


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


def resolve_subjects(subjects=None, volumes=None, cache_size: int | None = None) -> Sequence[Subject]:
    """The env's ``subjects=`` / ``volumes=`` arguments as a sequence of Subjects (see :func:`load_subjects`).

    cache_size : the pool's LRU size for a spec (None: ``DEFAULT_CACHE_SIZE``); a given pool keeps its own."""
    if subjects is not None and volumes is not None:
        raise ValueError("give subjects= or volumes=, not both")
    if volumes is not None:
        if isinstance(volumes, (str, bytes, os.PathLike)) or not hasattr(volumes, "__len__"):
            volumes = [volumes]
        if len(volumes) == 0:
            raise ValueError("volumes is empty")
        loaded = [load_volume(v) for v in volumes]
        return [Subject(subject_id=v.name, volume=v) for v in loaded]
    if subjects is not None and not isinstance(subjects, (str, os.PathLike, SubjectPool, Subject)):
        if hasattr(subjects, "__len__") and len(subjects) == 0:
            raise ValueError("subjects is empty")
        if hasattr(subjects, "__getitem__") and not isinstance(subjects, (list, tuple)):
            return subjects  # any sequence-like of Subjects (e.g. another helper's pool)
    return load_subjects(subjects, cache_size=DEFAULT_CACHE_SIZE if cache_size is None else cache_size)
