"""The protocol can tell representations apart: a good encoder (pretrained supervised on pose) vs random
init with non-overlapping intervals; two copies of one encoder give identical numbers."""

import copy

import numpy as np
import pytest
import torch

from navgym.subjects import template_subject
from world_model.evaluation import stats
from world_model.evaluation.data import PROBE_SPLITS, ProbeDataConfig, make_probe_data
from world_model.evaluation.encoders import EncoderEntry, frozen_features
from world_model.evaluation.finetune import FinetuneConfig, ReferenceCNN
from world_model.evaluation.pipeline import EvalConfig, evaluate_encoders
from world_model.evaluation.planning import PlanConfig
from world_model.evaluation.probes import PROBE_TASKS, ProbeConfig, TaskTargets, fit_multitask, run_linear_probe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = ProbeDataConfig(train_per_subject=400, eval_per_subject=150, size=(32, 32), train_clips_per_subject=20,
                       eval_clips_per_subject=10)


@pytest.fixture(scope="module")
def data():
    return {k: make_probe_data([template_subject()], DATA, seed=10 + i, split=k) for i, k in enumerate(PROBE_SPLITS)}


@pytest.fixture(scope="module")
def pretraining():
    """Slices for the good encoder's supervised pretraining (its own seed; not the probe slices)."""
    cfg = ProbeDataConfig(train_per_subject=3000, size=(32, 32), train_clips_per_subject=0)
    return make_probe_data([template_subject()], cfg, seed=99).slices


def _pose_pretrained(pre, val, seed: int) -> ReferenceCNN:
    """A 'deliberately good' encoder: a small CNN pretrained supervised on the pose of 3,000 slices."""
    torch.manual_seed(seed)
    targets = TaskTargets([PROBE_TASKS["pose"]], pre)

    class WithHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = ReferenceCNN(8)
            self.head = torch.nn.Linear(self.backbone.features(torch.zeros(1, 32, 32)).shape[1], targets.n_out["pose"])

        def forward(self, x):
            return {"pose": self.head(self.backbone.features(x))}

    frames = {"train": torch.from_numpy(pre.frames), "val": torch.from_numpy(val.frames)}
    model, _ = fit_multitask(WithHead(), lambda s, i: frames[s][i], targets, pre, val, steps=400, lr=3e-3,
                             batch_size=64, eval_every=100, seed=seed)
    return model.backbone.eval()


def test_good_encoder_separates_from_random_init(data, pretraining):
    sets = {s: data[s].slices for s in PROBE_SPLITS}
    cfg = ProbeConfig(logistic_iters=30)
    rows = []
    for seed in range(3):
        torch.manual_seed(seed)
        for name, enc in (("good", _pose_pretrained(pretraining, sets["val"], seed)), ("random", ReferenceCNN(8).eval())):
            feats = frozen_features(enc, sets, spatial=False)
            m, _ = run_linear_probe("pose", feats, sets, cfg)
            rows.append(dict(method=name, seed=seed, task="pose", probe="linear", n_labels=None,
                             metric="center_err_mirror_mm", value=m["center_err_mirror_mm"]))
    (c,) = stats.compare_methods(stats.mean_ci_by_method(rows), "good", "random")
    assert c["advantage"] > 5 and not c["overlap"], c  # measured: ~14 mm vs ~28 mm


def test_two_copies_of_one_encoder_give_identical_numbers(data):
    cfg = EvalConfig(
        data=DATA, probe=ProbeConfig(logistic_iters=20, attentive_steps=20, eval_every=10),
        finetune_cfg=FinetuneConfig(n_labels=(32, 128), steps=10, eval_every=5, reference_steps=10),
        plan=PlanConfig(episodes=2, steps=2, population=8, elites=2, iterations=1, size=(32, 32)),
        reference_seeds=(0,), planning=False, random_twins=False, pixel_baseline=False,
        shuffled_control=False)
    torch.manual_seed(0)
    enc = ReferenceCNN(8).eval()
    entries = [EncoderEntry("copy_a", 0, enc), EncoderEntry("copy_b", 0, copy.deepcopy(enc))]
    rows = evaluate_encoders(entries, data, cfg)["rows"]
    by = {m: {(r["task"], r["probe"], r["n_labels"], r["metric"]): r["value"] for r in rows if r["method"] == m}
          for m in ("copy_a", "copy_b")}
    assert by["copy_a"] and by["copy_a"] == by["copy_b"]
    assert {k[1] for k in by["copy_a"]} >= {"linear", "attentive", "finetune"}
    assert any(k[0].startswith("clip_") for k in by["copy_a"])
    assert not any(np.isnan(v) for v in by["copy_a"].values() if v is not None)
