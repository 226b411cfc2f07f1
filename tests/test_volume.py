"""Volume loading: world space from the affine, normalisation, and every bad input -> a clear error."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from navgym import Volume, VolumeError, load_volume
from navgym.anatomy import TEMPLATE_LANDMARKS, load_template, template_planes


def blob(shape=(20, 24, 16), seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(10, 100, shape).astype(np.float32)


def save(tmp_path, data, affine=np.eye(4), name="img.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_load_path_image_and_array_agree(tmp_path):
    data = blob()
    aff = np.diag([1.5, 2.0, 3.0, 1.0])
    aff[:3, 3] = [-10, 5, 7]
    path = save(tmp_path, data, aff, "sub-01_T1w.nii.gz")
    a = load_volume(path)
    b = load_volume(nib.load(str(path)))
    c = load_volume(data, aff)
    assert a.name == "sub-01_T1w"
    for v in (a, b, c):
        assert v.data.dtype == np.float32 and v.shape == data.shape
        assert np.allclose(v.affine, aff)
        assert np.allclose(v.spacing, [1.5, 2.0, 3.0])
    assert np.array_equal(a.data, c.data)
    assert 0.0 <= a.data.min() and a.data.max() <= 1.0
    assert not a.data.flags.writeable


def test_world_voxel_round_trip_oblique():
    aff = np.eye(4)
    aff[:3, :3] = np.array([[0, 0, -2.0], [1.2, 0.3, 0], [0, 0.9, 0.1]])
    aff[:3, 3] = [50, -20, 10]
    v = load_volume(blob(), aff)
    pts = np.random.default_rng(1).uniform(-30, 30, (10, 3))
    assert np.allclose(v.world_to_voxel(pts) @ aff[:3, :3].T + aff[:3, 3], pts)
    assert v.contains(v.center) and not v.contains(v.center + 1e4)


def test_normalisation_is_robust_to_outliers():
    data = blob()
    data[0, 0, 0] = 1e6  # one hot voxel must not squash the contrast
    v = load_volume(data, np.eye(4))
    assert np.median(v.data) > 0.3


def test_singleton_4d_is_squeezed_but_real_4d_raises(tmp_path):
    data = blob()
    assert load_volume(save(tmp_path, data[..., None], name="a.nii")).shape == data.shape
    with pytest.raises(VolumeError, match="3D"):
        load_volume(save(tmp_path, np.stack([data, data], -1), name="b.nii"))


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((10, 10, 10), np.float32), "empty"),
        (np.full((10, 10, 10), np.nan, np.float32), "NaN"),
        (np.zeros((0, 10, 10), np.float32), "empty|at least"),
        (np.ones((10, 10), np.float32), "3D"),
        (np.full((10, 10, 10), 5.0, np.float32), "contrast"),
    ],
)
def test_bad_arrays_raise(data, match):
    with pytest.raises(VolumeError, match=match):
        load_volume(data, np.eye(4))


def test_partial_nan_raises_unless_asked():
    data = blob()
    data[1, 2, 3] = np.nan
    with pytest.raises(VolumeError, match="nan='zero'"):
        load_volume(data, np.eye(4))
    v = load_volume(data, np.eye(4), nan="zero")
    assert np.all(np.isfinite(v.data)) and v.data[1, 2, 3] == 0


@pytest.mark.parametrize(
    "affine, match",
    [
        (np.diag([1, 0, 1, 1.0]), "not invertible"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.eye(3), "4x4"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1.0]]), "last row"),
    ],
)
def test_bad_affines_raise(affine, match):
    with pytest.raises(VolumeError, match=match):
        load_volume(blob(), affine)


def test_array_needs_affine():
    with pytest.raises(VolumeError, match="affine"):
        load_volume(blob())


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(VolumeError, match="not found"):
        load_volume(tmp_path / "missing.nii.gz")
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(gzip.compress(b"this is not a nifti file" * 10))
    with pytest.raises(VolumeError, match="cannot read"):
        load_volume(bad)
    with pytest.raises(VolumeError, match="cannot load"):
        load_volume(42)


def test_labels_same_grid_integers(tmp_path):
    data = blob()
    labels = (data > 50).astype(np.uint8) * 3
    v = load_volume(data, np.eye(4), labels=labels)
    assert v.labels.dtype == np.uint8 and np.array_equal(v.labels, labels)
    with pytest.raises(VolumeError, match="shape"):
        load_volume(data, np.eye(4), labels=labels[:-1])
    with pytest.raises(VolumeError, match="integers"):
        load_volume(data, np.eye(4), labels=labels + 0.5)
    other = save(tmp_path, labels, np.diag([2, 2, 2, 1.0]), "lab.nii.gz")
    with pytest.raises(VolumeError, match="affine differs"):
        load_volume(save(tmp_path, data), labels=other)


def test_volume_rejects_mismatched_labels_directly():
    with pytest.raises(VolumeError):
        Volume(data=blob(), affine=np.eye(4), labels=np.zeros((2, 2, 2), np.uint8))


def test_template_is_real_anatomy_with_labels():
    t = load_template()
    assert t.shape == (197, 233, 189) and np.allclose(t.spacing, 1.0)
    counts = np.bincount(t.labels.ravel(), minlength=4)
    assert all(counts[1:] > 50_000)  # CSF, GM and WM all present
    # landmarks sit inside the brain, ventricle landmarks in CSF
    for name, xyz in TEMPLATE_LANDMARKS.items():
        assert t.contains(xyz), name
        i, j, k = np.round(t.world_to_voxel(xyz)).astype(int)
        assert t.labels[i, j, k] > 0, name
    for name in ("frontal_horn_L", "frontal_horn_R", "fourth_ventricle", "atrium_L", "atrium_R"):
        i, j, k = np.round(t.world_to_voxel(TEMPLATE_LANDMARKS[name])).astype(int)
        assert t.labels[i, j, k] == 1, name
    planes = template_planes()
    assert planes["mid_sagittal"].angle_deg([1, 0, 0]) < 1e-9
    assert planes["acpc_axial"].distance(TEMPLATE_LANDMARKS["PC"]) < 1e-9
    assert planes["coronal_ac"].distance(TEMPLATE_LANDMARKS["AC"]) < 1e-9
    # the symmetric template: left/right landmark pairs mirror each other
    assert np.allclose(TEMPLATE_LANDMARKS["frontal_horn_L"] * [-1, 1, 1], TEMPLATE_LANDMARKS["frontal_horn_R"])
