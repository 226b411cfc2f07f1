"""Subjects: synthetic generation, exact transforms, splits, on-disk round trip, user data, env integration."""

import json
import pickle
import re

import gymnasium as gym
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import navgym  # noqa: F401  (registers MRINav-v0)
from navgym.anatomy import TEMPLATE_LANDMARKS, load_template, template_planes
from navgym.subjects import (
    SPLITS,
    Subject,
    SubjectError,
    SubjectPool,
    SyntheticConfig,
    load_subjects,
    read_landmarks,
    save_subject,
    split_of,
    synthetic_subject,
)
from navgym.subjects.cli import main as cli_main
from navgym.subjects.synthetic import synthetic_geometry

FAST = SyntheticConfig(spacing=2.0)  # coarse grid: same geometry code, ~8x fewer voxels


@pytest.fixture(scope="module")
def clean():
    """A 1 mm T1-like subject without bias/gamma/noise (for content checks)."""
    return synthetic_subject(3, SyntheticConfig(spacing=1.0, contrast="T1w", intensity=False))


@pytest.fixture(scope="module")
def noisy():
    return synthetic_subject(7, FAST)


def _sample(vol, world, order=1):
    ijk = vol.world_to_voxel(world)
    src = vol.data if order == 1 else vol.labels
    return ndimage.map_coordinates(src, ijk.T, order=order, mode="constant")


def _brain_points(n, seed=0):
    tpl = load_template()
    ijk = np.argwhere(tpl.labels > 0)
    pick = ijk[np.random.default_rng(seed).choice(len(ijk), n, replace=False)]
    return pick @ tpl.affine[:3, :3].T + tpl.affine[:3, 3]


# --- transforms -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_round_trip_template_subject_template(seed):
    warp, *_ = synthetic_geometry(seed)
    pts = np.concatenate([_brain_points(2000, seed), np.stack(list(TEMPLATE_LANDMARKS.values()))])
    back = warp(warp.inverse(pts))
    assert np.abs(back - pts).max() < 0.5
    assert np.abs(back - pts).max() < 1e-6  # in fact the fixed point converges far below 0.5 mm
    # and the warp is really non-linear: not explained by its affine part
    assert np.abs(warp.displacement(warp.inverse(pts))).max() > 0.5


def test_landmarks_and_planes_transported_exactly(clean):
    warp = clean.to_template
    names = list(TEMPLATE_LANDMARKS)
    lm = np.stack([clean.landmarks[n] for n in names])
    assert np.abs(warp(lm) - np.stack([TEMPLATE_LANDMARKS[n] for n in names])).max() < 0.5
    assert clean.volume.contains(lm).all()
    # template points on each plane near its point land within 0.5 mm of the subject's (tangent) plane
    for name, plane in template_planes().items():
        basis = np.linalg.svd(plane.normal[None])[2][1:]
        offsets = np.random.default_rng(0).uniform(-8, 8, (50, 2)) @ basis
        on = warp.inverse(plane.point + offsets)
        assert clean.planes[name].distance(on).max() < 0.5, name


def test_image_content_at_transported_landmarks_matches_template(clean):
    tpl = load_template()
    warp = clean.to_template
    offsets = np.stack(np.meshgrid(*[np.arange(-6, 7, 2.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for name, y in TEMPLATE_LANDMARKS.items():
        patch_t = y + offsets
        patch_s = warp.inverse(patch_t)
        a, b = _sample(tpl, patch_t), _sample(clean.volume, patch_s)
        assert np.corrcoef(a, b)[0, 1] > 0.9, name
        # labels: the subject voxel nearest the landmark carries the template label found at its image
        vox = np.rint(clean.volume.world_to_voxel(clean.landmarks[name]))
        world = clean.volume.affine[:3, :3] @ vox + clean.volume.affine[:3, 3]
        lab_s = clean.volume.labels[tuple(vox.astype(int))]
        assert _sample(tpl, warp(world[None]), order=0)[0] == lab_s, name
        around = _sample(tpl, y + offsets[np.abs(offsets).max(1) <= 2], order=0)
        if np.all(around == around[0]):  # landmark deep inside one tissue: same label as the template's
            assert lab_s == around[0], name
    # over the whole brain: labels agree where the template's are not at a boundary
    pts = _brain_points(3000, 1)
    agree = _sample(tpl, pts, order=0) == _sample(clean.volume, warp.inverse(pts), order=0)
    assert agree.mean() > 0.9


def test_poses_map_to_template(clean):
    pose = clean.planes["mid_sagittal"].pose(150.0)
    c, r, f = clean.poses_to_template(pose.center[None], pose.rotation[None], [pose.fov])
    tpl_plane = template_planes()["mid_sagittal"]
    assert tpl_plane.distance(c[0]) < 0.5
    assert tpl_plane.angle_deg(r[0, :, 2]) < 2.0
    assert np.allclose(r[0].T @ r[0], np.eye(3), atol=1e-9)


# --- generation -----------------------------------------------------------------------------------
def test_deterministic_by_seed(noisy):
    again = synthetic_subject(7, FAST)
    assert np.array_equal(again.volume.data, noisy.volume.data)
    assert np.array_equal(again.volume.labels, noisy.volume.labels)
    assert np.array_equal(again.volume.affine, noisy.volume.affine)
    for k in noisy.landmarks:
        assert np.array_equal(again.landmarks[k], noisy.landmarks[k])
    other = synthetic_subject(8, FAST)
    assert other.volume.shape != noisy.volume.shape or not np.array_equal(other.volume.data, noisy.volume.data)


def test_subject_is_well_formed(noisy):
    v = noisy.volume
    assert v.data.dtype == np.float32 and 0 <= v.data.min() and v.data.max() <= 1
    assert set(np.unique(v.labels)) == {0, 1, 2, 3}
    assert len(np.unique(v.data)) <= 256  # quantised to 8 bits, as saved
    assert noisy.subject_id == "synth000007" and noisy.meta["seed"] == 7


def test_acquisition_variation_present():
    kinds = set()
    contrasts = set()
    for seed in range(40):
        warp, shape, contrast, _ = synthetic_geometry(seed)
        aff = warp.grid_affine
        cols = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
        spacing = np.linalg.norm(aff[:3, :3], axis=0)
        codes = "".join(nib.orientations.aff2axcodes(aff))
        kinds.add("non-RAS" if codes != "RAS" else "RAS")
        kinds.add("oblique" if np.abs(cols).max(0).min() < 0.999 else "axis-aligned")
        kinds.add("anisotropic" if spacing.max() / spacing.min() > 1.2 else "isotropic")
        contrasts.add(contrast)
        assert np.allclose(aff, aff.astype(np.float32))  # survives NIfTI's float32 sform exactly
        vox = warp.inverse(np.stack(list(TEMPLATE_LANDMARKS.values()))) @ np.linalg.inv(aff)[:3, :3].T
        vox += np.linalg.inv(aff)[:3, 3]
        assert np.all(vox >= 0) and np.all(vox <= np.array(shape) - 1), seed  # landmarks survive cropping
    assert kinds == {"RAS", "non-RAS", "oblique", "axis-aligned", "anisotropic", "isotropic"}
    assert contrasts == {"T1w", "T2w", "PDw"}


def test_contrasts_order_tissues():
    means = {}
    for contrast in ("T1w", "T2w", "PDw"):
        s = synthetic_subject(11, SyntheticConfig(spacing=2.0, contrast=contrast, intensity=False))
        lab = s.volume.labels
        means[contrast] = [float(s.volume.data[lab == k].mean()) for k in (1, 2, 3)]  # CSF, GM, WM
    csf, gm, wm = means["T1w"]
    assert wm > gm > csf
    csf, gm, wm = means["T2w"]
    assert csf > gm > wm
    csf, gm, wm = means["PDw"]
    assert csf > wm and gm > wm


# --- pool and splits ------------------------------------------------------------------------------
def test_splits_deterministic_disjoint_and_complete():
    full = load_subjects("synthetic:300")  # lazy: nothing is generated here
    parts = {s: load_subjects("synthetic:300", split=s).ids for s in SPLITS}
    assert sum(len(p) for p in parts.values()) == 300
    assert set().union(*map(set, parts.values())) == set(full.ids)
    assert not set(parts["train"]) & set(parts["test"]) and not set(parts["val"]) & set(parts["test"])
    assert 0.6 < len(parts["train"]) / 300 < 0.8 and 0.08 < len(parts["test"]) / 300 < 0.22
    assert load_subjects("synthetic:300:test").ids == parts["test"]
    # a subject's split depends only on its id: growing the dataset moves nobody
    assert set(parts["test"]) >= set(load_subjects("synthetic:100", split="test").ids)
    assert all(split_of(i) == "test" for i in parts["test"])
    assert full._cache == {}
    assert load_subjects("template", split="train").ids == ["MNI152_2009"]  # the template is in every split


def test_pool_is_lazy_and_lru_bounded():
    calls = []

    def loader(k):
        def load():
            calls.append(k)
            return Subject(f"s{k}", load_template())

        return load

    pool = SubjectPool([f"s{k}" for k in range(5)], [loader(k) for k in range(5)], cache_size=2)
    assert calls == [] and len(pool) == 5
    pool[0], pool[1], pool[0], pool[2]
    assert calls == [0, 1, 2] and pool.cached() == ["s0", "s2"]
    pool[1]
    assert calls == [0, 1, 2, 1] and pool[-1].subject_id == "s4"
    with pytest.raises(IndexError):
        pool[5]


def test_pool_pickles_without_its_cache():
    pool = load_subjects("synthetic:3", cache_size=2, synthetic=FAST)
    first = pool[0]
    assert pool.cached() == ["synth000000"]
    copy = pickle.loads(pickle.dumps(pool))
    assert copy.cached() == [] and copy.ids == pool.ids and copy.cache_size == 2
    assert np.array_equal(copy[0].volume.data, first.volume.data)


def test_bad_specs():
    with pytest.raises(ValueError, match="synthetic"):
        load_subjects("synthetic:abc")
    with pytest.raises(ValueError, match="split"):
        load_subjects("synthetic:10", split="holdout")
    with pytest.raises(SubjectError, match="no 'test' subjects"):
        load_subjects("synthetic:1", split="test") if split_of("synth000000") != "test" else load_subjects(
            "synthetic:1", split="train"
        )
    with pytest.raises(SubjectError, match="not a folder"):
        load_subjects("/nonexistent/folder")
    with pytest.raises(ValueError, match="cache_size"):
        load_subjects("synthetic:3", cache_size=0)


# --- disk -----------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path, noisy):
    save_subject(noisy, tmp_path, split=split_of(noisy.subject_id))
    files = sorted(p.name for p in (tmp_path / "sub-synth000007" / "anat").iterdir())
    contrast = noisy.meta["contrast"]
    assert files == sorted([f"sub-synth000007_{contrast}.json", f"sub-synth000007_{contrast}.nii.gz",
                            "sub-synth000007_dseg.nii.gz"])
    back = load_subjects(tmp_path)[0]
    assert back.subject_id == noisy.subject_id and back.meta["seed"] == 7
    assert np.array_equal(back.volume.data, noisy.volume.data)
    assert np.array_equal(back.volume.labels, noisy.volume.labels)
    assert np.array_equal(back.volume.affine, noisy.volume.affine)
    assert all(np.array_equal(back.landmarks[k], noisy.landmarks[k]) for k in noisy.landmarks)
    assert all(np.allclose(back.planes[k].normal, noisy.planes[k].normal, rtol=0, atol=1e-12) for k in noisy.planes)
    pts = np.random.default_rng(0).normal(0, 60, (200, 3))
    assert np.array_equal(back.to_template(pts), noisy.to_template(pts))
    # a tampered grid is caught
    side = next((tmp_path / "sub-synth000007" / "anat").glob("*.json"))
    doc = json.loads(side.read_text())
    doc["navgym"]["grid_affine"][0][3] += 5.0
    side.write_text(json.dumps(doc))
    with pytest.raises(SubjectError, match="mismatched grid"):
        load_subjects(tmp_path)[0]


def test_cli_writes_dataset_and_resumes(tmp_path, capsys):
    cli_main(["--n", "2", "--seed", "40", "--out", str(tmp_path), "--spacing", "3"])
    assert "median_cpu_s_per_subject" in capsys.readouterr().out
    rows = (tmp_path / "participants.tsv").read_text().split("\n")
    assert rows[0] == "participant_id\tcontrast\tsplit" and rows[1].startswith("sub-synth000040\t")
    pool = load_subjects(tmp_path)
    assert pool.ids == ["synth000040", "synth000041"]
    assert np.array_equal(pool[1].volume.data, synthetic_subject(41, SyntheticConfig(spacing=3)).volume.data)
    cli_main(["--n", "2", "--seed", "40", "--out", str(tmp_path), "--spacing", "3"])
    assert "generated" not in capsys.readouterr().out  # everything already there
    assert not list(tmp_path.rglob(".*"))  # no temporary files left
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli_main(["--n", "3", "--seed", "40", "--out", str(tmp_path)])  # native spacing into a 3 mm folder
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and re.search(r"error: .*other settings \(sub-synth000040: spacing: 3\.0 -> None\)", err[-1])
    assert sorted(tmp_path.rglob("*")) == before


# --- user data ------------------------------------------------------------------------------------
def _user_image(affine=None, shape=(40, 48, 44)):
    data = np.zeros(shape, np.int16)
    data[8:-8, 8:-8, 8:-8] = 100
    data[15:-15, 15:-15, 15:-15] = 300
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    affine[:3, 3] = -np.array(shape) + 0.0
    return nib.Nifti1Image(data, affine)


def test_user_folder_with_labels_csv_and_slicer(tmp_path):
    img = _user_image()
    nib.save(img, tmp_path / "alice.nii.gz")
    nib.save(nib.Nifti1Image((np.asarray(img.dataobj) > 0).astype(np.uint8), img.affine), tmp_path / "alice_dseg.nii.gz")
    (tmp_path / "alice_landmarks.csv").write_text("name,x,y,z\nAC,1,2,3\nPC,1,-20,4\n")
    nib.save(_user_image(), tmp_path / "bob.nii")
    slicer = {"markups": [{"type": "Fiducial", "coordinateSystem": "LPS",
                           "controlPoints": [{"label": "AC", "position": [-1.0, -2.0, 3.0]},
                                             {"label": "PC", "position": [-1.0, 20.0, 4.0]}]}]}
    (tmp_path / "bob.mrk.json").write_text(json.dumps(slicer))
    pool = load_subjects(tmp_path)
    assert pool.ids == ["alice", "bob"]
    alice, bob = pool[0], pool[1]
    assert alice.volume.labels is not None and alice.volume.labels.max() == 1
    assert np.allclose(alice.landmarks["AC"], [1, 2, 3])
    assert np.allclose(bob.landmarks["AC"], [1, 2, 3]) and np.allclose(bob.landmarks["PC"], [1, -20, 4])  # LPS -> RAS
    assert set(alice.planes) == {"mid_sagittal", "acpc_axial", "coronal_ac"}
    assert np.allclose(alice.planes["coronal_ac"].normal, [0, 1, -1 / 22] / np.linalg.norm([0, 1, -1 / 22]))
    assert alice.to_template is None


def test_bids_folder_and_root_landmark_table(tmp_path):
    for sid in ("01", "02"):
        anat = tmp_path / f"sub-{sid}" / "ses-1" / "anat"
        anat.mkdir(parents=True)
        nib.save(_user_image(), anat / f"sub-{sid}_ses-1_T1w.nii.gz")
    (tmp_path / "landmarks.csv").write_text("subject,name,x,y,z\n02,AC,0,0,0\n")
    with pytest.raises(SubjectError, match=r"1 scans have landmarks but 1 do not \(01\)"):
        load_subjects(tmp_path)  # at construction, not at the reset that draws sub-01
    (tmp_path / "landmarks.csv").write_text("subject,name,x,y,z\n02,AC,0,0,0\n01,AC,1,0,0\n")
    pool = load_subjects(tmp_path)
    assert pool.ids == ["01", "02"]
    assert np.allclose(pool[0].landmarks["AC"], [1, 0, 0]) and np.allclose(pool[1].landmarks["AC"], 0)


def test_landmark_sidecars_for_a_list_of_files_and_partial_folders(tmp_path):
    for name in ("a", "b", "c"):
        nib.save(_user_image(), tmp_path / f"{name}.nii.gz")
    (tmp_path / "a_landmarks.csv").write_text("name,x,y,z\nAC,0,0,0\nPC,0,-10,0\n")
    pool = load_subjects([tmp_path / "a.nii.gz"])  # a list of files reads the sidecars beside each image
    assert set(pool[0].landmarks) == {"AC", "PC"} and "mid_sagittal" in pool[0].planes
    for spec in (tmp_path, [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", tmp_path / "c.nii.gz"]):
        with pytest.raises(SubjectError, match=r"but 2 do not \(b, c\)"):
            load_subjects(spec)
    assert load_subjects([tmp_path / "b.nii.gz", tmp_path / "c.nii.gz"]).ids == ["b", "c"]  # none: fine


def test_user_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubjectError, match="no NIfTI"):
        load_subjects(tmp_path / "empty")
    bad = tmp_path / "grid"
    bad.mkdir()
    nib.save(_user_image(), bad / "x.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), bad / "x_dseg.nii.gz")
    with pytest.raises(SubjectError, match="x: .*label map"):
        load_subjects(bad)[0]
    out = tmp_path / "outside"
    out.mkdir()
    nib.save(_user_image(), out / "y.nii.gz")
    (out / "y_landmarks.csv").write_text("name,x,y,z\nAC,500,0,0\n")
    with pytest.raises(SubjectError, match=r"landmarks \['AC'\] lie outside"):
        load_subjects(out)[0]
    (out / "y_landmarks.csv").write_text("label,x,y,z\nAC,0,0,0\n")
    with pytest.raises(SubjectError, match="needs columns"):
        load_subjects(out)[0]
    with pytest.raises(SubjectError, match="not found"):
        read_landmarks(tmp_path / "missing.csv")
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    with pytest.raises(SubjectError, match="sub-01: no anat"):
        load_subjects(bids)
    with pytest.raises(SubjectError, match="not found"):
        load_subjects([tmp_path / "nope.nii.gz"])


# --- env ------------------------------------------------------------------------------------------
def test_gym_make_with_synthetic_subjects():
    env = gym.make("MRINav-v0", subjects="synthetic:3", task="landmark", task_kwargs={"landmark": "PC"})
    pool = env.unwrapped.nav.subjects
    assert isinstance(pool, SubjectPool) and len(pool) == 3
    seen = set()
    for seed in range(6):
        _, info = env.reset(seed=seed)
        seen.add(info["subject_id"])
        subj = env.unwrapped.subject
        assert np.allclose(env.unwrapped.nav.targets[0], subj.landmarks["PC"])
    obs, reward, *_ = env.step(env.action_space.sample())
    assert obs.shape == (1, 128, 128) and np.isfinite(reward)
    assert seen <= set(pool.ids) and len(seen) >= 2
    assert len(pool.cached()) <= pool.cache_size
    env.close()


def test_env_accepts_template_list_and_split_spec(tmp_path):
    env = gym.make("MRINav-v0", subjects=None)
    assert env.unwrapped.nav.subjects[0].subject_id == "MNI152_2009"
    nib.save(_user_image(), tmp_path / "u.nii.gz")
    env = gym.make("MRINav-v0", subjects=[str(tmp_path / "u.nii.gz")])
    _, info = env.reset(seed=0)
    assert info["subject_id"] == "u"
    env = gym.make("MRINav-v0", subjects=str(tmp_path))
    assert env.unwrapped.nav.subjects.ids == ["u"]
    env = gym.make("MRINav-v0", subjects="synthetic:20:val")
    assert all(split_of(i) == "val" for i in env.unwrapped.nav.subjects.ids)
