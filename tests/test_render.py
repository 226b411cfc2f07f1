"""Renderer: exactness against array slices, world-space invariance, numba vs torch, labels, edges."""

import numba
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from navgym import SlicePose, TorchRenderer, Volume, render_slice, render_slices
from navgym.geometry import canonical_rotation, pixel_to_voxel
from navgym.render import sample_at_indices, sample_store


# the CPU store holds <= 65536 distinct values exactly (a table) and falls back to the float32
# array beyond that: "few" exercises the first, "many" (> 65536 voxels, all distinct) the second
STORE_KINDS = {"few": dict(shape=(21, 25, 29), levels=300), "many": dict(shape=(50, 50, 44))}


def random_volume(shape=(21, 25, 29), margin=3, seed=0, affine=None, labels=False, levels=None) -> Volume:
    """Random [0, 1] image with a zero margin (so the cropped store differs from the grid)."""
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, np.float32)
    inner = tuple(slice(margin, s - margin) for s in shape)
    data[inner] = rng.uniform(0.05, 1.0, data[inner].shape)
    if levels:
        data = np.round(data * levels) / levels
    lab = rng.integers(0, 4, shape).astype(np.uint8) if labels else None
    aff = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    return Volume(data, aff, labels=lab, name="random")


def quantised(img):
    """The documented uint8 rule, ``floor(clip(x, 0, 1) * 255 + 0.5)`` in float32."""
    return np.floor(np.clip(img, 0, 1).astype(np.float32) * np.float32(255) + np.float32(0.5))


def random_poses(vol: Volume, n: int, seed: int = 1, spread: float = 15.0, fov: float = 30.0):
    rng = np.random.default_rng(seed)
    centers = vol.center + rng.uniform(-spread, spread, (n, 3))
    rotations = Rotation.random(n, random_state=seed).as_matrix()
    return centers, rotations, np.full(n, fov) * rng.uniform(0.5, 1.5, n)


def expected_axis_slice(data, view, ijk, h, w):
    """The array slice an axis-aligned (identity-affine) pose sees, pixel spacing 1 voxel, NaN outside."""
    i0, j0, k0 = ijk
    out = np.full((h, w), np.nan, np.float32)
    for r in range(h):
        for c in range(w):
            du, dv = c - (w - 1) // 2, (h - 1) // 2 - r
            if view == "axial":  # u = +i, v = +j
                i, j, k = i0 + du, j0 + dv, k0
            elif view == "coronal":  # u = +i, v = +k
                i, j, k = i0 + du, j0, k0 + dv
            else:  # sagittal: u = +j, v = +k
                i, j, k = i0, j0 + du, k0 + dv
            if 0 <= i < data.shape[0] and 0 <= j < data.shape[1] and 0 <= k < data.shape[2]:
                out[r, c] = data[i, j, k]
    return out


@pytest.mark.parametrize("kind", sorted(STORE_KINDS))
@pytest.mark.parametrize("view", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("fill", [0.0, 0.5])
def test_axis_aligned_plane_equals_array_slice(kind, view, fill):
    vol = random_volume(**STORE_KINDS[kind])
    assert sample_store(vol, fill).indexed()[3] == (kind == "few")
    data = np.asarray(vol.data)
    h, w = 31, 35  # the border and the outside are covered too
    last = tuple(n - 1 for n in vol.shape)
    for ijk in [(10, 12, 14), (0, 0, 0), last, (3, 7, 5)]:  # includes the grid's corners
        # render_slices with the exact canonical matrix (SlicePose re-orthonormalises through scipy,
        # which can leave 1e-16 entries and so 1e-15 blends)
        pose = SlicePose(np.array(ijk, float), canonical_rotation(view), fov=float(w))
        img = render_slices(vol, pose.center[None], canonical_rotation(view)[None], [pose.fov], (h, w), fill=fill)[0]
        ref = expected_axis_slice(data, view, ijk, h, w)
        inside = ~np.isnan(ref)
        np.testing.assert_array_equal(img[inside], ref[inside])  # exact, not approximately
        assert np.all(img[~inside] == np.float32(fill))  # >= 1 voxel off the grid: footprint wholly outside
        u8 = render_slices(vol, pose.center[None], canonical_rotation(view)[None], [pose.fov], (h, w), fill=fill,
                           out=np.empty((1, h, w), np.uint8))[0]  # fmt: skip
        want = quantised(img)
        assert np.abs(u8.astype(int) - want).max() <= 1 and np.mean(u8 == want) > 0.999


def test_outside_value_and_border_blend():
    vol = random_volume(margin=0, labels=True)
    far = SlicePose(vol.center + [500.0, 0, 0], canonical_rotation("sagittal"), fov=40.0)
    for fill in (0.0, 0.25):
        assert np.all(render_slice(vol, far, (16, 16), fill=fill) == np.float32(fill))
    assert np.all(render_slice(vol, far, (16, 16), labels=True) == 0)
    # a sagittal plane half a voxel beyond the last i: every in-plane sample blends 50/50 with fill
    edge = SlicePose([vol.shape[0] - 0.5, 12.0, 14.0], canonical_rotation("sagittal"), fov=9.0)
    img = render_slice(vol, edge, (9, 9), fill=0.3)
    ref = 0.5 * np.asarray(vol.data)[-1, 8:17, 10:19].T[::-1] + 0.5 * 0.3
    np.testing.assert_allclose(img, ref, atol=1e-6)
    assert np.all(render_slice(vol, SlicePose([vol.shape[0] - 0.5 + 1.0, 12, 14], edge.rotation, 9.0), (9, 9)) == 0)


def _analytic(xyz):
    x, y, z = np.moveaxis(np.asarray(xyz, float), -1, 0)
    return 0.5 + 0.2 * np.sin(x / 9.0) * np.cos(y / 11.0) + 0.15 * np.sin(z / 7.0 + 0.3)


def _sampled(affine, shape) -> Volume:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    return Volume(_analytic(xyz).astype(np.float32), affine, name="analytic")


def test_same_image_other_voxel_order_same_world_slice():
    vol = random_volume(seed=3)
    data = np.asarray(vol.data)
    n = np.array(vol.shape) - 1
    # flip i, swap j and k: voxel (a, b, c) of the new grid is (n_i - a, c, b) of the old one
    perm = np.ascontiguousarray(data[::-1].transpose(0, 2, 1))
    a2v = np.array([[-1, 0, 0, n[0]], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)  # new voxel -> old voxel
    other = Volume(perm, vol.affine @ a2v, name="permuted")
    centers, rotations, fovs = random_poses(vol, 12)
    for fill in (0.0, 0.4):
        a = render_slices(vol, centers, rotations, fovs, (24, 20), fill=fill)
        b = render_slices(other, centers, rotations, fovs, (24, 20), fill=fill)
        np.testing.assert_allclose(a, b, atol=2e-6)
    # and a non-C-ordered array of the same values gives the same result
    fortran = Volume(np.asfortranarray(data), vol.affine, name="fortran")
    np.testing.assert_array_equal(render_slices(fortran, centers, rotations, fovs, (24, 20)),
                                  render_slices(vol, centers, rotations, fovs, (24, 20)))  # fmt: skip


def test_oblique_affine_same_world_slice():
    """A smooth function sampled on a 1 mm axis-aligned grid and on a rotated anisotropic grid."""
    a_aff = np.eye(4)
    a_aff[:3, 3] = -30.0
    grid_a = _sampled(a_aff, (61, 61, 61))
    rot = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    b_aff = np.eye(4)
    b_aff[:3, :3] = rot @ np.diag([0.8, 1.1, 0.9])
    b_aff[:3, 3] = -b_aff[:3, :3] @ (np.array([80, 58, 70]) - 1) / 2  # grid centred on the origin
    grid_b = _sampled(b_aff, (80, 58, 70))
    rng = np.random.default_rng(0)
    centers = rng.uniform(-4, 4, (8, 3))
    rotations = Rotation.random(8, random_state=2).as_matrix()
    fovs = np.full(8, 30.0)  # stays inside both grids
    a = render_slices(grid_a, centers, rotations, fovs, (32, 32))
    b = render_slices(grid_b, centers, rotations, fovs, (32, 32))
    truth = np.stack([SlicePose(c, r, f).grid((32, 32)) for c, r, f in zip(centers, rotations, fovs)])
    truth = _analytic(truth)
    assert np.abs(a - truth).max() < 2e-3 and np.abs(b - truth).max() < 2e-3  # trilinear error of a smooth field
    np.testing.assert_allclose(a, b, atol=3e-3)
    assert np.std(a) > 0.05  # the slices do vary


@pytest.mark.parametrize("kind", sorted(STORE_KINDS))
@pytest.mark.parametrize("fill", [0.0, 0.2])
def test_numba_matches_torch(kind, fill):
    vol = random_volume(**{**STORE_KINDS[kind], "seed": 5})
    span = max(vol.shape)
    centers, rotations, fovs = random_poses(vol, 16, spread=0.3 * span, fov=1.4 * span)  # many cross the border
    for size in [(32, 32), (17, 23)]:
        ours = render_slices(vol, centers, rotations, fovs, size, fill=fill)
        theirs = TorchRenderer(vol).render(centers, rotations, fovs, size, fill=fill).numpy()
        assert np.abs(ours - theirs).max() < 1e-4
        assert (ours != fill).mean() > 0.1 and (ours == np.float32(fill)).mean() > 0.05  # inside and outside


def test_sample_at_indices_voxel_centres():
    """Integer indices sample voxel centres; half a voxel outside blends half the edge value with zero."""
    torch = pytest.importorskip("torch")
    data = torch.as_tensor(np.random.default_rng(0).uniform(0.1, 1.0, (2, 3, 4, 5)))  # (C, I, J, K)
    idx = torch.as_tensor(np.stack(np.meshgrid(*[np.arange(s) for s in data.shape[1:]], indexing="ij"), -1),
                          dtype=torch.float64).reshape(1, 12, 5, 3)
    np.testing.assert_allclose(sample_at_indices(data[None], idx)[0].numpy(), data.reshape(2, 12, 5).numpy(), atol=1e-12)
    mid = torch.tensor([[[[0.5, 1.0, 2.0], [-0.5, 0.0, 0.0], [2.5, 3.5, 4.0], [1.0, 1.0, 5.0]]]], dtype=torch.float64)
    got = sample_at_indices(data[None], mid)[0, :, 0].numpy()
    d = data.numpy()
    want = np.stack([(d[:, 0, 1, 2] + d[:, 1, 1, 2]) / 2, d[:, 0, 0, 0] / 2, d[:, 2, 3, 4] / 4, np.zeros(2)], 1)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_torch_renderer_samples_voxel_centres():
    """A slice through voxel centres (oblique affine) shows the voxel values themselves."""
    pytest.importorskip("torch")
    affine = np.array([[0.0, -1.2, 0, 5], [1.2, 0, 0, -3], [0, 0, 1.5, 2], [0, 0, 0, 1]])
    vol = random_volume(shape=(9, 10, 11), margin=0, seed=3, affine=affine)
    # axial view, 1.2 mm pixels: u = +x = voxel -j, v = +y = voxel +i, one voxel per pixel
    pose = SlicePose(vol.affine[:3] @ [3.5, 4.5, 6, 1], canonical_rotation("axial"), 1.2 * 10)
    got = TorchRenderer(vol).render(pose.center[None], pose.rotation[None], np.array([pose.fov]), (8, 10)).numpy()[0]
    vox = np.einsum("ab,hwb->hwa", vol.inverse_affine[:3, :3], pose.grid((8, 10))) + vol.inverse_affine[:3, 3]
    np.testing.assert_allclose(vox, np.round(vox), atol=1e-9)  # every pixel centre is a voxel centre
    i, j, k = np.round(vox).astype(int).transpose(2, 0, 1)
    np.testing.assert_allclose(got, vol.data[i, j, k], atol=1e-6)
    np.testing.assert_allclose(render_slice(vol, pose, (8, 10)), got, atol=1e-6)


def test_labels_nearest_neighbour():
    vol = random_volume(labels=True)
    centers, rotations, fovs = random_poses(vol, 6, spread=12.0)
    got = render_slices(vol, centers, rotations, fovs, (20, 18), labels=True)
    assert got.dtype == np.uint8
    m = pixel_to_voxel(vol.inverse_affine, centers, rotations, fovs, (20, 18))
    r, c = np.meshgrid(np.arange(20), np.arange(18), indexing="ij")
    vox = m[:, None, None, :, 0] * r[..., None] + m[:, None, None, :, 1] * c[..., None] + m[:, None, None, :, 2]
    idx = np.floor(vox + 0.5).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(vol.shape)), axis=-1)
    want = np.zeros(got.shape, np.uint8)
    want[inside] = np.asarray(vol.labels)[tuple(idx[inside].T)]
    np.testing.assert_array_equal(got, want)
    assert inside.mean() > 0.3 and (~inside).any()
    # labels are never blended: only values from the map appear
    assert set(np.unique(got)) <= set(np.unique(vol.labels))


@pytest.mark.parametrize("kind", sorted(STORE_KINDS))
def test_batched_equals_one_by_one_and_threads_agree(kind):
    """A large batch takes the parallel kernels (when numba has > 1 thread), single slices the serial ones."""
    vol = random_volume(labels=True, **STORE_KINDS[kind])
    n, size = 24, (40, 36)  # 34560 pixels: above render._PARALLEL_MIN_PIXELS; > 1 block of rows per pose
    centers, rotations, fovs = random_poses(vol, n, spread=0.3 * max(vol.shape), fov=1.2 * max(vol.shape))
    batch = render_slices(vol, centers, rotations, fovs, size)
    batch8 = render_slices(vol, centers, rotations, fovs, size, out=np.empty((n, *size), np.uint8))
    labels = render_slices(vol, centers, rotations, fovs, size, labels=True)
    assert batch.std() > 0.1 and labels.max() > 0
    for i in range(n):
        pose = SlicePose(centers[i], rotations[i], fovs[i])
        np.testing.assert_array_equal(render_slice(vol, pose, size), batch[i])
        np.testing.assert_array_equal(render_slice(vol, pose, size, labels=True), labels[i])
        one = render_slices(vol, centers[i:i + 1], rotations[i:i + 1], fovs[i:i + 1], size,
                            out=np.empty((1, *size), np.uint8))  # fmt: skip
        np.testing.assert_array_equal(one[0], batch8[i])
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(render_slices(vol, centers, rotations, fovs, size), batch)
        np.testing.assert_array_equal(render_slices(vol, centers, rotations, fovs, size, labels=True), labels)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("kind", sorted(STORE_KINDS))
def test_uint8_output_matches_quantised_float(kind):
    vol = random_volume(**{**STORE_KINDS[kind], "seed": 7})
    centers, rotations, fovs = random_poses(vol, 10)
    img = render_slices(vol, centers, rotations, fovs, (30, 30))
    u8 = render_slices(vol, centers, rotations, fovs, (30, 30), out=np.empty((10, 30, 30), np.uint8))
    diff = np.abs(u8.astype(int) - quantised(img))
    assert diff.max() <= 1 and (diff > 0).mean() < (0.001 if kind == "few" else 0.01)


def test_store_is_built_once_and_shared():
    vol = random_volume()
    store = sample_store(vol)
    assert sample_store(vol) is store and sample_store(vol, 0.5) is not store
    assert store.shape == (15, 19, 23)  # the non-zero box of a margin-3 volume
    centers, rotations, fovs = random_poses(vol, 2)
    for _ in range(3):
        render_slices(vol, centers, rotations, fovs, (8, 8), out=np.empty((2, 8, 8), np.uint8))
        render_slices(vol, centers, rotations, fovs, (8, 8))
    lut = store.indexed()[2]
    assert 1000 < lut.size <= 15 * 19 * 23  # the distinct values of the box (random floats)
    assert store.nbytes == 15 * 19 * 23 * 2 + lut.nbytes  # one 16-bit copy of the box + its table


def test_bad_inputs_raise():
    vol = random_volume()
    pose = SlicePose(vol.center, np.eye(3), 20.0)
    for size in [(0, 8), (8, -1), 0]:
        with pytest.raises(ValueError, match="size"):
            render_slice(vol, pose, size)
    c, r, f = pose.center[None], pose.rotation[None], [pose.fov]
    with pytest.raises(ValueError, match="shape"):
        render_slices(vol, c, r, f, (8, 8), out=np.empty((1, 8, 9), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        render_slices(vol, c, r, f, (8, 8), out=np.empty((1, 8, 8), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        render_slices(vol, c, r, f, (8, 8), out=np.empty((1, 8, 16), np.float32)[:, :, ::2])
    with pytest.raises(ValueError, match="centers"):
        render_slices(vol, np.zeros((2, 3)), r, f, (8, 8))
    with pytest.raises(ValueError, match="label map"):
        render_slice(vol, pose, (8, 8), labels=True)


def _reference(vol: Volume, centers, rotations, fovs, size, fill):
    """Plain numpy trilinear sampling with ``fill`` blending (float64): the semantics, slowly."""
    data = np.asarray(vol.data, np.float64)
    padded = np.pad(data, 1, constant_values=fill)  # index + 1; outside the pad the footprint is all fill
    m = pixel_to_voxel(vol.inverse_affine, centers, rotations, fovs, size)
    r, c = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing="ij")
    vox = m[:, None, None, :, 0] * r[..., None] + m[:, None, None, :, 1] * c[..., None] + m[:, None, None, :, 2]
    x = vox + 1.0
    base = np.floor(x).astype(int)
    frac = x - base
    out = np.zeros(vox.shape[:-1])
    for corner in np.ndindex(2, 2, 2):
        idx = base + np.array(corner)
        w = np.prod(np.where(np.array(corner) == 1, frac, 1.0 - frac), axis=-1)
        ok = np.all((idx >= 0) & (idx < np.array(padded.shape)), axis=-1)
        vals = np.full(ok.shape, float(fill))
        vals[ok] = padded[tuple(idx[ok].T)]
        out += w * vals
    return out


@pytest.mark.parametrize("kind", sorted(STORE_KINDS))
def test_near_axis_aligned_and_boundary_poses_match_reference(kind):
    """Rows nearly parallel to a voxel axis and planes on the grid's faces (the row-splitting edge cases)."""
    vol = random_volume(**STORE_KINDS[kind], margin=0)
    n = np.array(vol.shape) - 1.0
    rng = np.random.default_rng(11)
    centers, rotations = [], []
    for view in ["axial", "coronal", "sagittal"]:
        for eps in [0.0, 1e-13, 1e-10, 1e-7, 1e-3]:
            for face in [0.0, 1.0]:
                c = rng.uniform(0, n)
                axis = {"axial": 2, "coronal": 1, "sagittal": 0}[view]
                c[axis] = face * n[axis] + rng.choice([0.0, 1e-9, -1e-9, 0.5, -0.5])
                centers.append(c)
                rotations.append(Rotation.from_rotvec(rng.normal(size=3) * eps).as_matrix() @ canonical_rotation(view))
    centers, rotations = np.array(centers), np.array(rotations)
    fovs = np.full(len(centers), 1.5 * max(vol.shape))
    for fill in (0.0, 0.3):
        got = render_slices(vol, centers, rotations, fovs, (23, 29), fill=fill)
        np.testing.assert_allclose(got, _reference(vol, centers, rotations, fovs, (23, 29), fill), atol=2e-6)


def test_render_poses_renders_each_pose_in_its_subject():
    from navgym.render import render_poses
    from navgym.subjects import Subject

    vols = [random_volume(seed=s, labels=True) for s in (1, 2)]
    subjects = [Subject("a", vols[0]), Subject("b", vols[1])]
    index = np.array([1, 0, 1, 1, 0])
    centers, rotations, fovs = random_poses(vols[0], 5, spread=4.0)
    for labels in (False, True):
        got = render_poses(subjects, index, centers, rotations, fovs, (16, 12), labels=labels)
        for i, s in enumerate(index):
            one = np.empty((1, 16, 12), np.uint8)
            render_slices(vols[s], centers[i : i + 1], rotations[i : i + 1], fovs[i : i + 1], (16, 12), labels=labels, out=one)
            np.testing.assert_array_equal(got[i], one[0])
    images = render_poses(subjects, index, centers, rotations, fovs, (16, 12))
    assert not np.array_equal(images[0], render_poses(subjects, np.zeros(5, int), centers, rotations, fovs, (16, 12))[0])
    held = {7: subjects[1]}  # any mapping from the index values to subjects
    np.testing.assert_array_equal(render_poses(held, [7], centers[:1], rotations[:1], fovs[:1], (16, 12))[0], images[0])
    with pytest.raises(ValueError, match="subject_index has 2 entries for 5 poses"):
        render_poses(subjects, [0, 1], centers, rotations, fovs, (16, 12))


@pytest.mark.parametrize("fill", [0.0, 0.2])
def test_torch_renderer_of_several_volumes_matches_each_alone(fill):
    """Volumes of different shapes and affines in one renderer (one grid_sample call) give each volume's own slices."""
    pytest.importorskip("torch")
    affine = np.array([[0.0, -1.2, 0, 5], [1.2, 0, 0, -3], [0, 0, 1.5, 2], [0, 0, 0, 1]])
    vols = [random_volume(seed=5), random_volume(shape=(9, 14, 11), margin=0, seed=3, affine=affine),
            random_volume(shape=(20, 7, 12), seed=8)]
    rng = np.random.default_rng(0)
    index = rng.integers(0, 3, 40)
    index[:3] = [2, 2, 0]  # uneven counts per volume
    poses = [random_poses(v, 40, spread=0.3 * max(v.shape), fov=1.4 * max(v.shape), seed=i) for i, v in enumerate(vols)]
    centers, rotations, fovs = (np.stack([poses[v][a][i] for i, v in enumerate(index)]) for a in range(3))
    got = TorchRenderer(vols).render(centers, rotations, fovs, (17, 23), fill=fill, volume_index=index).numpy()
    for v, vol in enumerate(vols):
        sel = index == v
        alone = TorchRenderer(vol).render(centers[sel], rotations[sel], fovs[sel], (17, 23), fill=fill).numpy()
        np.testing.assert_allclose(got[sel], alone, atol=1e-5)
        assert (alone != np.float32(fill)).mean() > 0.02  # slices through each volume, not only padding
    with pytest.raises(ValueError, match="volume_index"):
        TorchRenderer(vols).render(centers, rotations, fovs, (8, 8))
    with pytest.raises(ValueError, match="volume_index"):
        TorchRenderer(vols).render(centers, rotations, fovs, (8, 8), volume_index=np.full(40, 3))
