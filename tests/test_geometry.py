"""Geometry properties: orthonormality, frame conventions, action semantics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from navgym import Plane, SlicePose
from navgym.geometry import (
    CANONICAL_VIEWS,
    apply_actions,
    pack_poses,
    pixel_to_world_affines,
    plane_angle_deg,
    plane_distance,
    random_view_rotations,
    unpack_poses,
)

finite = st.floats(-1e3, 1e3, allow_nan=False)
actions = st.lists(st.floats(-10, 10, allow_nan=False), min_size=7, max_size=7)
seeds = st.integers(0, 2**31 - 1)


def random_pose(seed):
    rng = np.random.default_rng(seed)
    return SlicePose(rng.uniform(-50, 50, 3), Rotation.random(random_state=seed).as_matrix(), rng.uniform(20, 250))


@given(seeds, actions)
def test_action_keeps_rotation_orthonormal_and_right_handed(seed, action):
    p = random_pose(seed).moved(np.array(action) * [1, 1, 1, 30, 30, 30, 0.1])
    assert np.allclose(p.rotation.T @ p.rotation, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(p.rotation), 1.0)
    assert np.allclose(np.cross(p.u, p.v), p.normal)


def test_many_steps_stay_orthonormal():
    rng = np.random.default_rng(0)
    n = 256
    centers, fovs = np.zeros((n, 3)), np.full(n, 100.0)
    rots = np.tile(np.eye(3), (n, 1, 1))
    for _ in range(4000):  # 1M single-pose updates in total
        a = rng.uniform(-1, 1, (n, 7)) * [0, 0, 0, 7, 7, 7, 0]
        centers, rots, fovs = apply_actions(centers, rots, fovs, a)
    err = np.abs(np.einsum("nji,njk->nik", rots, rots) - np.eye(3)).max()
    assert err < 1e-12


@given(seeds, st.floats(-20, 20), st.floats(-20, 20), st.floats(-20, 20))
def test_translation_moves_along_own_frame(seed, du, dv, dn):
    p = random_pose(seed)
    q = p.moved([du, dv, dn, 0, 0, 0, 0])
    assert np.allclose(q.center - p.center, du * p.u + dv * p.v + dn * p.normal)
    assert np.allclose(q.rotation, p.rotation)


@given(seeds, st.floats(-45, 45))
def test_rotation_about_normal_keeps_normal(seed, deg):
    p = random_pose(seed)
    q = p.moved([0, 0, 0, 0, 0, deg, 0])
    assert np.allclose(q.normal, p.normal, atol=1e-12)
    # right-handed: a positive rotation about n turns u towards v by exactly deg
    assert np.isclose(np.degrees(np.arctan2(q.u @ p.v, q.u @ p.u)), deg, atol=1e-9)


@given(seeds, st.floats(-45, 45))
def test_rotations_invert(seed, deg):
    p = random_pose(seed)
    for axis in range(3):
        a = np.zeros(7)
        a[3 + axis] = deg
        back = p.moved(a).moved(-a)
        assert np.allclose(back.rotation, p.rotation, atol=1e-10)


@given(seeds, st.floats(-1, 1))
def test_zoom_is_log_scale(seed, z):
    p = random_pose(seed)
    q = p.moved([0, 0, 0, 0, 0, 0, z])
    assert np.isclose(q.fov, p.fov * np.exp(-z))
    assert np.allclose(q.center, p.center)


def test_pixel_grid_conventions():
    p = SlicePose.canonical("axial", center=(10.0, 20.0, 30.0), fov=8.0)
    g = p.grid((4, 8))  # 1 mm pixels
    assert np.allclose(g.mean(axis=(0, 1)), p.center)
    assert np.allclose(g[0, 1] - g[0, 0], p.u * 1.0)  # columns go +u
    assert np.allclose(g[1, 0] - g[0, 0], -p.v * 1.0)  # rows go -v (row 0 is the +v edge)
    assert g[0, 0, 0] < p.center[0] and g[0, 0, 1] > p.center[1]


def test_canonical_views_are_rotations():
    for r in CANONICAL_VIEWS.values():
        assert np.allclose(r.T @ r, np.eye(3)) and np.isclose(np.linalg.det(r), 1)
    assert np.allclose(SlicePose.canonical("sagittal").normal, [1, 0, 0])
    assert np.allclose(SlicePose.canonical("coronal").v, [0, 0, 1])


@given(seeds)
@settings(max_examples=20)
def test_quaternion_round_trip(seed):
    p = random_pose(seed)
    q = SlicePose.from_quaternion(p.center, p.quaternion, p.fov)
    assert np.allclose(q.rotation, p.rotation, atol=1e-12)
    assert np.allclose(SlicePose.from_array(p.as_array()).rotation, p.rotation)


def test_batched_affines_match_single():
    poses = [random_pose(s) for s in range(5)]
    batch = pixel_to_world_affines(
        np.stack([p.center for p in poses]), np.stack([p.rotation for p in poses]), np.array([p.fov for p in poses]), (6, 9)
    )
    for p, a in zip(poses, batch):
        assert np.allclose(p.pixel_to_world((6, 9)), a)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(center=(0, 0), rotation=np.eye(3), fov=1),
        dict(center=(0, np.nan, 0), rotation=np.eye(3), fov=1),
        dict(center=(0, 0, 0), rotation=np.diag([1, 1, -1]), fov=1),
        dict(center=(0, 0, 0), rotation=2 * np.eye(3), fov=1),
        dict(center=(0, 0, 0), rotation=np.eye(3), fov=0),
        dict(center=(0, 0, 0), rotation=np.eye(3), fov=np.inf),
    ],
)
def test_bad_poses_raise(kwargs):
    with pytest.raises(ValueError):
        SlicePose(**kwargs)


def test_bad_actions_raise():
    c, r, f = np.zeros((2, 3)), np.tile(np.eye(3), (2, 1, 1)), np.ones(2)
    with pytest.raises(ValueError, match="shape"):
        apply_actions(c, r, f, np.zeros((2, 6)))
    with pytest.raises(ValueError, match="NaN"):
        apply_actions(c, r, f, np.array([[0, 0, 0, 0, 0, 0, np.nan]] * 2))


def test_world_to_pixel_inverts_the_pixel_grid():
    """Pixel centres project to their (row, col); a point off the plane projects along the normal."""
    pose = SlicePose([3.0, -2.0, 5.0], Rotation.random(random_state=4).as_matrix(), 37.0)
    grid = pose.grid((6, 9))
    rc = np.stack(np.meshgrid(np.arange(6), np.arange(9), indexing="ij"), -1)
    np.testing.assert_allclose(pose.world_to_pixel(grid + 4.2 * pose.normal, (6, 9)), rc, atol=1e-9)
    assert pose.world_to_pixel(pose.center, (6, 9)).tolist() == [2.5, 4.0]
    np.testing.assert_allclose(pose.world_to_pixel(pose.center + pose.v * 37 / 9, (6, 9)), [1.5, 4.0])  # +v is up


def test_plane_errors_and_pose():
    pl = Plane(point=(0, 0, 5), normal=(0, 0, 2))
    assert np.allclose(pl.normal, [0, 0, 1])
    assert np.isclose(pl.distance([1, 2, 8]), 3)
    assert np.isclose(pl.angle_deg([0, 0, -1]), 0)  # unoriented
    assert np.isclose(pl.angle_deg([1, 0, 0]), 90)
    pose = pl.pose(fov=50)
    assert np.isclose(pl.angle_deg(pose.normal), 0) and np.allclose(pose.center, pl.point)
    with pytest.raises(ValueError):
        Plane((0, 0, 0), (0, 0, 0))


def test_plane_distance_and_angle_batch_one_plane_per_point():
    rng = np.random.default_rng(3)
    points, normals = rng.normal(size=(5, 3)) * 20, Rotation.random(5, random_state=3).as_matrix()[:, :, 2]
    planes = [Plane(rng.normal(size=3) * 20, rng.normal(size=3)) for _ in range(5)]
    pp, pn = np.stack([p.point for p in planes]), np.stack([p.normal for p in planes])
    np.testing.assert_allclose(plane_distance(points, pp, pn), [p.distance(x) for p, x in zip(planes, points)])
    np.testing.assert_allclose(plane_angle_deg(normals, pn), [p.angle_deg(n) for p, n in zip(planes, normals)])
    np.testing.assert_allclose(plane_angle_deg(-normals, pn), plane_angle_deg(normals, pn))  # unoriented


def test_pack_poses_matches_slicepose_layout_and_round_trips():
    rng = np.random.default_rng(0)
    rot = Rotation.random(6, random_state=1).as_matrix().reshape(2, 3, 3, 3)
    centers, fovs = rng.normal(size=(2, 3, 3)) * 50, rng.uniform(10, 200, (2, 3))
    packed = pack_poses(centers, rot, fovs)
    assert packed.shape == (2, 3, 13)
    np.testing.assert_allclose(packed[1, 2], SlicePose(centers[1, 2], rot[1, 2], fovs[1, 2]).as_array(), atol=1e-12)  # SlicePose re-orthonormalises
    for got, want in zip(unpack_poses(packed), (centers, rot, fovs)):
        np.testing.assert_array_equal(got, want)


def test_random_view_rotations_stay_within_the_angle_of_a_canonical_view():
    rot = random_view_rotations(600, 30.0, np.random.default_rng(0))
    assert rot.shape == (600, 3, 3)
    assert np.allclose(np.einsum("nji,njk->nik", rot, rot), np.eye(3), atol=1e-12)
    views = np.stack(list(CANONICAL_VIEWS.values()))
    # angle of R V^T for the nearest view V, in degrees
    cos = (np.einsum("nij,vij->nv", rot, views) - 1) / 2
    nearest = np.degrees(np.arccos(np.clip(cos.max(1), -1, 1)))
    assert nearest.max() <= 30.0 + 1e-9 and nearest.max() > 25.0
    assert set(np.argmax(cos, 1)) == {0, 1, 2}  # every view is drawn
    for r in random_view_rotations(20, 0.0, np.random.default_rng(1)):  # no turn: exactly a canonical view
        assert np.abs(r - views).max((1, 2)).min() < 1e-12


def test_random_view_rotations_batch_of_one_is_the_navigator_start():
    from navgym.simulator import NavConfig, Navigator
    from navgym.subjects import template_subject
    from navgym.tasks import make_task

    nav = Navigator(1, [template_subject()], make_task("explore"), NavConfig(start_angle_deg=40.0))
    nav.reset(0, np.random.default_rng(7), subject_index=0)
    rng = np.random.default_rng(7)
    assert np.array_equal(nav.rotations[0], random_view_rotations(1, 40.0, rng)[0])
    with pytest.raises(ValueError, match="max_angle_deg"):
        random_view_rotations(3, -1.0, rng)


def test_draw_start_poses_is_the_start_distribution():
    from navgym.simulator import draw_start_poses

    rng = np.random.default_rng(2)
    centers, rotations = draw_start_poses(400, [10.0, -5.0, 3.0], 20.0, 30.0, rng)
    assert np.all(np.abs(centers - [10.0, -5.0, 3.0]) <= 20.0) and np.abs(centers - [10, -5, 3]).max() > 19
    views = np.stack(list(CANONICAL_VIEWS.values()))
    cos = (np.einsum("nij,vij->nv", rotations, views) - 1) / 2  # cos of the angle from each canonical view
    assert np.degrees(np.arccos(np.clip(cos.max(1), -1, 1))).max() <= 30.0 + 1e-6
    rng = np.random.default_rng(2)
    jitter = rng.uniform(-20.0, 20.0, (400, 3))  # all jitters, then the rotations
    np.testing.assert_array_equal(centers, np.array([10.0, -5.0, 3.0]) + jitter)
    np.testing.assert_array_equal(rotations, random_view_rotations(400, 30.0, rng))


def test_reset_many_is_bit_identical_to_resetting_one_by_one():
    from navgym.simulator import NavConfig, Navigator
    from navgym.subjects import template_subject
    from navgym.tasks import make_task

    subjects = [template_subject(), template_subject()]
    for task, given in (("explore", None), ("landmark", [1, 0, 0, 1, 1, 0, 1, 0])):
        one, many = (Navigator(8, subjects, make_task(task), NavConfig(start_angle_deg=35.0)) for _ in range(2))
        r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
        for i in range(8):
            one.reset(i, r1, None if given is None else given[i])
        many.reset_many(np.arange(8), r2, given)
        for name in ("centers", "rotations", "fovs", "targets", "error", "subject_index"):
            assert np.array_equal(getattr(one, name), getattr(many, name)), name
        assert r1.bit_generator.state == r2.bit_generator.state
        for i in range(8):  # each start is the documented draw: view, axis, angle (random_view_turns(1)), jitter
            rng = np.random.default_rng(3)
            for _ in range(i + 1):
                s = rng.integers(2) if given is None else None
                rot = random_view_rotations(1, 35.0, rng)[0]
                rng.uniform(-20, 20, 3)
                make_task(task).target_for(subjects[0], rng)
            assert np.array_equal(many.rotations[i], rot) and (given is not None or many.subject_index[i] == s)
    with pytest.raises(ValueError, match="distinct"):
        many.reset_many([0, 0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="subject_index has 1 entries"):
        many.reset_many([0, 1], np.random.default_rng(0), [0])
