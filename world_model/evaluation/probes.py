"""Probe tasks, their metrics and the frozen-feature probes.

Protocol (identical for every encoder): inputs are standardised with probe-train statistics;
hyper-parameters (ridge alpha, logistic weight decay, the attentive probe's best step) are chosen
on the probe-val subjects; metrics are computed once on the probe-test subjects; everything is
deterministic given the seed.

Tasks (:data:`PROBE_TASKS`; metric, direction)
-------------------------------------------------
* ``pose``: template-space centre and normal of the slice.  ``center_err_mm``/``normal_err_deg``
  (lower; oriented normal 0..180) against the pose itself, and the mirror-invariant
  ``center_err_mirror_mm``/``normal_err_mirror_deg``: the smaller error to the pose and to its
  left-right mirror (:func:`world_model.evaluation.data.mirror_pose`), predicted by a second head
  trained on the mirror-canonical pose (the one with x >= 0).  A single slice of the symmetric
  template cannot tell its hemisphere, so the mirror-invariant error is the well-posed one.
* ``landmark_distance``: mm from the slice centre to each landmark -> ``mae_mm`` and
  ``mae_mirror_mm`` (per slice the smaller MAE to the distances and to those with left and right
  landmarks swapped).
* ``landmark_hit``: which landmarks the slice passes through -> ``auroc`` (mean over landmarks
  with both classes in the test set).
* ``region``: 4 classes (anterior/posterior x superior/inferior) -> ``accuracy``.
* ``inverse_dynamics``: the action between a slice and the next from [f(a), f(b) - f(a)] ->
  ``action_r2``, ``trans_err_mm``, ``rot_err_deg`` (frozen linear probe only).

Probes
------
* ``linear``: closed-form ridge (regression) or LBFGS logistic regression on ``features``.
* ``attentive``: on the full spatial map ``spatial_features`` (C, h, w): channels projected to 64,
  a learned position embedding, one learned query per task attending over the h*w positions
  (4 heads), a linear head per task; the single-frame tasks are trained jointly (AdamW, the best
  probe-val step kept).
* ``mean``: the probe-train mean (regression), majority class or base rates (no features).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from .data import LANDMARK_NAMES, MIRRORED_LANDMARKS, ProbeSet, mirror_pose

__all__ = [
    "ProbeConfig", "ProbeTask", "PROBE_TASKS", "FRAME_TASKS", "PRIMARY_METRIC", "TaskTargets", "Standardizer",
    "fit_ridge", "fit_logistic", "run_linear_probe", "run_attentive_probe", "mean_baseline", "fit_multitask",
    "AttentiveProbe", "auroc",
]


@dataclass(frozen=True)
class ProbeConfig:
    """Frozen-probe budgets, the same for every encoder.

    ridge_alphas : ridge penalties tried (standardised features; penalty alpha * n_train).
    logistic_wds : L2 weights tried for logistic regression (LBFGS, ``lbfgs_iters`` iterations).
    attentive_dim, attentive_steps, attentive_lr, batch_size, eval_every : the attentive probe
        (AdamW; probe-val loss every ``eval_every`` steps, the best kept).
    seed : torch seed of the attentive probe's initialisation and batches.
    """

    ridge_alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    logistic_wds: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    lbfgs_iters: int = 100
    attentive_dim: int = 64
    attentive_steps: int = 1500
    attentive_lr: float = 1e-3
    batch_size: int = 128
    eval_every: int = 250
    seed: int = 0

    def __post_init__(self):
        if not self.ridge_alphas or not self.logistic_wds or min(self.ridge_alphas) <= 0:
            raise ValueError("ProbeConfig needs non-empty ridge_alphas (> 0) and logistic_wds")
        for name in ("lbfgs_iters", "attentive_dim", "attentive_steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProbeConfig.{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


# --- tasks ----------------------------------------------------------------------------------
def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-12)
    return np.degrees(np.arccos(np.clip((a * b).sum(1), -1.0, 1.0)))


def _pose_targets(ps) -> np.ndarray:
    mc, mn = mirror_pose(ps.center_t, ps.normal_t)
    left = ps.center_t[:, :1] < 0
    canon_c, canon_n = np.where(left, mc, ps.center_t), np.where(left, mn, ps.normal_t)
    return np.concatenate([ps.center_t, ps.normal_t, canon_c, canon_n], 1).astype(np.float32)


def _pose_metrics(pred, ps) -> dict[str, float]:
    mc, mn = mirror_pose(ps.center_t, ps.normal_t)
    pc, pn = pred[:, 6:9], pred[:, 9:12]
    dist = lambda a, b: np.linalg.norm(a - b, axis=1)  # noqa: E731
    return {
        "center_err_mm": float(dist(pred[:, :3], ps.center_t).mean()),
        "normal_err_deg": float(_angle_deg(pred[:, 3:6], ps.normal_t).mean()),
        "center_err_mirror_mm": float(np.minimum(dist(pc, ps.center_t), dist(pc, mc)).mean()),
        "normal_err_mirror_deg": float(np.minimum(_angle_deg(pn, ps.normal_t), _angle_deg(pn, mn)).mean()),
    }


def _landmark_metrics(pred, ps) -> dict[str, float]:
    y = ps.landmark_mm
    err = np.abs(pred - y).mean(1)
    return {"mae_mm": float(err.mean()),
            "mae_mirror_mm": float(np.minimum(err, np.abs(pred - y[:, MIRRORED_LANDMARKS]).mean(1)).mean())}


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged); NaN unless both classes occur."""
    labels = np.asarray(labels, bool)
    npos, nneg = labels.sum(), (~labels).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def _hit_metrics(logits, ps) -> dict[str, float]:
    per = [auroc(logits[:, i], ps.landmark_hit[:, i]) for i in range(len(LANDMARK_NAMES))]
    ok = [a for a in per if np.isfinite(a)]
    return {"auroc": float(np.mean(ok)) if ok else float("nan")}


def _r2(pred, y) -> float:
    return float(np.mean(1 - ((pred - y) ** 2).sum(0) / (((y - y.mean(0)) ** 2).sum(0) + 1e-12)))


def _invdyn_metrics(pred, ps) -> dict[str, float]:
    y = ps.pair_action
    return {"action_r2": _r2(pred, y),
            "trans_err_mm": float(np.linalg.norm(pred[:, :3] - y[:, :3], axis=1).mean()),
            "rot_err_deg": float(np.linalg.norm(pred[:, 3:6] - y[:, 3:6], axis=1).mean())}


@dataclass(frozen=True)
class ProbeTask:
    """A downstream task: targets from a probe set, its metrics, its kind and its input.

    kind : regression | multiclass | multilabel.  pair : the input is [f(slice), f(pair) - f(slice)].
    """

    name: str
    kind: str
    targets: Callable[[ProbeSet], np.ndarray]
    metrics: Callable[[np.ndarray, ProbeSet], dict[str, float]]
    n_classes: int | None = None
    pair: bool = False

    def n_out(self, y: np.ndarray) -> int:
        return int(self.n_classes) if self.kind == "multiclass" else int(y.shape[1])


PROBE_TASKS: dict[str, ProbeTask] = {t.name: t for t in [
    ProbeTask("pose", "regression", _pose_targets, _pose_metrics),
    ProbeTask("landmark_distance", "regression", lambda ps: ps.landmark_mm, _landmark_metrics),
    ProbeTask("landmark_hit", "multilabel", lambda ps: ps.landmark_hit.astype(np.float32), _hit_metrics),
    ProbeTask("region", "multiclass", lambda ps: ps.region,
              lambda p, ps: {"accuracy": float((p.argmax(1) == ps.region).mean())}, n_classes=4),
    ProbeTask("inverse_dynamics", "regression", lambda ps: ps.pair_action, _invdyn_metrics, pair=True),
]}
FRAME_TASKS = tuple(t for t in PROBE_TASKS if not PROBE_TASKS[t].pair)  # attentive, fine-tuning, reference
CLIP_TASKS = ("pose", "landmark_distance")  # their truth exists for a clip's last frame
PRIMARY_METRIC = {"pose": "center_err_mirror_mm", "landmark_distance": "mae_mirror_mm", "landmark_hit": "auroc",
                  "region": "accuracy", "inverse_dynamics": "action_r2", "planning": "final_dist_mm"}


# --- shared fitting tools -------------------------------------------------------------------
class Standardizer:
    """z-score with training statistics; dimensions constant in training are only centred."""

    def __init__(self, x: np.ndarray, axis=0):
        x = np.asarray(x, np.float64)
        self.mean = x.mean(axis=axis, keepdims=True)
        std = x.std(axis=axis, keepdims=True)
        self.std = np.where(std > 1e-6 * (1 + np.abs(self.mean)), std, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean


class _FeatureScaler:
    """:class:`Standardizer` computed on ``device`` (float64 statistics), for the linear probes' features
    and targets: with a GPU, the 14k-dim features of the capable size are standardised there, not in NumPy."""

    def __init__(self, x: np.ndarray, device):
        t = torch.from_numpy(np.ascontiguousarray(x)).to(device).double()
        self.device, self.mean = device, t.mean(0, keepdim=True)
        std = t.std(0, unbiased=False, keepdim=True)
        self.std = torch.where(std > 1e-6 * (1 + self.mean.abs()), std, torch.ones_like(std))

    def __call__(self, x: np.ndarray, dtype=torch.float64) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).double()
        return ((t - self.mean) / self.std).to(dtype)

    def inverse(self, z: torch.Tensor) -> np.ndarray:
        return (z.double() * self.std + self.mean).cpu().numpy()


def fit_ridge(xtr, ytr, xval, yval, alphas, device="cpu") -> tuple[Callable, dict]:
    """Closed-form ridge on standardised features and targets; alpha picked by probe-val MSE.

    Penalty ``alpha * n_train`` (features have unit variance, so alpha is comparable across
    feature sizes).  Float64 on ``device`` (a GPU makes the 14k-dim features of the capable size
    cheap): one Cholesky factorisation per alpha of the primal (d x d) or dual (n x n) system,
    whichever is smaller.  Returns (predict (N, D) -> (N, T), info)."""
    sx, sy = _FeatureScaler(xtr, device), _FeatureScaler(ytr, device)
    x, y, xv, yv = sx(xtr), sy(ytr), sx(xval), sy(yval)
    n, d = x.shape
    primal = d <= n
    gram = x.T @ x if primal else x @ x.T
    rhs = x.T @ y if primal else y
    best = None
    for a in alphas:
        penalised = gram.clone()
        penalised.diagonal().add_(a * n)
        chol = torch.linalg.cholesky(penalised)
        del penalised
        w = torch.cholesky_solve(rhs, chol)
        w = w if primal else x.T @ w
        mse = float(((xv @ w - yv) ** 2).mean())
        if best is None or mse < best[0]:
            best = (mse, a, w)
    mse, alpha, w = best

    def predict(xs):
        return sy.inverse(sx(xs) @ w)

    return predict, {"alpha": alpha, "val_mse_std": mse}


def _loss_fn(kind: str):
    if kind == "multiclass":
        return F.cross_entropy
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits
    return F.mse_loss


def fit_logistic(xtr, ytr, xval, yval, wds, kind="multiclass", n_out=None, iters=100,
                 device="cpu") -> tuple[Callable, dict]:
    """Softmax (``multiclass``) or per-label sigmoid (``multilabel``) regression by LBFGS (float32 on
    ``device``); the L2 weight picked by probe-val loss.  Returns (predict -> logits, info)."""
    sx = _FeatureScaler(xtr, device)
    x, xv = sx(xtr, torch.float32), sx(xval, torch.float32)
    dtype = torch.long if kind == "multiclass" else torch.float32
    y, yv = torch.as_tensor(ytr, dtype=dtype, device=device), torch.as_tensor(yval, dtype=dtype, device=device)
    loss_fn = _loss_fn(kind)
    best = None
    for wd in wds:
        lin = nn.Linear(x.shape[1], n_out).to(device)
        nn.init.zeros_(lin.weight), nn.init.zeros_(lin.bias)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = loss_fn(lin(x), y) + wd * lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            val = float(loss_fn(lin(xv), yv))
        if best is None or val < best[0]:
            best = (val, wd, lin)
    val, wd, lin = best

    def predict(xs):
        with torch.no_grad():
            return lin(sx(xs, torch.float32)).cpu().numpy()

    return predict, {"weight_decay": wd, "val_loss": val}


class TaskTargets:
    """Targets of several tasks as tensors (regression standardised with probe-train statistics),
    their summed loss, and predictions mapped back to the targets' units."""

    def __init__(self, tasks: list[ProbeTask], train: ProbeSet):
        self.tasks = tasks
        self.scalers = {t.name: Standardizer(t.targets(train)) for t in tasks if t.kind == "regression"}
        self.n_out = {t.name: t.n_out(t.targets(train)) for t in tasks}

    def tensors(self, ps: ProbeSet) -> dict[str, torch.Tensor]:
        out = {}
        for t in self.tasks:
            y = t.targets(ps)
            y = self.scalers[t.name](y) if t.name in self.scalers else y
            out[t.name] = torch.as_tensor(y, dtype=torch.long if t.kind == "multiclass" else torch.float32)
        return out

    def loss(self, out: dict, y: dict) -> torch.Tensor:
        return sum(_loss_fn(t.kind)(out[t.name], y[t.name]) for t in self.tasks)

    def metrics(self, out: dict[str, np.ndarray], ps: ProbeSet) -> dict[str, dict[str, float]]:
        res = {}
        for t in self.tasks:
            pred = out[t.name]
            if t.name in self.scalers:
                pred = self.scalers[t.name].inverse(pred)
            res[t.name] = t.metrics(pred, ps)
        return res


def fit_multitask(model: nn.Module, inputs: Callable, targets: TaskTargets, train: ProbeSet, val: ProbeSet,
                  steps: int, lr: float, batch_size: int, eval_every: int, seed: int, device="cpu",
                  weight_decay: float = 1e-4) -> tuple[nn.Module, dict]:
    """AdamW on ``targets.loss`` for ``steps`` minibatches of ``train``; the state with the lowest
    probe-val loss (checked every ``eval_every`` steps and at the end) is returned.
    ``inputs(split, index) -> model input`` on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = model.to(device)
    n = len(train)
    y_tr = {k: v.to(device) for k, v in targets.tensors(train).items()}
    y_val = {k: v.to(device) for k, v in targets.tensors(val).items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    best, history = (float("inf"), None, 0), []

    def val_loss():
        model.eval()
        with torch.no_grad():
            total = 0.0
            for idx in torch.arange(len(val)).split(512):
                out = model(inputs("val", idx))
                total += float(targets.loss(out, {k: v[idx.to(device)] for k, v in y_val.items()})) * len(idx)
        model.train()
        return total / len(val)

    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        loss = targets.loss(model(inputs("train", idx)), {k: v[idx.to(device)] for k, v in y_tr.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            v = val_loss()
            history.append((step, v))
            if v < best[0]:
                best = (v, copy.deepcopy(model.state_dict()), step)
    model.load_state_dict(best[1])
    model.eval()
    return model, {"best_step": best[2], "val_loss": best[0], "val_history": history}


@torch.no_grad()
def predict_multitask(model: nn.Module, inputs: Callable, split: str, n: int) -> dict[str, np.ndarray]:
    outs = [model(inputs(split, idx)) for idx in torch.arange(n).split(512)]
    return {k: torch.cat([o[k] for o in outs]).float().cpu().numpy() for k in outs[0]}


# --- probes ---------------------------------------------------------------------------------
def _task_input(task: ProbeTask, feats: dict[str, np.ndarray]) -> np.ndarray:
    if task.pair:
        return np.concatenate([feats["frames"], feats["pair"] - feats["frames"]], 1)
    return feats["frames"]


def run_linear_probe(task: ProbeTask | str, feats: dict, sets: dict[str, ProbeSet], cfg: ProbeConfig,
                     shuffle_labels: bool = False, device="cpu") -> tuple[dict[str, float], dict]:
    """Fit the linear probe on probe-train, select on probe-val, score on probe-test.

    feats[split]: ``frames`` (N, D) features (and ``pair`` for pair tasks).  ``shuffle_labels``:
    the control -- probe-train targets permuted across slices (it must land at the mean baseline).
    """
    task = PROBE_TASKS[task] if isinstance(task, str) else task
    x = {s: _task_input(task, feats[s]) for s in sets}
    y = {s: task.targets(sets[s]) for s in sets}
    if shuffle_labels:
        y["train"] = y["train"][np.random.default_rng(cfg.seed).permutation(len(y["train"]))]
    if task.kind == "regression":
        predict, info = fit_ridge(x["train"], y["train"], x["val"], y["val"], cfg.ridge_alphas, device)
    else:
        predict, info = fit_logistic(x["train"], y["train"], x["val"], y["val"], cfg.logistic_wds, task.kind,
                                     task.n_out(y["train"]), cfg.lbfgs_iters, device)
    return task.metrics(predict(x["test"]), sets["test"]), info


def mean_baseline(task: ProbeTask | str, train: ProbeSet, test: ProbeSet) -> dict[str, float]:
    """The task's metrics for a constant prediction: the probe-train mean (regression), the
    majority class (multiclass; as one-hot logits) or the base rates (multilabel)."""
    task = PROBE_TASKS[task] if isinstance(task, str) else task
    y = task.targets(train)
    if task.kind == "multiclass":
        const = np.eye(task.n_classes)[np.bincount(y, minlength=task.n_classes).argmax()]
    else:
        const = y.mean(0)
    return task.metrics(np.repeat(const[None], len(test), 0), test)


class AttentiveProbe(nn.Module):
    """Spatial map (B, C, h, w) -> {task: (B, out)}: one learned query per task attends over the
    h*w positions (channels projected to ``dim``, learned position embedding, 4 heads)."""

    def __init__(self, channels: int, positions: int, n_out: dict[str, int], dim: int = 64):
        super().__init__()
        self.proj = nn.Linear(channels, dim)
        self.pos = nn.Parameter(torch.randn(1, positions, dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(len(n_out), dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.names = list(n_out)
        self.heads = nn.ModuleDict({k: nn.Linear(dim, v) for k, v in n_out.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.proj(x.flatten(2).transpose(1, 2)) + self.pos
        q = self.queries[None].expand(len(x), -1, -1)
        o = self.norm(self.attn(q, tokens, tokens, need_weights=False)[0])
        return {k: self.heads[k](o[:, i]) for i, k in enumerate(self.names)}


def run_attentive_probe(tasks: list[str], spatial: dict[str, np.ndarray], sets: dict[str, ProbeSet],
                        cfg: ProbeConfig, device="cpu") -> tuple[dict[str, dict[str, float]], dict]:
    """The attentive probe on frozen spatial maps (N, C, h, w) per split; all ``tasks`` jointly."""
    torch.manual_seed(cfg.seed)
    scale = Standardizer(spatial["train"], axis=(0, 2, 3))
    x = {s: torch.from_numpy(scale(spatial[s])).to(device) for s in sets}
    targets = TaskTargets([PROBE_TASKS[t] for t in tasks], sets["train"])
    c, h, w = x["train"].shape[1:]
    model = AttentiveProbe(c, h * w, targets.n_out, cfg.attentive_dim)
    inputs = lambda split, idx: x[split][idx.to(device)]  # noqa: E731
    model, info = fit_multitask(model, inputs, targets, sets["train"], sets["val"], cfg.attentive_steps,
                                cfg.attentive_lr, cfg.batch_size, cfg.eval_every, cfg.seed, device)
    out = predict_multitask(model, inputs, "test", len(sets["test"]))
    return targets.metrics(out, sets["test"]), info
