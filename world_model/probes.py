"""Probes on frozen features: linear (ridge / logistic) and a small MLP, a light conv
segmentation decoder, the downstream tasks built on :class:`world_model.eval_data.ProbeSet`,
their metrics, and t-interval confidence intervals over pretraining seeds.

Protocol (identical for every method): features are standardised with the probe-train
statistics; hyper-parameters (ridge alpha, logistic weight decay, MLP early-stopping epoch)
are chosen on the probe-val subjects only; metrics are computed once on the probe-test
subjects.  Everything is deterministic given ``ProbeConfig.seed``.

Tasks (metric, direction)
-------------------------
* ``pose``: template-space centre (mm) and normal from one slice -> ``center_err_mm`` (lower),
  ``normal_err_deg`` (lower; oriented normal, 0..180).
* ``inverse_dynamics``: the action between two slices from [f1, f2 - f1] -> ``action_r2``
  (higher), ``trans_err_mm`` and ``rot_err_deg`` (lower; norms of the error vectors).
* ``landmark_distance``: distance from the slice centre to each landmark -> ``mae_mm`` (lower).
* ``landmark_hit``: which landmarks the slice passes through (multi-label) -> ``auroc`` (higher,
  mean over landmarks with both classes in the test set).
* ``hemisphere`` (2 classes), ``region`` (4 classes) -> ``accuracy`` (higher).
* ``segmentation``: background/CSF/GM/WM per pixel from spatial features -> ``dice_mean``
  (higher; mean over CSF, GM, WM) and ``dice_<class>``; pooled over all test pixels.
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

from .eval_data import LANDMARK_NAMES, ProbeSet

__all__ = [
    "ProbeConfig",
    "TASKS",
    "TASK_METRICS",
    "HIGHER_IS_BETTER",
    "fit_ridge",
    "fit_logistic",
    "fit_mlp",
    "fit_segmentation",
    "run_task",
    "run_segmentation",
    "SmallCNN",
    "run_end_to_end",
    "auroc",
    "dice_scores",
    "mean_ci",
]

TISSUES = ("background", "CSF", "GM", "WM")


@dataclass(frozen=True)
class ProbeConfig:
    """Probe budgets, the same for every method.

    ridge_alphas : ridge penalties tried (on standardised features, scaled by the number of samples).
    logistic_wds : L2 weights tried for logistic regression (LBFGS, ``lbfgs_iters`` iterations).
    mlp_hidden, mlp_epochs, mlp_lr, mlp_wd, batch_size : the 1-hidden-layer MLP probe (Adam;
        the epoch with the best val loss is kept).
    seg_hidden, seg_epochs, seg_lr : the conv segmentation decoder.
    e2e_epochs, e2e_lr : end-to-end training (supervised upper bound / fine-tuning; Adam).
    seed : torch seed for the MLP / decoder initialisation and batching.
    """

    ridge_alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    logistic_wds: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    lbfgs_iters: int = 100
    mlp_hidden: int = 256
    mlp_epochs: int = 60
    mlp_lr: float = 1e-3
    mlp_wd: float = 1e-4
    batch_size: int = 128
    seg_hidden: int = 64
    seg_epochs: int = 15
    seg_lr: float = 1e-2
    e2e_epochs: int = 30
    e2e_lr: float = 2e-3
    seed: int = 0

    def __post_init__(self):
        if not self.ridge_alphas or not self.logistic_wds or min(self.ridge_alphas) <= 0:
            raise ValueError("need non-empty ridge_alphas (> 0) and logistic_wds")
        for name in ("lbfgs_iters", "mlp_hidden", "mlp_epochs", "batch_size", "seg_hidden", "seg_epochs", "e2e_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


# --- generic fitters ------------------------------------------------------------------------
Predictor = Callable[[np.ndarray], np.ndarray]


class _Standardizer:
    """z-score with training statistics; dimensions constant in training are only centred."""

    def __init__(self, x: np.ndarray, axis=0):
        x = np.asarray(x, np.float64)
        self.mean = x.mean(axis=axis, keepdims=True)
        std = x.std(axis=axis, keepdims=True)
        self.std = np.where(std > 1e-6 * (1 + np.abs(self.mean)), std, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def fit_ridge(xtr, ytr, xval, yval, alphas) -> tuple[Predictor, dict]:
    """Closed-form ridge on standardised features and targets; alpha picked by val MSE.

    Penalty ``alpha * n_train`` on the weights (features have unit variance, so alpha is
    comparable across feature sizes).  Returns (predict (N, D) -> (N, T), info).
    """
    sx, sy = _Standardizer(xtr), _Standardizer(ytr)
    x, y = sx(xtr).astype(np.float64), sy(ytr).astype(np.float64)
    xv = sx(xval).astype(np.float64)
    n, d = x.shape
    # Solve in the smaller of the primal (d x d) and dual (n x n) forms via one eigendecomposition.
    if d <= n:
        evals, evecs = np.linalg.eigh(x.T @ x)
        xty = evecs.T @ (x.T @ y)
        solve = lambda a: evecs @ (xty / (evals + a * n)[:, None])  # noqa: E731
    else:
        evals, evecs = np.linalg.eigh(x @ x.T)
        ety = evecs.T @ y
        solve = lambda a: x.T @ (evecs @ (ety / (evals + a * n)[:, None]))  # noqa: E731
    best = None
    for a in alphas:
        w = solve(a)
        mse = float(np.mean((xv @ w - sy(yval)) ** 2))
        if best is None or mse < best[0]:
            best = (mse, a, w)
    mse, alpha, w = best

    def predict(xs: np.ndarray) -> np.ndarray:
        return (sx(xs).astype(np.float64) @ w) * sy.std + sy.mean

    return predict, {"alpha": alpha, "val_mse_std": mse}


def _loss_fn(kind: str):
    if kind == "multiclass":
        return lambda out, y: F.cross_entropy(out, y)
    if kind == "multilabel":
        return lambda out, y: F.binary_cross_entropy_with_logits(out, y)
    return lambda out, y: F.mse_loss(out, y)


def _targets(y: np.ndarray, kind: str) -> torch.Tensor:
    return torch.as_tensor(y, dtype=torch.long if kind == "multiclass" else torch.float32)


def _n_out(y: np.ndarray, kind: str, n_classes: int | None) -> int:
    if kind == "multiclass":
        return int(n_classes if n_classes is not None else y.max() + 1)
    return y.shape[1]


def fit_logistic(xtr, ytr, xval, yval, wds, kind="multiclass", n_classes=None, iters=100) -> tuple[Predictor, dict]:
    """Logistic regression (softmax for ``multiclass``, per-label sigmoid for ``multilabel``) by LBFGS.

    L2 weight decay picked by the val loss.  Returns (predict -> logits, info).
    """
    sx = _Standardizer(xtr)
    x, xv = torch.from_numpy(sx(xtr)), torch.from_numpy(sx(xval))
    y, yv = _targets(ytr, kind), _targets(yval, kind)
    loss_fn = _loss_fn(kind)
    best = None
    for wd in wds:
        lin = nn.Linear(x.shape[1], _n_out(ytr, kind, n_classes))
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

    def predict(xs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return lin(torch.from_numpy(sx(xs))).numpy()

    return predict, {"weight_decay": wd, "val_loss": val}


def _train_epochs(model, x, y, xv, yv, loss_fn, epochs, lr, wd, batch_size, seed) -> tuple[nn.Module, dict]:
    """Adam for ``epochs`` epochs; returns the model state with the best val loss."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)

    def val_loss():
        model.eval()
        with torch.no_grad():
            return float(sum(loss_fn(model(xv[i]), yv[i]) * len(i) for i in torch.arange(len(xv)).split(512)) / len(xv))

    best = (val_loss(), 0, copy.deepcopy(model.state_dict()))  # epoch 0: the untrained model
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        val = val_loss()
        if val < best[0]:
            best = (val, epoch + 1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    return model, {"best_epoch": best[1], "val_loss": best[0]}


def fit_mlp(xtr, ytr, xval, yval, cfg: ProbeConfig, kind="regression", n_classes=None) -> tuple[Predictor, dict]:
    """One-hidden-layer MLP probe (GELU); regression targets are standardised.

    The output layer starts at zero (the mean / uniform prediction), and the epoch with the best
    val loss is kept, epoch 0 included, so the probe is never worse than the mean on val.
    Returns (predict, info).
    """
    torch.manual_seed(cfg.seed)
    sx = _Standardizer(xtr)
    sy = _Standardizer(ytr) if kind == "regression" else None
    prep_y = (lambda a: _targets(sy(a), kind)) if sy else (lambda a: _targets(a, kind))  # noqa: E731
    x, xv = torch.from_numpy(sx(xtr)), torch.from_numpy(sx(xval))
    model = nn.Sequential(
        nn.Linear(x.shape[1], cfg.mlp_hidden), nn.GELU(), nn.Linear(cfg.mlp_hidden, _n_out(ytr, kind, n_classes))
    )
    nn.init.zeros_(model[2].weight), nn.init.zeros_(model[2].bias)  # starts at the mean / uniform prediction
    model, info = _train_epochs(
        model, x, prep_y(ytr), xv, prep_y(yval), _loss_fn(kind), cfg.mlp_epochs, cfg.mlp_lr, cfg.mlp_wd,
        cfg.batch_size, cfg.seed,
    )

    def predict(xs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.from_numpy(sx(xs))).numpy()
        return out * sy.std + sy.mean if sy else out

    return predict, info


class _SegDecoder(nn.Module):
    """Light decoder: (B, C, h, w) features -> (B, 4, H, W) logits (bilinear upsampling).

    ``linear``: a 1x1 conv (a per-location linear probe); ``mlp``: 3x3 conv -> GELU -> 1x1 conv.
    """

    def __init__(self, channels: int, kind: str, hidden: int, size: tuple[int, int]):
        super().__init__()
        self.size = size
        if kind == "linear":
            self.net = nn.Conv2d(channels, len(TISSUES), 1)
        else:
            self.net = nn.Sequential(
                nn.Conv2d(channels, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, len(TISSUES), 1)
            )

    def forward(self, f):
        return F.interpolate(self.net(f), size=self.size, mode="bilinear", align_corners=False)


def fit_segmentation(ftr, ytr, fval, yval, cfg: ProbeConfig, kind="linear") -> tuple[Predictor, dict]:
    """Train the conv decoder on spatial features (N, C, h, w) for tissue maps (N, H, W) uint8.

    Channels are standardised with probe-train statistics; cross-entropy; best val epoch kept.
    Returns (predict -> (N, H, W) int labels, info).
    """
    torch.manual_seed(cfg.seed)
    sx = _Standardizer(ftr, axis=(0, 2, 3))
    x, xv = torch.from_numpy(sx(ftr)), torch.from_numpy(sx(fval))
    y, yv = torch.as_tensor(ytr, dtype=torch.long), torch.as_tensor(yval, dtype=torch.long)
    model = _SegDecoder(x.shape[1], kind, cfg.seg_hidden, tuple(ytr.shape[1:]))
    model, info = _train_epochs(
        model, x, y, xv, yv, F.cross_entropy, cfg.seg_epochs, cfg.seg_lr, 1e-4, cfg.batch_size, cfg.seed
    )

    def predict(fs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            xs = torch.from_numpy(sx(fs))
            return torch.cat([model(xs[i]).argmax(1) for i in torch.arange(len(xs)).split(256)]).numpy()

    return predict, info


# --- metrics --------------------------------------------------------------------------------
def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged); NaN unless both classes occur."""
    labels = np.asarray(labels, bool)
    npos, nneg = labels.sum(), (~labels).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def dice_scores(pred: np.ndarray, truth: np.ndarray, n_classes: int = len(TISSUES)) -> np.ndarray:
    """(n_classes,) Dice pooled over all pixels; NaN for a class absent from both."""
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        p, t = pred == c, truth == c
        denom = p.sum() + t.sum()
        if denom:
            out[c] = 2.0 * (p & t).sum() / denom
    return out


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-12)
    return np.degrees(np.arccos(np.clip((a * b).sum(1), -1.0, 1.0)))


def _r2(pred, y) -> float:
    return float(np.mean(1 - ((pred - y) ** 2).sum(0) / (((y - y.mean(0)) ** 2).sum(0) + 1e-12)))


# --- tasks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """A downstream task: inputs from features, targets from a ProbeSet, and metrics."""

    name: str
    kind: str  # regression | multiclass | multilabel
    inputs: Callable[[dict[str, np.ndarray]], np.ndarray]
    targets: Callable[[ProbeSet], np.ndarray]
    metrics: Callable[[np.ndarray, ProbeSet], dict[str, float]]
    n_classes: int | None = None


def _pose_metrics(pred, ps):
    return {
        "center_err_mm": float(np.linalg.norm(pred[:, :3] - ps.center_t, axis=1).mean()),
        "normal_err_deg": float(_angle_deg(pred[:, 3:], ps.normal_t).mean()),
    }


def _invdyn_metrics(pred, ps):
    y = ps.pair_action
    return {
        "action_r2": _r2(pred, y),
        "trans_err_mm": float(np.linalg.norm(pred[:, :3] - y[:, :3], axis=1).mean()),
        "rot_err_deg": float(np.linalg.norm(pred[:, 3:6] - y[:, 3:6], axis=1).mean()),
    }


def _hit_metrics(logits, ps):
    per = [auroc(logits[:, i], ps.landmark_hit[:, i]) for i in range(len(LANDMARK_NAMES))]
    ok = [a for a in per if np.isfinite(a)]
    return {"auroc": float(np.mean(ok)) if ok else float("nan")}


def _acc(logits, y):
    return {"accuracy": float((logits.argmax(1) == y).mean())}


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("pose", "regression", lambda f: f["frames"], lambda ps: np.concatenate([ps.center_t, ps.normal_t], 1),
             _pose_metrics),
        Task("inverse_dynamics", "regression", lambda f: np.concatenate([f["frames"], f["pair"] - f["frames"]], 1),
             lambda ps: ps.pair_action, _invdyn_metrics),
        Task("landmark_distance", "regression", lambda f: f["frames"], lambda ps: ps.landmark_mm,
             lambda p, ps: {"mae_mm": float(np.abs(p - ps.landmark_mm).mean())}),
        Task("landmark_hit", "multilabel", lambda f: f["frames"], lambda ps: ps.landmark_hit.astype(np.float32),
             _hit_metrics),
        Task("hemisphere", "multiclass", lambda f: f["frames"], lambda ps: ps.hemisphere,
             lambda p, ps: _acc(p, ps.hemisphere), n_classes=2),
        Task("region", "multiclass", lambda f: f["frames"], lambda ps: ps.region,
             lambda p, ps: _acc(p, ps.region), n_classes=4),
    ]
}

TASK_METRICS: dict[str, tuple[str, ...]] = {
    "pose": ("center_err_mm", "normal_err_deg"),
    "inverse_dynamics": ("action_r2", "trans_err_mm", "rot_err_deg"),
    "landmark_distance": ("mae_mm",),
    "landmark_hit": ("auroc",),
    "hemisphere": ("accuracy",),
    "region": ("accuracy",),
    "segmentation": ("dice_mean",) + tuple(f"dice_{t}" for t in TISSUES[1:]),
}
HIGHER_IS_BETTER = {
    "center_err_mm": False, "normal_err_deg": False, "action_r2": True, "trans_err_mm": False,
    "rot_err_deg": False, "mae_mm": False, "auroc": True, "accuracy": True, "dice_mean": True,
    **{f"dice_{t}": True for t in TISSUES[1:]},
}


def run_task(
    task: Task | str, probe: str, feats: dict[str, dict[str, np.ndarray]], sets: dict[str, ProbeSet], cfg: ProbeConfig
) -> tuple[dict[str, float], dict]:
    """Fit one probe (``linear`` or ``mlp``) on the probe-train split, select on val, score on test.

    feats[split] holds ``frames`` (N, D) features and ``pair`` (N, D) features of the pair frames;
    sets[split] the ProbeSet (splits ``train``, ``val``, ``test``).  Returns (metrics, fit info).
    """
    task = TASKS[task] if isinstance(task, str) else task
    x = {s: task.inputs(feats[s]) for s in ("train", "val", "test")}
    y = {s: task.targets(sets[s]) for s in ("train", "val", "test")}
    if probe == "linear":
        if task.kind == "regression":
            predict, info = fit_ridge(x["train"], y["train"], x["val"], y["val"], cfg.ridge_alphas)
        else:
            predict, info = fit_logistic(
                x["train"], y["train"], x["val"], y["val"], cfg.logistic_wds, task.kind, task.n_classes, cfg.lbfgs_iters
            )
    elif probe == "mlp":
        predict, info = fit_mlp(x["train"], y["train"], x["val"], y["val"], cfg, task.kind, task.n_classes)
    else:
        raise ValueError(f"unknown probe {probe!r}; choose linear or mlp")
    return task.metrics(predict(x["test"]), sets["test"]), info


def run_segmentation(
    probe: str, spatial: dict[str, np.ndarray], sets: dict[str, ProbeSet], cfg: ProbeConfig
) -> tuple[dict[str, float], dict]:
    """Tissue segmentation from spatial features (N, C, h, w) per split; ``linear`` or ``mlp`` decoder."""
    if probe not in ("linear", "mlp"):
        raise ValueError(f"unknown probe {probe!r}; choose linear or mlp")
    predict, info = fit_segmentation(
        spatial["train"], sets["train"].tissue, spatial["val"], sets["val"].tissue, cfg, probe
    )
    d = dice_scores(predict(spatial["test"]), sets["test"].tissue)
    out = {"dice_mean": float(np.nanmean(d[1:]))}
    out.update({f"dice_{t}": float(d[i]) for i, t in enumerate(TISSUES) if i > 0})
    return out, info


# --- end to end: supervised upper bound and fine-tuning ----------------------------------------
class SmallCNN(nn.Module):
    """A small conv encoder trained from scratch for the supervised upper bound.

    ``features((B, H, W) uint8) -> (B, 128)`` (global mean of the last map);
    ``spatial_features -> (B, 128, H/8, W/8)``.
    """

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 4, 2, 1), nn.GELU(),
            nn.Conv2d(64, 128, 4, 2, 1), nn.GELU(), nn.Conv2d(128, 128, 3, 1, 1), nn.GELU(),
        )

    def spatial_features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames.float()[:, None] / 255.0 - 0.5)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.spatial_features(frames).mean((2, 3))


class _MultiTask(nn.Module):
    """Backbone + one head per task (linear on features; the mlp conv decoder for segmentation)."""

    def __init__(self, backbone, tasks: list[Task], n_out: dict[str, int], seg: bool, size, hidden: int):
        super().__init__()
        self.backbone, self.tasks = backbone, tasks
        with torch.no_grad():
            probe = torch.zeros(2, *size, dtype=torch.uint8)
            d = backbone.features(probe).shape[1]
            c = backbone.spatial_features(probe).shape[1] if seg else 0
        self.heads = nn.ModuleDict(
            {t.name: nn.Linear(2 * d if t.name == "inverse_dynamics" else d, n_out[t.name]) for t in tasks}
        )
        self.seg = _SegDecoder(c, "mlp", hidden, size) if seg else None

    def forward(self, frames, pair):
        f = self.backbone.features(frames)
        f2 = self.backbone.features(pair) if "inverse_dynamics" in self.heads else None
        out = {n: h(torch.cat([f, f2 - f], 1) if n == "inverse_dynamics" else f) for n, h in self.heads.items()}
        if self.seg is not None:
            out["segmentation"] = self.seg(self.backbone.spatial_features(frames))
        return out


def run_end_to_end(
    backbone: nn.Module, tasks: list[str], sets: dict[str, ProbeSet], cfg: ProbeConfig
) -> tuple[dict[str, dict[str, float]], dict]:
    """Train ``backbone`` (its ``features`` / ``spatial_features``) with all task heads jointly.

    Losses: MSE on standardised regression targets, cross-entropy, BCE, pixel cross-entropy;
    summed with equal weights; Adam for ``cfg.e2e_epochs``; the epoch with the best val loss is
    kept.  A fresh :class:`SmallCNN` gives the supervised upper bound, a copy of a pretrained
    encoder gives fine-tuning.  Returns ({task: metrics}, info).
    """
    torch.manual_seed(cfg.seed)
    vec = [TASKS[t] for t in tasks if t != "segmentation"]
    seg = "segmentation" in tasks and hasattr(backbone, "spatial_features")
    tr = sets["train"]
    scalers = {t.name: _Standardizer(t.targets(tr)) for t in vec if t.kind == "regression"}
    n_out = {t.name: _n_out(t.targets(tr), t.kind, t.n_classes) for t in vec}
    model = _MultiTask(backbone, vec, n_out, seg, tr.frames.shape[1:], cfg.seg_hidden)

    def tensors(ps: ProbeSet):
        ys = {t.name: _targets(scalers[t.name](t.targets(ps)) if t.name in scalers else t.targets(ps), t.kind)
              for t in vec}
        if seg:
            ys["segmentation"] = torch.as_tensor(ps.tissue, dtype=torch.long)
        return torch.from_numpy(ps.frames), torch.from_numpy(ps.pair_frames), ys

    losses = {t.name: _loss_fn(t.kind) for t in vec}
    losses["segmentation"] = F.cross_entropy

    class _Joint(nn.Module):  # (frames, pair) packed as one input for _train_epochs
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, xp):
            return self.m(xp[:, 0], xp[:, 1])

    def pack(ps):
        f, p, ys = tensors(ps)
        return torch.stack([f, p], 1), ys

    x, y = pack(tr)
    xv, yv = pack(sets["val"])
    idx_y = _IndexedTargets(y)
    joint = _Joint()
    loss_fn = lambda out, yy: sum(losses[k](out[k], yy[k]) for k in out)  # noqa: E731
    joint, info = _train_epochs(joint, x, idx_y, xv, _IndexedTargets(yv), loss_fn, cfg.e2e_epochs, cfg.e2e_lr,
                                1e-4, cfg.batch_size, cfg.seed)
    test = sets["test"]
    xt, _ = pack(test)
    with torch.no_grad():
        outs = [joint(xt[i]) for i in torch.arange(len(xt)).split(256)]
    out = {k: torch.cat([o[k] for o in outs]).numpy() for k in outs[0]}
    metrics = {}
    for t in vec:
        pred = out[t.name]
        if t.name in scalers:
            pred = pred * scalers[t.name].std + scalers[t.name].mean
        metrics[t.name] = t.metrics(pred, test)
    if seg:
        d = dice_scores(out["segmentation"].argmax(1), test.tissue)
        metrics["segmentation"] = {"dice_mean": float(np.nanmean(d[1:])),
                                   **{f"dice_{n}": float(d[i]) for i, n in enumerate(TISSUES) if i > 0}}
    return metrics, info


class _IndexedTargets:
    """A dict of target tensors indexed together (``y[idx]`` -> dict) for :func:`_train_epochs`."""

    def __init__(self, ys: dict[str, torch.Tensor]):
        self.ys = ys

    def __getitem__(self, idx):
        return {k: v[idx] for k, v in self.ys.items()}


# --- confidence intervals -------------------------------------------------------------------
def mean_ci(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the two-sided Student-t interval over seeds (NaNs dropped).

    Returns (mean, half_width, n); half_width is NaN with fewer than two finite values.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(v[0]), float("nan"), 1
    half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / np.sqrt(n)
    return float(v.mean()), float(half), n
