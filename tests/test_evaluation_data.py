"""Probe data: ground truth, determinism, the on-disk cache, held-out subjects, mirror symmetry."""

import numpy as np
import pytest

from navgym.render import render_slices
from navgym.subjects import split_of, template_subject
from world_model.evaluation import data as D

CFG = D.ProbeDataConfig(train_per_subject=120, eval_per_subject=60, size=(32, 32), train_clips_per_subject=10,
                        eval_clips_per_subject=5)


@pytest.fixture(scope="module")
def probe_data():
    return D.make_probe_data([template_subject()], CFG, seed=0, split="train")


def test_slices_and_clips_ground_truth(probe_data):
    ps, clips = probe_data.slices, probe_data.clips
    assert ps.frames.dtype == np.uint8 and ps.frames.shape == (120, 32, 32) and ps.frames.std() > 10
    np.testing.assert_allclose(np.linalg.norm(ps.normal_t, axis=1), 1, atol=1e-5)
    assert ps.landmark_mm.shape == (120, len(D.LANDMARK_NAMES)) and ps.landmark_hit.any(0).sum() >= 5
    assert set(ps.region) == {0, 1, 2, 3}
    # the template: template space = subject space, so the truth is the pose itself
    np.testing.assert_allclose(ps.center_t, ps.pose[:, :3], atol=1e-3)
    assert clips.frames.shape == (10, CFG.clip_frames, 32, 32) and clips.actions.shape == (10, CFG.clip_frames, 7)
    assert np.abs(clips.actions).max() <= 1 and clips.frames.std() > 10
    again = D.make_probe_data([template_subject()], CFG, seed=0, split="train")
    np.testing.assert_array_equal(again.slices.frames, ps.frames)  # deterministic in the seed
    np.testing.assert_array_equal(again.clips.frames, clips.frames)
    other = D.make_probe_data([template_subject()], CFG, seed=1, split="val")
    assert len(other.slices) == 60 and not np.array_equal(other.slices.frames[:60], ps.frames[:60])


def test_cache_round_trip(tmp_path, monkeypatch):
    splits = {s: [template_subject()] for s in D.PROBE_SPLITS}
    first = D.cached_probe_data(splits, CFG, 5, tmp_path)
    assert len(list(tmp_path.glob("probe_*.npz"))) == 3

    def fail(*a, **k):
        raise AssertionError("rendered again despite the cache")

    monkeypatch.setattr(D, "make_probe_data", fail)
    second = D.cached_probe_data(splits, CFG, 5, tmp_path)
    for s in D.PROBE_SPLITS:
        np.testing.assert_array_equal(first[s].slices.frames, second[s].slices.frames)
        np.testing.assert_array_equal(first[s].clips.actions, second[s].clips.actions)
        np.testing.assert_array_equal(first[s].slices.landmark_hit, second[s].slices.landmark_hit)
        assert second[s].subject_ids == ["MNI152_2009"]
    assert D.cache_key(["a"], CFG, 0, "train") != D.cache_key(["a"], CFG, 1, "train")


def test_probe_subjects_are_disjoint_and_never_pretrained():
    subj = D.probe_subjects("synthetic:240", n_train=24, n_val=4, n_test=6)
    ids = {s: subj[s].ids for s in D.PROBE_SPLITS}
    assert [len(ids[s]) for s in D.PROBE_SPLITS] == [24, 4, 6]
    assert not set(ids["train"]) & set(ids["val"]) and not set(ids["val"]) & set(ids["test"])
    assert all(split_of(i) != "train" for s in D.PROBE_SPLITS for i in ids[s])  # pretraining draws split "train" only
    with pytest.raises(ValueError, match="n_train"):
        D.probe_subjects("synthetic:40", n_train=24)


def test_mirror_pose_renders_the_same_slice_on_the_symmetric_template():
    """The pose D.mirror_pose describes shows (nearly) the same image on the template: the ambiguity
    the mirror-invariant metrics remove is real."""
    rng = np.random.default_rng(0)
    from navgym.geometry import random_view_rotations

    vol = template_subject().volume
    rot = random_view_rotations(6, 30, rng)
    centers = vol.brain_center + rng.uniform(-20, 20, (6, 3))
    centers[:, 0] = rng.uniform(8, 30, 6)  # clearly off the midline
    m = np.diag([-1.0, 1.0, 1.0])
    mc, mn = D.mirror_pose(centers, rot[:, :, 2])
    mrot = np.einsum("ij,njk,kl->nil", m, rot, np.diag([1.0, 1.0, -1.0]))  # columns Mu, Mv, -Mn
    np.testing.assert_allclose(mrot[:, :, 2], mn, atol=1e-12)
    np.testing.assert_allclose(np.cross(mrot[:, :, 0], mrot[:, :, 1]), mrot[:, :, 2], atol=1e-9)  # right-handed
    a = render_slices(vol, centers, rot, np.full(6, 180.0), (48, 48))
    b = render_slices(vol, mc, mrot, np.full(6, 180.0), (48, 48))
    far = render_slices(vol, centers + [[0, 30, 0]], rot, np.full(6, 180.0), (48, 48))
    corr = lambda x, y: np.corrcoef(x.ravel(), y.ravel())[0, 1]  # noqa: E731
    assert min(corr(a[i], b[i]) for i in range(6)) > 0.99
    assert max(corr(a[i], far[i]) for i in range(6)) < min(corr(a[i], b[i]) for i in range(6))
    np.testing.assert_allclose(D.mirror_pose(*D.mirror_pose(centers, rot[:, :, 2])), (centers, rot[:, :, 2]))
    assert all(D.LANDMARK_NAMES[j].rstrip("LR") == n.rstrip("LR") for n, j in zip(D.LANDMARK_NAMES, D.MIRRORED_LANDMARKS))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="train_per_subject"):
        D.ProbeDataConfig(train_per_subject=0)
    with pytest.raises(ValueError, match="eval_clips_per_subject"):
        D.ProbeDataConfig(eval_clips_per_subject=-1)
