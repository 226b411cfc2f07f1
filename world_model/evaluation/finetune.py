"""End-to-end training: label efficiency (fine-tuning with N labels) and the supervised reference.

* **Fine-tuning**: a copy of an encoder (its differentiable ``features``) with one linear head per
  single-frame task, trained jointly on the first N slices of a fixed permutation of probe-train
  (the same N slices for every encoder), N in ``FinetuneConfig.n_labels``.  The same architecture
  from random initialisation gets the same N, steps and learning rate, so the difference is what
  pretraining contributed.
* **Supervised reference**: :func:`reference_backbone` -- :class:`ReferenceCNN` (``cnn``, a small
  ResNet-style CNN) or a world-model size's slice encoder (:class:`SliceEncoder`, e.g. ``capable``,
  the ResNet-18 one) -- trained from scratch on all probe-train labels: what the labels teach when
  there are plenty of them, so a task whose reference does not clearly beat the mean baseline is
  not learnable from a slice and is left out of the verdict.

Losses: MSE on standardised regression targets, cross-entropy, BCE, summed (AdamW); the state
with the lowest probe-val loss (checked every ``eval_every`` steps) is scored on probe-test.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..config import MODEL_SIZES
from ..tokenizer import make_tokenizer, to_unit
from .data import ProbeSet
from .encoders import device_of
from .probes import FRAME_TASKS, PROBE_TASKS, TaskTargets, fit_multitask, predict_multitask

__all__ = ["FinetuneConfig", "ReferenceCNN", "SliceEncoder", "reference_backbone", "REFERENCE_ARCHS",
           "run_end_to_end", "label_order"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Budgets of end-to-end training (the same for every encoder).

    n_labels : probe-train slices for label efficiency (each <= the probe-train size).
    steps, lr, batch_size, eval_every : fine-tuning (pretrained and random init alike).
    reference_steps, reference_lr : the supervised reference on all probe-train labels.
    label_seed : the permutation of probe-train whose first N slices are labelled.
    """

    n_labels: tuple[int, ...] = (256, 2048, 16384)
    steps: int = 600
    lr: float = 1e-3
    batch_size: int = 64
    eval_every: int = 150
    reference_steps: int = 2000
    reference_lr: float = 2e-3
    label_seed: int = 0

    def __post_init__(self):
        if not self.n_labels or min(self.n_labels) < 1:
            raise ValueError(f"FinetuneConfig.n_labels must be positive counts, got {self.n_labels}")
        for name in ("steps", "batch_size", "eval_every", "reference_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"FinetuneConfig.{name} must be >= 1, got {getattr(self, name)}")



class ReferenceCNN(nn.Module):
    """ResNet-style CNN for the supervised reference: a stride-2 stem and three stride-2 residual
    stages (16-32-64-128 channels by default; BatchNorm, ReLU).  ``spatial_features`` -> (B, 8*width,
    H/16, W/16); ``features`` that map flattened (where a slice lies in the view is what pose is
    about, so no global pooling)."""

    def __init__(self, width: int = 16):
        super().__init__()

        def block(cin, cout):
            return nn.ModuleDict({
                "main": nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)),
                "skip": nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout)),
            })

        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList([block(width, 2 * width), block(2 * width, 4 * width), block(4 * width, 8 * width)])

    def spatial_features(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.stem(frames.float()[:, None] / 255.0 - 0.5)
        for b in self.blocks:
            x = torch.relu(b["main"](x) + b["skip"](x))
        return x

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.spatial_features(frames).flatten(1)


class SliceEncoder(nn.Module):
    """A world-model size's slice encoder alone (its tokenizer's encoder: no latent projection, no
    decoder) from random init; ``features`` pools the hidden map to 4x4 like the world models'
    ``features``, so trained supervised it is the ceiling of that feature path."""

    def __init__(self, model):
        super().__init__()
        self.enc = make_tokenizer(model.arch, model.width, model.latent).enc

    def spatial_features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.enc(to_unit(frames) - 0.5)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(self.spatial_features(frames), 4).flatten(1)


REFERENCE_ARCHS = ("cnn",) + tuple(MODEL_SIZES)


def reference_backbone(arch: str = "cnn") -> nn.Module:
    """The supervised reference's network from random init: ``cnn`` (:class:`ReferenceCNN`) or a
    world-model size (``tiny`` ... ``capable``): that size's :class:`SliceEncoder`."""
    if arch == "cnn":
        return ReferenceCNN()
    if arch not in MODEL_SIZES:
        raise ValueError(f"reference arch must be one of {REFERENCE_ARCHS}, got {arch!r}")
    return SliceEncoder(MODEL_SIZES[arch])


class _WithHeads(nn.Module):
    def __init__(self, backbone: nn.Module, n_out: dict[str, int], size: tuple[int, int]):
        super().__init__()
        self.backbone = backbone
        with torch.no_grad():
            was = backbone.training
            d = backbone.eval().features(torch.zeros(2, *size, dtype=torch.uint8, device=device_of(backbone))).shape[1]
            backbone.train(was)
        self.heads = nn.ModuleDict({k: nn.Linear(d, v) for k, v in n_out.items()})

    def forward(self, frames):
        f = self.backbone.features(frames)
        return {k: h(f) for k, h in self.heads.items()}


def label_order(n: int, seed: int) -> np.ndarray:
    """The fixed permutation of probe-train slices whose first N are labelled."""
    return np.random.default_rng(seed).permutation(n)


def run_end_to_end(backbone: nn.Module, sets: dict[str, ProbeSet], n_labels: int | None, steps: int, lr: float,
                   cfg: FinetuneConfig, seed: int, device="cpu", tasks=FRAME_TASKS) -> tuple[dict, dict]:
    """Train a copy of ``backbone`` with a head per task on ``n_labels`` probe-train slices (None:
    all), in the order of :func:`label_order`.  Returns ({task: metrics on probe-test}, info)."""
    n = len(sets["train"]) if n_labels is None else int(n_labels)
    if not 1 <= n <= len(sets["train"]):
        raise ValueError(f"n_labels={n_labels} must be between 1 and the probe-train size {len(sets['train'])}")
    torch.manual_seed(seed)
    order = label_order(len(sets["train"]), cfg.label_seed)[:n]
    train = sets["train"].subset(order)
    targets = TaskTargets([PROBE_TASKS[t] for t in tasks], train)
    model = _WithHeads(copy.deepcopy(backbone).requires_grad_(True), targets.n_out, train.frames.shape[1:])
    frames = {"train": torch.from_numpy(train.frames), "val": torch.from_numpy(sets["val"].frames),
              "test": torch.from_numpy(sets["test"].frames)}
    inputs = lambda split, idx: frames[split][idx].to(device)  # noqa: E731
    model, info = fit_multitask(model, inputs, targets, train, sets["val"], steps, lr, cfg.batch_size,
                                cfg.eval_every, seed, device)
    out = predict_multitask(model, inputs, "test", len(sets["test"]))
    return targets.metrics(out, sets["test"]), {**info, "n_labels": n}
