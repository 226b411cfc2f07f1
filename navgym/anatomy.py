"""Built-in anatomy: the MNI ICBM152 2009 template shipped inside nilearn, its landmarks and standard planes.

The template (``mni_icbm152_t1_tal_nlin_sym_09a``, 1 mm, 197 x 233 x 189, RAS voxel order)
and its grey/white-matter probability maps are files inside the ``nilearn`` wheel, so this
works offline.  World space is MNI RAS+ mm.

Landmarks
---------
Coordinates are MNI152 (2009a, symmetric) mm.  Starting points come from the literature
(AC and PC as defined in MNI space by Lead-DBS, Horn & Kühn 2015, NeuroImage 107:127-135:
AC (0.25, 1.30, -5.00), PC (-0.19, -24.76, -2.38) in the 2009b template; corpus callosum and
ventricle points from standard neuroanatomy atlases).  Each was checked and adjusted on this
template: ventricle points at the deepest point (largest distance to non-CSF) of the template's
CSF label within an anatomical search box, the
commissures and callosal points by eye on zoomed T1 slices; ``docs/landmarks.png`` shows
them on the template (regenerate with ``python examples/show_landmarks.py --out docs/landmarks.png``).  They are good to
about 2 mm, enough for the search tasks' 3-5 mm success radii.

==================  ==========================  ==============================================
name                MNI mm (x, y, z)            structure
==================  ==========================  ==============================================
AC                  ( 0.0,   2.0,  -4.5)        anterior commissure, midline
PC                  ( 0.0, -25.0,  -2.5)        posterior commissure, midline
genu                ( 0.0,  29.0,   6.0)        genu of the corpus callosum (anterior bend)
splenium            ( 0.0, -39.0,  10.0)        splenium of the corpus callosum (posterior end)
frontal_horn_L      ( -6.0,  14.0,  12.0)       frontal horn of the left lateral ventricle
frontal_horn_R      (  6.0,  14.0,  12.0)       frontal horn of the right lateral ventricle
fourth_ventricle    ( 0.0, -44.0, -31.0)        fourth ventricle (centre)
atrium_L            (-30.0, -51.0,  5.0)        atrium (trigone) of the left lateral ventricle
atrium_R            ( 30.0, -51.0,  5.0)        atrium (trigone) of the right lateral ventricle
==================  ==========================  ==============================================

Standard planes
---------------
Built from landmarks by :func:`planes_from_landmarks` (for the template and for user subjects):

* ``mid_sagittal``: through AC, PC and the genu (or splenium), normal ~ +x (Right); on the
  symmetric template x = 0;
* ``acpc_axial``: contains AC and PC, perpendicular to the mid-sagittal plane; normal ~ +z;
* ``coronal_ac``: through AC, perpendicular to the AC-PC line; normal ~ +y (Anterior).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .files import atomic_path
from .geometry import Plane
from .volume import Volume, load_volume

__all__ = [
    "TEMPLATE_LANDMARKS",
    "TISSUE_LABELS",
    "template_dir",
    "load_template",
    "template_planes",
    "planes_from_landmarks",
]

TEMPLATE_LANDMARKS: dict[str, np.ndarray] = {
    name: np.array(xyz, dtype=np.float64)
    for name, xyz in {
        "AC": (0.0, 2.0, -4.5),
        "PC": (0.0, -25.0, -2.5),
        "genu": (0.0, 29.0, 6.0),
        "splenium": (0.0, -39.0, 10.0),
        "frontal_horn_L": (-6.0, 14.0, 12.0),
        "frontal_horn_R": (6.0, 14.0, 12.0),
        "fourth_ventricle": (0.0, -44.0, -31.0),
        "atrium_L": (-30.0, -51.0, 5.0),
        "atrium_R": (30.0, -51.0, 5.0),
    }.items()
}

TISSUE_LABELS = {0: "background", 1: "CSF", 2: "GM", 3: "WM"}

_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
_WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"


def template_dir() -> Path:
    """Folder inside the installed nilearn package that holds the MNI152 2009 files (found without importing
    nilearn, whose ``datasets`` module imports pandas and scikit-learn)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn is not installed; the MNI152 template ships inside it (pip install nilearn)")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    if not (folder / _T1).exists():
        raise FileNotFoundError(f"MNI152 template not found in {folder}; reinstall nilearn (>=0.10)")
    return folder


@functools.lru_cache(maxsize=1)
def load_template() -> Volume:
    """The MNI152 2009 T1 template with a tissue label map (see :data:`TISSUE_LABELS`).

    Labels: GM/WM where their probability is the largest and >= 0.5 of the tissue total;
    CSF for the rest of the intracranial space (the filled, closed GM+WM mask, so the
    ventricles count as CSF); background outside.  Cached per process, so every env in a
    process (and every forked worker) shares one copy; the label map is also cached on disk
    (:func:`cache_dir`), which makes ``gym.make("MRINav-v0")`` ~4x faster after the first time.
    """
    folder = template_dir()
    return load_volume(nib.load(folder / _T1), labels=_template_labels(folder), name="MNI152_2009")


#: bump when :func:`_build_template_labels` changes (names the on-disk cache)
_LABELS_VERSION = 1


def cache_dir() -> Path:
    """Where navgym caches derived files: ``$NAVGYM_CACHE``, else ``$XDG_CACHE_HOME/navgym``, else ``~/.cache/navgym``."""
    if os.environ.get("NAVGYM_CACHE"):
        return Path(os.environ["NAVGYM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "navgym"


def _template_labels(folder: Path) -> np.ndarray:
    """The template's label map, from the disk cache when it was built from the same nilearn files (their size
    and modification time), else built and cached (an unwritable cache only costs the time)."""
    stamp = "-".join(f"{st.st_size}.{st.st_mtime_ns}" for st in ((folder / f).stat() for f in (_GM, _WM)))
    key = hashlib.sha1(f"{_LABELS_VERSION}:{folder}:{stamp}".encode()).hexdigest()[:16]
    path = cache_dir() / f"mni152_2009_labels_{key}.npy"
    try:
        labels = np.load(path, allow_pickle=False)
        if labels.dtype == np.uint8 and labels.shape == nib.load(folder / _GM).shape:
            return labels
    except (OSError, ValueError):
        pass
    labels = _build_template_labels(folder)
    try:
        atomic_path(path, lambda tmp: np.save(tmp, labels))
    except OSError:
        pass
    return labels


def _build_template_labels(folder: Path) -> np.ndarray:
    # probabilities x 255, stored as uint8; thresholds in those units (0.3 -> 76.5, 0.5 -> 127.5)
    gm, wm = (np.asarray(nib.load(folder / f).dataobj).astype(np.int16) for f in (_GM, _WM))
    total = gm + wm
    brain = total > 76
    # binary closing by a 3x3x3 cube, 3 iterations (= by a 7x7x7 cube), as separable max/min filters (6x faster)
    brain = ndimage.minimum_filter(ndimage.maximum_filter(brain, size=7, mode="constant"), size=7, mode="constant")
    brain = ndimage.binary_fill_holes(brain)
    labels = np.zeros(gm.shape, np.uint8)
    labels[brain] = 1
    tissue = brain & (total >= 128)
    labels[tissue & (gm >= wm)] = 2
    labels[tissue & (wm > gm)] = 3
    return labels


def template_planes() -> dict[str, Plane]:
    """Standard planes of the template, from its landmarks (world mm; see :func:`planes_from_landmarks`)."""
    return planes_from_landmarks(TEMPLATE_LANDMARKS)


def planes_from_landmarks(landmarks: dict) -> dict[str, Plane]:
    """The standard planes (see the module docstring) from landmarks {name: (3,) world mm}; {} without AC and PC.

    The mid-sagittal normal is the normal of the plane through AC, PC and the genu (else the
    splenium), oriented to +x; without either, the world +x (Right) axis made perpendicular to AC-PC.
    """
    if "AC" not in landmarks or "PC" not in landmarks:
        return {}
    ac, pc = np.asarray(landmarks["AC"], float), np.asarray(landmarks["PC"], float)
    if np.linalg.norm(ac - pc) < 1e-6:
        raise ValueError("landmarks AC and PC coincide")
    anterior = (ac - pc) / np.linalg.norm(ac - pc)
    right = np.array([1.0, 0.0, 0.0])
    for third in ("genu", "splenium"):
        if third in landmarks:
            n = np.cross(anterior, np.asarray(landmarks[third], float) - pc)
            if np.linalg.norm(n) > 1e-3:
                right = n * np.sign(n[0] or 1.0)
                break
    right = right - anterior * (right @ anterior)
    right /= np.linalg.norm(right)
    return {
        "mid_sagittal": Plane(point=(ac + pc) / 2, normal=right),
        "acpc_axial": Plane(point=ac, normal=np.cross(right, anterior)),
        "coronal_ac": Plane(point=ac, normal=anterior),
    }
