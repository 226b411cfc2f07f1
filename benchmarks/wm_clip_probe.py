"""Clip probe: does a world model's context know where the slice is?  Ridge probes of the pose of a
clip's last frame (template space, mirror-invariant) from

* ``context``: ``clip_features(frames, actions)`` (the dynamics model's features of the last frame in
  the context of the clip),
* ``static``: per-frame ``features`` of the last frame and the clip mean, plus the actions,
* ``single``: ``features`` of the last frame alone (the single-slice rule) and ``tokenizer``: its
  tokenizer part alone (pooled hidden map), to choose the single-slice rule.

    python benchmarks/wm_clip_probe.py --checkpoints runs/wm15/navwm_s0/last.pt ... [--fit 1600]
        [--test 800] [--subjects synthetic:24] [--out runs/wm15/clip_probe.json]

Probe clips: ``--fit`` clips from the 'train' subjects fit the ridge (penalty picked on a 20 %
hold-out of them), ``--test`` clips from the held-out 'test' subjects score it; mix policy, the
encoder's window and slice size; cached under ``--cache``.  Errors: centre = distance between the
predicted and true (|x|, y, z) template mm; normal = angle between the normal rebuilt from predicted
mirror-invariant products (a^2, b^2, c^2, bc, |ab|, |ac| of n = (a, b, c)) and the nearer of the
true normal and its mirror image (sign-free).  Per checkpoint, mean over test clips.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from navgym.files import atomic_path, write_json_atomic
from world_model import load_encoder

FEATURES = ("context", "static", "single", "tokenizer")


def probe_clips(subjects: str, split: str, n: int, window: int, size: int, seed: int) -> dict:
    from navgym.rollouts import StreamingWindows

    ds = StreamingWindows(subjects, policy="mix", window=window, size=size, seed=seed, batch_size=64, split=split,
                          episodes_per_chunk=64, resident_subjects=8, swap_every=1)
    out = {"frames": [], "actions": [], "template_poses": []}
    got = 0
    for b in ds:
        for k in out:
            out[k].append(np.asarray(b[k]))
        got += len(b["frames"])
        if got >= n:
            break
    return {k: np.concatenate(v)[:n] for k, v in out.items()}


def cached_clips(cache: str, **kw) -> dict:
    path = os.path.join(cache, "clips_{subjects}_{split}_{n}_{window}_{size}_{seed}.npz".format(
        **{**kw, "subjects": kw["subjects"].replace(":", "")}))
    if not os.path.exists(path):
        data = probe_clips(**kw)
        atomic_path(path, lambda tmp: np.savez(tmp, **data))
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def targets(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 13) poses -> mirror-invariant centre (|x|, y, z) and normal products (N, 6)."""
    c = poses[:, :3].copy()
    c[:, 0] = np.abs(c[:, 0])
    n = poses[:, 3:12].reshape(-1, 3, 3)[:, :, 2]
    a, b, cc = n[:, 0], n[:, 1], n[:, 2]
    return c, np.stack([a * a, b * b, cc * cc, b * cc, np.abs(a * b), np.abs(a * cc)], 1)


def normal_from_products(p: np.ndarray) -> np.ndarray:
    a = np.sqrt(np.clip(p[:, 0], 0, None))
    b = np.sqrt(np.clip(p[:, 1], 0, None))
    c = np.sqrt(np.clip(p[:, 2], 0, None)) * np.where(p[:, 3] < 0, -1.0, 1.0)
    n = np.stack([a, b, c], 1)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)


def errors(pred_c, pred_p, poses) -> dict:
    c, _ = targets(poses)
    n = poses[:, 3:12].reshape(-1, 3, 3)[:, :, 2]
    m = n * np.array([-1.0, 1.0, 1.0])
    nh = normal_from_products(pred_p)
    cos = np.maximum(np.abs((nh * n).sum(1)), np.abs((nh * m).sum(1)))
    return {"centre_mm": float(np.linalg.norm(pred_c - c, axis=1).mean()),
            "normal_deg": float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())}


def ridge(xf, yf, xt, alphas=(1e-2, 1e-1, 1, 10, 100, 1000)) -> np.ndarray:
    """Standardised ridge; the penalty with the lowest error on the last 20 % of the fit rows."""
    mu, sd = xf.mean(0), xf.std(0) + 1e-6
    xf, xt = (xf - mu) / sd, (xt - mu) / sd
    ym = yf.mean(0)
    k = int(0.8 * len(xf))

    def solve(x, y, a):
        return np.linalg.solve(x.T @ x + a * len(x) * np.eye(x.shape[1]), x.T @ (y - ym))

    best = min(alphas, key=lambda a: ((xf[k:] @ solve(xf[:k], yf[:k], a) + ym - yf[k:]) ** 2).sum())
    return xt @ solve(xf, yf, best) + ym


@torch.no_grad()
def featurise(enc, clips: dict, batch: int = 64) -> dict:
    out = {k: [] for k in FEATURES}
    for i in range(0, len(clips["frames"]), batch):
        f = torch.from_numpy(clips["frames"][i:i + batch])
        a = torch.from_numpy(clips["actions"][i:i + batch]).float()
        b, t = f.shape[:2]
        per = enc.features(f.flatten(0, 1)).reshape(b, t, -1)
        out["context"].append(enc.clip_features(f, a))
        out["static"].append(torch.cat([per[:, -1], per.mean(1), a.flatten(1)], 1))
        out["single"].append(per[:, -1])
        h = enc.tokenizer.hidden(f[:, -1])
        out["tokenizer"].append(torch.nn.functional.adaptive_avg_pool2d(h, 4).flatten(1))
    return {k: torch.cat(v).double().numpy() for k, v in out.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--fit", type=int, default=1600, help="probe-fitting clips (train subjects)")
    p.add_argument("--test", type=int, default=800, help="scored clips (held-out test subjects)")
    p.add_argument("--subjects", default="synthetic:24")
    p.add_argument("--cache", default="runs/wm15/probe_cache")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/wm15/clip_probe.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows, data = [], {}
    for ckpt in a.checkpoints:
        t0 = time.perf_counter()
        enc = load_encoder(ckpt)
        key = (enc.cfg.window, enc.cfg.size)
        if key not in data:
            kw = dict(subjects=a.subjects, window=key[0], size=key[1])
            data[key] = (cached_clips(a.cache, split="train", n=a.fit, seed=101, **kw),
                         cached_clips(a.cache, split="test", n=a.test, seed=202, **kw))
        fit, test = data[key]
        ff, ft = featurise(enc, fit), featurise(enc, test)
        yc, yp = targets(fit["template_poses"][:, -1])
        row = {"checkpoint": ckpt, "method": enc.method, "seed": enc.seed,
               "train_config": vars(enc.train_config) if enc.train_config is not None else None}
        for k in FEATURES:
            row[k] = errors(ridge(ff[k], yc, ft[k]), ridge(ff[k], yp, ft[k]), test["template_poses"][:, -1])
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print({k: row[k] for k in ("checkpoint", *FEATURES)}, flush=True)
        write_json_atomic(a.out, {"command": " ".join(["python", *sys.argv]),
                                  "fit_clips": a.fit, "test_clips": a.test, "subjects": a.subjects, "rows": rows})


if __name__ == "__main__":
    main()
