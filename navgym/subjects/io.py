"""Subjects on disk: a BIDS-like layout with JSON sidecars, and the user's own NIfTI / BIDS folders.

Layout written by :func:`save_subject` (and ``navgym-subjects``)::

    <root>/dataset_description.json
    <root>/participants.tsv                        participant_id, contrast, split
    <root>/sub-<id>/anat/sub-<id>_<T1w|T2w|PDw>.nii.gz   image, uint8 (0..255 = [0, 1])
    <root>/sub-<id>/anat/sub-<id>_dseg.nii.gz      labels 0 bg, 1 CSF, 2 GM, 3 WM
    <root>/sub-<id>/anat/sub-<id>_<contrast>.json  sidecar: {"navgym": {landmarks, planes, transform, seed, ...}}

Every file is written atomically (:mod:`navgym.files`); the sidecar is
written last, so a subject folder with a sidecar is complete.

The user's data (:func:`find_entries`): a folder of ``NAME.nii[.gz]`` images, or a BIDS dataset
(``sub-*/[ses-*/]anat/*_T1w.nii.gz``, also ``_T2w``/``_PDw``).  Next to an image, optional:

* labels: ``NAME_dseg.nii[.gz]`` or ``NAME_labels.nii[.gz]`` (BIDS: ``sub-X_dseg.nii.gz``), same grid;
* landmarks: ``NAME_landmarks.csv`` (columns ``name,x,y,z``, RAS+ world mm) or
  ``NAME.mrk.json`` / ``NAME_landmarks.mrk.json`` (3D Slicer markups; LPS -> RAS by negating x, y);
  or one ``landmarks.csv`` at the root with columns ``subject,name,x,y,z``.

With AC and PC among the landmarks the standard planes are built like the template's
(:func:`navgym.anatomy.planes_from_landmarks`).  User subjects have no ``to_template`` (None).
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..anatomy import planes_from_landmarks
from ..files import atomic_path, write_json_atomic
from ..geometry import Plane
from ..volume import Volume, VolumeError, load_volume
from .subject import Subject
from .transform import WarpTransform

__all__ = [
    "SubjectError",
    "Entry",
    "save_subject",
    "load_entry",
    "find_entries",
    "entry_for_image",
    "check_landmark_coverage",
    "read_landmarks",
]

IMAGE_SUFFIXES = ("T1w", "T2w", "PDw")
_NII = (".nii.gz", ".nii")
_SIDE = ("_dseg", "_labels", "_seg", "_mask", "_landmarks")


class SubjectError(ValueError):
    """A subject that cannot be loaded: missing files, mismatched grids, bad landmarks."""


@dataclass(frozen=True)
class Entry:
    """Where one subject lives on disk (what a pool keeps before loading)."""

    subject_id: str
    image: Path
    labels: Path | None = None
    landmarks: Path | None = None
    sidecar: Path | None = None
    table: Path | None = None  # a root-level landmarks.csv with a ``subject`` column


# --- writing ------------------------------------------------------------------------------------
def save_subject(subject: Subject, root: str | os.PathLike, split: str | None = None) -> Path:
    """Write ``subject`` under ``root`` in the layout above; returns the sidecar path.

    The image is stored as uint8 (round(x * 255)); synthetic subjects are already quantised
    that way, so they reload bit-identically.
    """
    sid = subject.subject_id
    if not re.fullmatch(r"[A-Za-z0-9]+", sid):
        raise SubjectError(f"subject id {sid!r} is not BIDS-safe (letters and digits only)")
    meta = dict(subject.meta)
    contrast = meta.get("contrast", "T1w")
    anat = Path(root) / f"sub-{sid}" / "anat"
    stem = anat / f"sub-{sid}_{contrast}"
    vol = subject.volume
    q = np.rint(np.clip(vol.data, 0, 1) * 255).astype(np.uint8)
    atomic_path(stem.with_name(stem.name + ".nii.gz"), lambda tmp: nib.save(_nifti(q, vol.affine), tmp))
    if vol.labels is not None:
        dseg = anat / f"sub-{sid}_dseg.nii.gz"
        atomic_path(dseg, lambda tmp: nib.save(_nifti(np.asarray(vol.labels, np.uint8), vol.affine), tmp))
    record = {
        **meta,
        "subject_id": sid,
        "split": split,
        "grid_affine": np.asarray(vol.affine).tolist(),
        "landmarks_ras_mm": {k: v.tolist() for k, v in subject.landmarks.items()},
        "planes": {k: {"point": p.point.tolist(), "normal": p.normal.tolist()} for k, p in subject.planes.items()},
        "transform": subject.to_template.to_dict() if isinstance(subject.to_template, WarpTransform) else None,
    }
    sidecar = stem.with_name(stem.name + ".json")
    write_json_atomic(sidecar, {"navgym": record})
    return sidecar


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


# --- finding ------------------------------------------------------------------------------------
def _strip(name: str) -> str | None:
    for ext in _NII:
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def find_entries(folder: str | os.PathLike) -> list[Entry]:
    """Subjects in a folder of NIfTI files or a BIDS dataset, sorted by id (see the module docstring)."""
    root = Path(folder)
    if not root.is_dir():
        raise SubjectError(f"subject folder not found: {root}")
    table = root / "landmarks.csv"
    table = table if table.exists() else None
    subs = sorted(p for p in root.glob("sub-*") if p.is_dir())
    entries = []
    if subs:
        for sub in subs:
            anats = sorted(sub.glob("anat")) + sorted(sub.glob("ses-*/anat"))
            images = [
                f
                for suffix in IMAGE_SUFFIXES
                for anat in anats
                for f in sorted(anat.glob(f"*_{suffix}.nii*"))
                if _strip(f.name)
            ]
            if not images:
                raise SubjectError(f"{sub}: no anat/*_T1w.nii[.gz] (or _T2w/_PDw) image")
            image = images[0]
            base = _strip(image.name)
            prefix = base[: base.rfind("_")]
            entries.append(_entry(sub.name[4:], image, image.parent, prefix, base, table))
    else:
        for f in sorted(root.iterdir()):
            base = _strip(f.name)
            if base is None or base.endswith(_SIDE):
                continue
            entries.append(_entry(base, f, root, base, base, table))
    if not entries:
        raise SubjectError(f"no NIfTI images (*.nii, *.nii.gz) or BIDS sub-*/anat folders in {root}")
    ids = [e.subject_id for e in entries]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise SubjectError(f"duplicate subject ids in {root}: {sorted(dup)}")
    check_landmark_coverage(entries, str(root))
    return entries


def entry_for_image(path: str | os.PathLike) -> Entry:
    """The :class:`Entry` of one NIfTI image with its sidecars (labels, landmarks) beside it, id = file name."""
    path = Path(path)
    base = _strip(path.name)
    if base is None:
        raise SubjectError(f"not a NIfTI image (*.nii, *.nii.gz): {path}")
    if not path.is_file():
        raise SubjectError(f"subject file not found: {path}")
    return _entry(base, path, path.parent, base, base, None)


def check_landmark_coverage(entries: list[Entry], where: str) -> None:
    """Raise :class:`SubjectError` naming the scans without landmarks when only some of ``entries`` have them.

    Landmarks come from a sidecar file, a root ``landmarks.csv`` row or a navgym sidecar record; a set
    where some scans have them and others not would fail only at the episode that draws such a scan.
    """
    tables: dict[Path, set] = {}

    def has(e: Entry) -> bool:
        if e.landmarks is not None:
            return True
        if e.sidecar is not None:
            try:
                record = json.loads(e.sidecar.read_text()).get("navgym")
            except (OSError, json.JSONDecodeError, AttributeError):
                record = None
            if record and record.get("landmarks_ras_mm"):
                return True
        if e.table is not None:
            if e.table not in tables:
                with open(e.table, newline="") as f:
                    tables[e.table] = {row.get("subject") for row in csv.DictReader(f)}
            return e.subject_id in tables[e.table]
        return False

    missing = [e.subject_id for e in entries if not has(e)]
    if missing and len(missing) < len(entries):
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise SubjectError(
            f"{where}: {len(entries) - len(missing)} scans have landmarks but {len(missing)} do not ({shown}); "
            "give each a NAME_landmarks.csv (or a landmarks.csv row), or none"
        )


def _entry(sid, image, folder: Path, prefix: str, base: str, table) -> Entry:
    def first(*names):
        for n in names:
            if (folder / n).exists():
                return folder / n
        return None

    labels = first(*(f"{p}{s}{e}" for p in (prefix, base) for s in ("_dseg", "_labels") for e in _NII))
    landmarks = first(*(f"{p}{s}" for p in (base, prefix) for s in ("_landmarks.csv", ".mrk.json", "_landmarks.mrk.json")))
    sidecar = folder / f"{base}.json"
    return Entry(sid, image, labels, landmarks, sidecar if sidecar.exists() else None, table)


# --- loading ------------------------------------------------------------------------------------
def load_entry(entry: Entry) -> Subject:
    """Load one subject: a navgym-written one (sidecar with a ``navgym`` record) exactly, else a user scan."""
    record = None
    if entry.sidecar is not None:
        try:
            record = json.loads(entry.sidecar.read_text()).get("navgym")
        except (OSError, json.JSONDecodeError) as e:
            raise SubjectError(f"cannot read sidecar {entry.sidecar}: {e}") from e
    try:
        if record is not None:
            return _load_navgym(entry, record)
        vol = load_volume(entry.image, labels=entry.labels, name=entry.subject_id)
    except VolumeError as e:
        raise SubjectError(f"subject {entry.subject_id}: {e}") from e
    landmarks = {}
    if entry.landmarks is not None:
        landmarks = read_landmarks(entry.landmarks)
    elif entry.table is not None:
        landmarks = read_landmarks(entry.table, subject=entry.subject_id)
    check_landmarks(vol, landmarks, entry.subject_id)
    try:
        planes = planes_from_landmarks(landmarks)
    except ValueError as e:
        raise SubjectError(f"subject {entry.subject_id}: {e}") from e
    return Subject(entry.subject_id, vol, landmarks, planes, None)


def _load_navgym(entry: Entry, record: dict) -> Subject:
    img = nib.load(str(entry.image))
    grid = np.asarray(record["grid_affine"], np.float64)
    if not np.allclose(img.affine, grid, atol=1e-4):
        raise SubjectError(f"{entry.image}: image affine differs from its sidecar's grid_affine (mismatched grid)")
    raw = np.asanyarray(img.dataobj.get_unscaled() if hasattr(img.dataobj, "get_unscaled") else img.dataobj)
    if raw.dtype != np.uint8:
        raise SubjectError(f"{entry.image}: expected a uint8 image as written by navgym, got {raw.dtype}")
    data = raw.astype(np.float32) / np.float32(255)
    labels = None
    if entry.labels is not None:
        lab = nib.load(str(entry.labels))
        if lab.shape != img.shape or not np.allclose(lab.affine, img.affine, atol=1e-4):
            raise SubjectError(f"{entry.labels}: label map grid differs from the image's (mismatched grid)")
        labels = np.asarray(lab.dataobj, np.uint8)
    vol = Volume(data, grid, labels, entry.subject_id)
    landmarks = {k: np.asarray(v, float) for k, v in record.get("landmarks_ras_mm", {}).items()}
    planes = {k: Plane(p["point"], p["normal"]) for k, p in record.get("planes", {}).items()}
    transform = WarpTransform.from_dict(record["transform"]) if record.get("transform") else None
    meta = {k: record[k] for k in ("generator", "seed", "contrast", "config") if k in record}
    return Subject(entry.subject_id, vol, landmarks, planes, transform, meta)


def read_landmarks(path: str | os.PathLike, subject: str | None = None) -> dict[str, np.ndarray]:
    """Landmarks {name: (3,) RAS+ mm} from a CSV (``name,x,y,z``; with ``subject`` column when
    ``subject`` is given) or a 3D Slicer ``.mrk.json`` (LPS coordinates are converted to RAS)."""
    path = Path(path)
    if not path.exists():
        raise SubjectError(f"landmarks file not found: {path}")
    out: dict[str, np.ndarray] = {}
    try:
        if path.name.endswith(".json"):
            doc = json.loads(path.read_text())
            for markup in doc.get("markups", []):
                system = markup.get("coordinateSystem", "LPS").upper()
                if system not in ("LPS", "RAS"):
                    raise SubjectError(f"{path}: unknown coordinateSystem {system!r}")
                flip = np.array([-1.0, -1.0, 1.0]) if system == "LPS" else np.ones(3)
                for i, cp in enumerate(markup.get("controlPoints", [])):
                    name = cp.get("label") or f"{markup.get('name', 'F')}-{i + 1}"
                    out[name] = np.asarray(cp["position"], float) * flip
        else:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            need = {"name", "x", "y", "z"} | ({"subject"} if subject is not None else set())
            if rows and not need <= set(rows[0]):
                raise SubjectError(f"{path}: landmarks CSV needs columns {sorted(need)}, has {sorted(rows[0])}")
            for row in rows:
                if subject is None or row["subject"] == subject:
                    out[row["name"]] = np.array([float(row["x"]), float(row["y"]), float(row["z"])])
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        if isinstance(e, SubjectError):
            raise
        raise SubjectError(f"cannot read landmarks from {path}: {type(e).__name__}: {e}") from e
    for name, xyz in out.items():
        if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
            raise SubjectError(f"{path}: landmark {name!r} is not 3 finite numbers")
    return out


def check_landmarks(volume: Volume, landmarks: dict, subject_id: str) -> None:
    """Raise :class:`SubjectError` if any landmark lies outside the volume's voxel grid."""
    if not landmarks:
        return
    names = list(landmarks)
    inside = volume.contains(np.stack([landmarks[n] for n in names]))
    if not inside.all():
        bad = [n for n, ok in zip(names, inside) if not ok]
        raise SubjectError(
            f"subject {subject_id}: landmarks {bad} lie outside the volume (RAS+ mm expected; "
            "a Slicer file in LPS needs coordinateSystem 'LPS')"
        )
