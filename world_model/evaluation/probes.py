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
* ``linear``: closed-form ridge (regression) or logistic regression on ``features``, all tasks on one
  input from one standardisation and one Gram matrix (:func:`run_linear_probes`), on the device.
* ``attentive``: on the full spatial map ``spatial_features`` (C, h, w): channels projected to 64,
  a learned position embedding, one learned query per task attending over the h*w positions
  (4 heads), a linear head per task; the single-frame tasks are trained jointly (AdamW, the best
  probe-val step kept).
* ``mean``: the probe-train mean (regression), majority class or base rates (no features).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from navgym.deprecation import moved_names

from ..standardise import Standardiser, statistics
from .data import LANDMARK_NAMES, MIRRORED_LANDMARKS, PROBE_SPLITS, ProbeSet, mirror_pose

__all__ = [
    "ProbeConfig", "ProbeTask", "PROBE_TASKS", "FRAME_TASKS", "PRIMARY_METRIC", "TaskTargets",
    "LinearDesign", "fit_ridge", "logistic_mm", "fit_logistic", "run_linear_probe", "run_linear_probes",
    "run_attentive_probe", "mean_baseline", "fit_multitask",
    "AttentiveProbe", "auroc",
]


__getattr__ = moved_names(__name__, {"Standardizer": "world_model.standardise.Standardiser"})


@dataclass(frozen=True)
class ProbeConfig:
    """Frozen-probe budgets, the same for every encoder.

    ridge_alphas : ridge penalties tried (standardised features; penalty alpha * n_train).
    logistic_wds : L2 weights tried for logistic regression (all at once, ``logistic_iters`` steps of
        :func:`logistic_mm`).
    attentive_dim, attentive_steps, attentive_lr, batch_size, eval_every : the attentive probe
        (AdamW; probe-val loss every ``eval_every`` steps, the best kept).
    seed : torch seed of the attentive probe's initialisation and batches.
    """

    ridge_alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    logistic_wds: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    logistic_iters: int = 100
    attentive_dim: int = 64
    attentive_steps: int = 1500
    attentive_lr: float = 1e-3
    batch_size: int = 128
    eval_every: int = 250
    seed: int = 0

    def __post_init__(self):
        if not self.ridge_alphas or not self.logistic_wds or min(self.ridge_alphas) <= 0:
            raise ValueError("ProbeConfig needs non-empty ridge_alphas (> 0) and logistic_wds")
        for name in ("logistic_iters", "attentive_dim", "attentive_steps", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProbeConfig.{name} must be >= 1, got {getattr(self, name)}")



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
def _on(x, device) -> torch.Tensor:
    """``x`` (NumPy or tensor) as a float64 tensor on ``device`` (no copy when it is one already)."""
    return torch.as_tensor(x).to(device=device, dtype=torch.float64)


class LinearDesign:
    """One probe input, shared by every linear fit on it: the probe-train features standardised once on
    ``device`` (float64, probe-train statistics; dimensions constant in training only centred), their
    Gram matrix, factorised per penalty.

    Primal (d x d Gram ``X^T X``) when d <= n, else dual (n x n kernel ``X X^T``; the solution is
    ``X^T a``).  A fit's coefficients ``c`` (p x k, p = d or n) predict ``maps[split] @ c`` (+ bias):
    ``maps`` are the standardised features (primal) or their kernel with probe-train (dual).
    ``coef(r)`` maps a per-slice quantity (n x k) into coefficient space (``X^T r`` or ``r``)."""

    def __init__(self, train, val, test, device="cpu"):
        x = _on(train, device)
        mean, std = statistics(x)
        z = {s: (v - mean) / std for s, v in (("train", x), ("val", _on(val, device)), ("test", _on(test, device)))}
        self.n, d = z["train"].shape
        self.dual = d > self.n
        if self.dual:
            self.maps = {s: v @ z["train"].T for s, v in z.items()}
            self.gram = self.maps["train"]
        else:
            self.maps, self.gram = z, z["train"].T @ z["train"]
        self._train32 = None
        self.status: list[torch.Tensor] = []

    @property
    def train32(self) -> torch.Tensor:
        """The probe-train map in float32 (the logistic iterations' products), made when first needed."""
        if self._train32 is None:
            self._train32 = self.maps["train"].float()
        return self._train32

    def coef(self, r: torch.Tensor) -> torch.Tensor:
        return r if self.dual else self.maps["train"].T @ r

    def factor(self, shift: float) -> torch.Tensor:
        """Cholesky factor of ``gram + shift * I`` (float64).  Not checked here (a check reads a value back):
        the factorisations' status codes are kept in ``status`` and checked once with the results."""
        penalised = self.gram.clone()
        penalised.diagonal().add_(shift)
        factor, info = torch.linalg.cholesky_ex(penalised)
        self.status.append(info)
        return factor

    def solve(self, shift: float, rhs: torch.Tensor) -> torch.Tensor:
        """``(gram + shift I)^-1 rhs`` (rhs: (p, k))."""
        return torch.cholesky_solve(rhs, self.factor(shift))

    def inverses(self, shifts) -> torch.Tensor:
        """``(gram + shift I)^-1`` for each shift (len(shifts), p, p): a product per step, not a solve."""
        return torch.stack([torch.cholesky_inverse(self.factor(s)) for s in shifts])


def _standardise_targets(ytr: torch.Tensor, *others: torch.Tensor):
    mean, std = statistics(ytr)
    return mean, std, [(y - mean) / std for y in (ytr, *others)]


def fit_ridge(design: LinearDesign, targets: list[tuple[torch.Tensor, torch.Tensor]], alphas) -> list[dict]:
    """Closed-form ridge for several targets at once; per target the alpha with the lowest probe-val MSE.

    ``targets``: (probe-train (n, k), probe-val) pairs in their units.  Features and targets are
    standardised with probe-train statistics; penalty ``alpha * n_train`` (features have unit variance,
    so alpha is comparable across feature sizes); float64, one Cholesky factorisation of the design's Gram
    per alpha serves every target.  Returns per target {"test": (n_test, k) predictions in the target's
    units, "alpha", "val_mse_std"} as device tensors (nothing is read back here)."""
    scaled = [_standardise_targets(ytr.double(), yval.double()) for ytr, yval in targets]
    y = torch.cat([s[2][0] for s in scaled], 1)
    yv = torch.cat([s[2][1] for s in scaled], 1)
    n = design.n
    rhs = design.coef(y)
    w = torch.stack([design.solve(a * n, rhs) for a in alphas])  # (A, p, K)
    err = ((design.maps["val"] @ w - yv) ** 2).mean(1)  # (A, K)
    out, start = [], 0
    for (mean, std, _), (ytr, _) in zip(scaled, targets):
        cols = slice(start, start + ytr.shape[1])
        start = cols.stop
        mse = err[:, cols].mean(1)
        best = torch.argmin(mse)  # the first minimum, as the former loop over alphas kept it
        pred = design.maps["test"] @ _pick(w, best)[:, cols]
        out.append({"test": pred * std + mean,
                    "alpha": _pick(torch.as_tensor(alphas, dtype=torch.float64, device=w.device), best),
                    "val_mse_std": _pick(mse, best)})
    return out


def _pick(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """``t[i]`` for a 0-d index tensor on the device (plain indexing would read it back)."""
    return t.index_select(0, i.view(1))[0]


def _one_hot(y: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) float one-hot rows of class indices (``F.one_hot`` would read the labels back to check them)."""
    return torch.zeros(len(y), k, device=y.device).scatter_(1, y[:, None], 1.0)


def _logistic_grad(kind: str, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss per fit (W,), d loss / d logits) of the mean cross-entropy (``multiclass``, y: one-hot rows)
    or the mean binary cross-entropy over slices x labels (``multilabel``); logits (W, n, k)."""
    y = y.to(logits.dtype)
    if kind == "multiclass":
        logp = torch.log_softmax(logits, -1)
        loss = -(logp * y).sum(-1).mean(-1)
        return loss, (logp.exp() - y) / logits.shape[1]
    loss = F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean((1, 2))
    return loss, (torch.sigmoid(logits) - y) / (logits.shape[1] * logits.shape[2])


def _times(m: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``m @ c[i]`` for every fit i (c: (W, p, k)) as one matrix product: (W, rows, k)."""
    w, p, k = c.shape
    return (m @ c.to(m.dtype).transpose(0, 1).reshape(p, w * k)).view(-1, w, k).transpose(0, 1)


def logistic_mm(design: LinearDesign, ytr: torch.Tensor, wds, kind: str, n_out: int,
                iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax (``multiclass``, ``ytr`` class indices) or per-label sigmoid (``multilabel``) regression
    on the design's probe-train features with L2 weight ``wd`` on the weights (not the bias), for every
    ``wd`` at once: coefficients (len(wds), p, n_out) and biases (len(wds), 1, n_out), float64.

    Boehning's bound majorisation: the loss Hessian is at most ``X^T X / (4 n k)`` (k sigmoids, mean
    over slices x labels) or ``X^T X / (2 n)`` (a softmax, mean over slices), so Newton-like steps with
    that fixed matrix, i.e. ``gram + shift I`` (one Cholesky factor per ``wd`` from the shared Gram,
    float64), never increase the objective; Nesterov momentum on top, restarted when a step goes uphill.
    The products with the features (logits, gradient) run in float32, every ``wd`` in one matrix product.
    A fixed number of steps (``iters``), all on the device: no value is read back."""
    n, count = design.n, len(wds)
    curv = 1 / (2 * n) if kind == "multiclass" else 1 / (4 * n * n_out)  # the bound: curv * X^T X
    shifts = [2 * wd / curv for wd in wds]
    dev, f64 = design.gram.device, torch.float64
    wd = torch.as_tensor(wds, dtype=f64, device=dev)[:, None, None]
    ytr = _one_hot(ytr, n_out) if kind == "multiclass" else ytr.float()
    coef = torch.zeros(count, design.gram.shape[0], n_out, dtype=f64, device=dev)
    bias = torch.zeros(count, 1, n_out, dtype=f64, device=dev)
    prev_c, prev_b = coef, bias
    since = torch.zeros(count, 1, 1, dtype=f64, device=dev)  # steps since the last restart
    x = design.train32
    xt = x.T  # the dual's map is symmetric: only the primal uses it
    inverse = design.inverses(shifts)
    for _ in range(iters):
        beta = since / (since + 3)
        yc, yb = coef + beta * (coef - prev_c), bias + beta * (bias - prev_b)
        _, r = _logistic_grad(kind, _times(x, yc) + yb.float(), ytr)
        grad_c = (r if design.dual else _times(xt, r)).double() + 2 * wd * yc
        grad_b = r.sum(1, keepdim=True).double()
        new_c = yc - torch.bmm(inverse, grad_c) / curv
        new_b = yb - grad_b / (curv * n)
        step_c = new_c - coef
        # the gradient at the extrapolated point against the step (W = X^T c in the dual): uphill -> restart
        along = (grad_c * (_times(x, step_c).double() if design.dual else step_c)).sum((1, 2)) \
            + (grad_b * (new_b - bias)).sum((1, 2))
        since = torch.where(along[:, None, None] > 0, torch.zeros_like(since), since + 1)
        prev_c, prev_b, coef, bias = coef, bias, new_c, new_b
    return coef, bias


def fit_logistic(design: LinearDesign, ytr: torch.Tensor, yval: torch.Tensor, wds, kind: str, n_out: int,
                 iters: int) -> dict:
    """:func:`logistic_mm` for every weight in ``wds``; the one with the lowest probe-val loss is kept.
    Returns {"test": (n_test, n_out) logits, "weight_decay", "val_loss"} as device tensors."""
    coef, bias = logistic_mm(design, ytr, wds, kind, n_out, iters)
    yval = _one_hot(yval, n_out) if kind == "multiclass" else yval
    val_loss, _ = _logistic_grad(kind, _times(design.maps["val"], coef) + bias, yval)
    best = torch.argmin(val_loss)  # the first minimum, as the former loop over weights kept it
    return {"test": design.maps["test"] @ _pick(coef, best) + _pick(bias, best),
            "weight_decay": _pick(torch.as_tensor(wds, dtype=torch.float64, device=coef.device), best),
            "val_loss": _pick(val_loss, best)}


def _loss_fn(kind: str):
    if kind == "multiclass":
        return F.cross_entropy
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits
    return F.mse_loss


class TaskTargets:
    """Targets of several tasks as tensors (regression standardised with probe-train statistics),
    their summed loss, and predictions mapped back to the targets' units."""

    def __init__(self, tasks: list[ProbeTask], train: ProbeSet):
        self.tasks = tasks
        self.scalers = {t.name: Standardiser(t.targets(train)) for t in tasks if t.kind == "regression"}
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
def _task_input(task: ProbeTask, feats: dict, device) -> torch.Tensor:
    """The probe input of ``task`` on ``device``: ``frames`` or [f(slice), f(pair) - f(slice)]."""
    f = torch.as_tensor(feats["frames"], device=device)
    return torch.cat([f, torch.as_tensor(feats["pair"], device=device) - f], 1) if task.pair else f


def _targets(task: ProbeTask, ps: ProbeSet, device) -> torch.Tensor:
    y = task.targets(ps)
    return torch.as_tensor(y, device=device, dtype=torch.long if task.kind == "multiclass" else torch.float64)


def run_linear_probes(tasks, feats: dict, sets: dict[str, ProbeSet], cfg: ProbeConfig, device="cpu",
                      shuffled_control: bool = False, real: bool = True) -> dict[tuple[str, bool], tuple[dict, dict]]:
    """Fit the linear probe of every task on probe-train, select its penalty on probe-val, score on probe-test.

    feats[split]: ``frames`` (N, D) features (and ``pair`` for pair tasks), NumPy or tensors (kept
    where they are when already on ``device``).  Tasks on the same input share one
    :class:`LinearDesign` (one standardisation, one Gram, one factorisation per penalty): the regression
    tasks are one multi-target ridge, each classification task one logistic fit over every penalty.
    ``shuffled_control``: also the control, probe-train targets permuted across slices (it must land
    at the mean baseline); ``real=False``: only the control.  Everything stays on ``device`` until the
    predictions and the chosen penalties are read back, once.  Returns {(task, shuffled): (metrics, info)}."""
    tasks = [PROBE_TASKS[t] if isinstance(t, str) else t for t in tasks]
    perm = torch.as_tensor(np.random.default_rng(cfg.seed).permutation(len(sets["train"])), device=device)
    variants = [v for v, on in ((False, real), (True, shuffled_control)) if on]
    fits, status = {}, []
    for pair in sorted({t.pair for t in tasks}):
        group = [t for t in tasks if t.pair == pair]
        design = LinearDesign(*(_task_input(group[0], feats[s], device) for s in PROBE_SPLITS), device=device)
        jobs = [(t, v) for t in group for v in variants]
        y = {(t.name, v): (_targets(t, sets["train"], device), _targets(t, sets["val"], device)) for t, v in jobs}
        y = {k: (ytr[perm] if k[1] else ytr, yv) for k, (ytr, yv) in y.items()}
        ridge = [j for j in jobs if j[0].kind == "regression"]
        if ridge:
            for j, fit in zip(ridge, fit_ridge(design, [y[j[0].name, j[1]] for j in ridge], cfg.ridge_alphas)):
                fits[j[0].name, j[1]] = fit
        for t, v in jobs:
            if t.kind != "regression":
                fits[t.name, v] = fit_logistic(design, *y[t.name, v], cfg.logistic_wds, t.kind,
                                          t.n_out(t.targets(sets["train"])), cfg.logistic_iters)
        status.extend(design.status)
        del design
    host = _to_host(fits, torch.stack(status).sum() if status else None)  # the one read-back
    out = {}
    for t in tasks:
        for v in variants:
            fit = host[t.name, v]
            info = {k: float(val) for k, val in fit.items() if k != "test"}
            out[t.name, v] = (t.metrics(fit["test"].astype(np.float32), sets["test"]), info)
    return out


def _to_host(fits: dict, failures: torch.Tensor | None) -> dict:
    """Every device tensor of ``fits`` read back in one transfer (flattened, concatenated), and the sum of
    the Cholesky status codes (``failures``): an error unless 0."""
    keys = [(j, k) for j, fit in fits.items() for k in fit]
    extra = [] if failures is None else [failures.double().flatten()]
    flat = torch.cat([fits[j][k].double().flatten() for j, k in keys] + extra).cpu().numpy()
    if failures is not None and flat[-1] != 0:
        raise ValueError("linear probe: a penalised Gram matrix is not positive definite (non-finite features?)")
    out, start = {}, 0
    for j, k in keys:
        shape = tuple(fits[j][k].shape)
        size = int(np.prod(shape))
        out.setdefault(j, {})[k] = flat[start: start + size].reshape(shape)
        start += size
    return out


def run_linear_probe(task: ProbeTask | str, feats: dict, sets: dict[str, ProbeSet], cfg: ProbeConfig,
                     shuffle_labels: bool = False, device="cpu") -> tuple[dict[str, float], dict]:
    """One task's linear probe (:func:`run_linear_probes`); ``shuffle_labels``: its shuffled-label control."""
    name = task if isinstance(task, str) else task.name
    return run_linear_probes([task], feats, sets, cfg, device, shuffled_control=shuffle_labels,
                             real=not shuffle_labels)[name, shuffle_labels]


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
    scale = Standardiser(spatial["train"], axis=(0, 2, 3))
    x = {s: torch.from_numpy(scale(spatial[s])).to(device) for s in sets}
    targets = TaskTargets([PROBE_TASKS[t] for t in tasks], sets["train"])
    c, h, w = x["train"].shape[1:]
    model = AttentiveProbe(c, h * w, targets.n_out, cfg.attentive_dim)
    inputs = lambda split, idx: x[split][idx.to(device)]  # noqa: E731
    model, info = fit_multitask(model, inputs, targets, sets["train"], sets["val"], cfg.attentive_steps,
                                cfg.attentive_lr, cfg.batch_size, cfg.eval_every, cfg.seed, device)
    out = predict_multitask(model, inputs, "test", len(sets["test"]))
    return targets.metrics(out, sets["test"]), info
