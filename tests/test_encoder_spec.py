"""world_model.encoders.EncoderSpec (parse, load, describe), world_model.standardise, and the deprecated names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from world_model.encoders import EncoderSpec, PooledPixels, RandomCNN
from world_model.standardise import Standardiser, load_statistics, save_statistics, statistics


@pytest.mark.parametrize("text, fields, kind", [
    ("pixels", ("pixels", None, False), "pixels"),
    ("random-cnn", ("random-cnn", None, False), "random-cnn"),
    ("pooled_pixels", ("pooled_pixels", None, False), "pooled_pixels"),
    ("random", ("random", None, False), "untrained"),
    ("navwm:3", ("navwm:3", None, False), "untrained"),
    ("navwm:0=runs/wm/last.pt", ("runs/wm/last.pt", "navwm:0", False), "checkpoint"),
    ("navwm=runs/wm/navwm_s{seed}/last.pt", ("runs/wm/navwm_s{seed}/last.pt", "navwm", False), "checkpoint"),
    ("wm=ft:runs/x.pt", ("runs/x.pt", "wm", True), "checkpoint"),
    ("ft:random", ("random", None, True), "untrained"),
    ("px=pixels", ("pixels", "px", False), "pixels"),
    ("runs/lr=3e-4/last.pt", ("runs/lr=3e-4/last.pt", None, False), "checkpoint"),  # a path with '=' stays a path
])
def test_every_spec_form_parses_and_prints_back(text, fields, kind):
    spec = EncoderSpec.parse(text)
    assert (spec.source, spec.label, spec.finetune) == fields and spec.kind == kind
    assert str(spec) == text and EncoderSpec.parse(str(spec)) == spec


def test_untrained_specs_name_method_and_seed():
    assert (EncoderSpec.parse("navwm:3").method, EncoderSpec.parse("navwm:3").seed) == ("navwm", 3)
    assert (EncoderSpec.parse("tokenizer").method, EncoderSpec.parse("tokenizer").seed) == ("tokenizer", None)
    assert EncoderSpec.parse("nosuchmethod:1").kind == "checkpoint"  # not a method: a path that must exist


@pytest.mark.parametrize("text, match", [("", "non-empty"), ("wm=", "no encoder after the label"),
                                         ("ft:", "no encoder after ft:")])
def test_bad_specs_are_refused_by_name(text, match):
    with pytest.raises(ValueError, match=match):
        EncoderSpec.parse(text)


def test_load_each_kind():
    assert EncoderSpec.parse("pixels").load() is None
    frames = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    a, b, c = (EncoderSpec.parse("random-cnn").load(seed=s) for s in (1, 1, 2))
    assert isinstance(a, RandomCNN) and torch.equal(a.features(frames), b.features(frames))
    assert not torch.equal(a.features(frames), c.features(frames))
    assert a.spatial_features(frames).shape == (3, 128, 4, 4)
    pooled = EncoderSpec.parse("pooled_pixels").load()
    assert isinstance(pooled, PooledPixels) and pooled.features(frames).shape == (3, pooled.feature_dim)
    assert EncoderSpec.parse("random:3").load(seed=5).seed == 3  # the spec's own seed first
    assert EncoderSpec.parse("random").load(seed=5).seed == 5  # else the caller's
    with pytest.raises(FileNotFoundError, match="encoder nosuch/last.pt: no checkpoint"):
        EncoderSpec.parse("nosuch/last.pt").load()
    with pytest.raises(ValueError, match="encoder random: the world model takes 64-px slices, the frames are 32 px"):
        EncoderSpec.parse("random").load(size=32)


def test_describe():
    spec = EncoderSpec.parse("random_init")
    d = spec.describe(spec.load(seed=1))
    assert (d["spec"], d["kind"], d["method"], d["model_size"], d["pretrain_steps"]) == \
        ("random_init", "world model", "random_init", "tiny", None)
    assert d["params"] > 0 and d["feature_dim"] > 0
    assert EncoderSpec.parse("px=pixels").describe(None) == {"spec": "pixels", "kind": "pixels CNN"}
    assert EncoderSpec.parse("random-cnn").describe(RandomCNN()) == {"spec": "random-cnn", "kind": "random CNN"}


def test_the_evaluation_reads_specs():
    from world_model.evaluation.encoders import POOLED_PIXELS, load_encoder_entry
    from world_model.evaluation.report import _relabel

    e = load_encoder_entry("pooled_pixels")
    assert (e.method, e.seed, e.latent_model) == (POOLED_PIXELS, 0, None) and isinstance(e.encoder, PooledPixels)
    for text, match in (("pixels", "pooled_pixels is its pixel baseline"), ("ft:random_init:0", "frozen encoders"),
                        ("navwm:1=random_init:0", "a label is METHOD:SEED before a checkpoint path")):
        with pytest.raises(ValueError, match=match):
            load_encoder_entry(text)
    with pytest.warns(DeprecationWarning, match="pixels"):
        doc = _relabel({"rows": [{"method": "pixels"}, {"method": "navwm"}], "entries": [{"method": "pixels"}],
                        "timings": {}}, "results.json")
    assert [r["method"] for r in doc["rows"] + doc["entries"]] == [POOLED_PIXELS, "navwm", POOLED_PIXELS]


def test_standardisation_rule(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (50, 4))
    x[:, 2] = 7.0  # a constant dimension: only centred
    mean, std = statistics(x)
    tm, ts = statistics(torch.from_numpy(x))
    np.testing.assert_allclose(tm.numpy(), mean) and np.testing.assert_allclose(ts.numpy(), std)
    assert std[0, 2] == 1.0 and np.allclose(std[0, [0, 1, 3]], x[:, [0, 1, 3]].std(0))
    z = Standardiser(x)(x)
    assert np.allclose(z.mean(0), 0, atol=1e-6) and np.allclose(z[:, 2], 0)
    assert np.allclose(Standardiser(x).inverse(z), x, atol=1e-5)
    path = tmp_path / "s.npz"
    save_statistics(path, mean[0], std[0], encoder="random", sample=(16, 32))
    m, s, about = load_statistics(path, dim=4)
    assert np.array_equal(m, mean[0]) and np.array_equal(s, std[0]) and about == {"encoder": "random", "sample": [16, 32]}
    with pytest.raises(ValueError, match="s.npz: invalid"):
        load_statistics(path, dim=5)


def test_renamed_names_warn():
    import agents.extractors
    import world_model
    import world_model.evaluation.encoders as ev
    import world_model.evaluation.probes as probes
    from world_model.config import MODEL_SIZES

    with pytest.warns(DeprecationWarning, match="build_method"):
        world_model.build_model(MODEL_SIZES["tiny"], "tokenizer")
    with pytest.warns(DeprecationWarning, match="EncoderSpec"):
        assert isinstance(agents.extractors.load_frame_encoder("random-cnn"), RandomCNN)
    with pytest.warns(DeprecationWarning, match="PooledPixels"):
        assert ev.PixelEncoder is PooledPixels
    with pytest.warns(DeprecationWarning, match="Standardiser"):
        assert probes.Standardizer is Standardiser
