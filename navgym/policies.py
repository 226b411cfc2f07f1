"""Navigation policies: seeded, batched action generators for MRINav (and for rollout datasets).

Every policy follows one protocol:

* ``reset(seed)``: reseed its own ``np.random.Generator`` and forget all per-env state.
* ``act_batch(obs, infos) -> (N, 7) float32`` in [-1, 1] (the env's normalised action units:
  translate u, v, n; rotate about u, v, n; zoom).  ``infos`` is the vector env's info dict
  (arrays with a leading N axis: ``center_mm`` (N, 3) world mm, ``rotation`` (N, 3, 3) columns
  u, v, n, ``fov_mm`` (N,), and for oracles ``target``); ``obs`` may be None for every policy here.
* ``act(obs, info) -> (7,) float32``: the same for one env (``info`` as the single env gives it).
* ``episode_start(mask)``: forget the state of the envs in ``mask`` (call it when a vector env
  auto-resets them; ``reset`` does it for all).

Per-env state is sized on the first call after ``reset`` (N from ``infos`` or ``obs``); the
random stream is drawn for all N envs at once, so a policy with the same seed and the same N
gives the same actions.

Behaviours: ``random`` (uniform), ``smooth`` (Ornstein-Uhlenbeck), ``sweep`` (along the normal),
``orbit`` (rotation about an in-plane axis), ``zoom`` (in and out), ``lookaround`` (rotations
about a fixed centre), ``mix`` (a behaviour drawn per segment) and ``oracle`` (ground-truth
controller for the ``landmark`` and ``plane`` tasks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Policy",
    "UniformRandom",
    "SmoothRandom",
    "Sweep",
    "Orbit",
    "Zoom",
    "LookAround",
    "Mixture",
    "Oracle",
    "POLICIES",
    "make_policy",
    "action_autocorrelation",
]


class Policy:
    """Base class: seeded, batched; subclasses implement ``_start(idx)`` and ``_act(infos)``."""

    name = "policy"

    def __init__(self, seed=None):
        self.num = 0
        self.reset(seed)

    def reset(self, seed=None) -> None:
        """Reseed (int, SeedSequence or None) and forget every env's state."""
        self.rng = np.random.default_rng(seed)
        self.num = 0

    def episode_start(self, mask) -> None:
        """Restart the behaviour of the envs where ``mask`` (N,) bool is true (no-op before the first action)."""
        mask = np.asarray(mask, bool).reshape(-1)
        if self.num and len(mask) != self.num:
            raise ValueError(f"episode_start: mask has {len(mask)} entries but the policy acts for {self.num} envs")
        idx = np.flatnonzero(mask)
        if self.num and len(idx):
            self._start(idx)

    def act(self, obs, info: dict) -> np.ndarray:
        """(7,) float32 action for one env (``info``: the single env's info dict)."""
        infos = {k: np.asarray(v)[None] for k, v in (info or {}).items() if k != "subject_id"}
        return self.act_batch(None if obs is None else np.asarray(obs)[None], infos)[0]

    def act_batch(self, obs, infos: dict | None) -> np.ndarray:
        """(N, 7) float32 actions in [-1, 1]; a new N restarts every env (as after ``reset``, without reseeding)."""
        n = _batch_size(obs, infos)
        if n != self.num:
            self.num = n
            self._allocate(n)
            self._start(np.arange(n))
        a = self._act(infos or {})
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    # --- for subclasses ---------------------------------------------------------------
    def _allocate(self, n: int) -> None:
        pass

    def _start(self, idx: np.ndarray) -> None:
        pass

    def _act(self, infos: dict) -> np.ndarray:
        raise NotImplementedError


def _batch_size(obs, infos) -> int:
    for key in ("center_mm", "fov_mm", "target"):
        if infos and key in infos:
            return len(np.asarray(infos[key]))
    if obs is not None:
        return len(obs)
    raise ValueError("cannot tell the batch size: give obs or infos with 'center_mm'")


@dataclass
class _Params:
    """Shared knobs of the scripted behaviours (normalised action units per step)."""

    min_speed: float = 0.3
    max_speed: float = 1.0
    noise: float = 0.05


class UniformRandom(Policy):
    """Independent uniform actions in [-1, 1]^7 (``scale`` shrinks them)."""

    name = "random"

    def __init__(self, seed=None, scale: float = 1.0):
        self.scale = float(scale)
        super().__init__(seed)

    def _act(self, infos):
        return self.scale * self.rng.uniform(-1.0, 1.0, (self.num, 7))


class SmoothRandom(Policy):
    """Ornstein-Uhlenbeck actions: ``x += theta * (0 - x) + sigma * N(0, 1)`` per step, clipped to [-1, 1].

    Stationary std ~ sigma / sqrt(2 theta) (0.55 with the defaults); correlation time 1/theta steps.
    """

    name = "smooth"

    def __init__(self, seed=None, theta: float = 0.15, sigma: float = 0.3):
        if not 0 < theta <= 1 or sigma < 0:
            raise ValueError("need 0 < theta <= 1 and sigma >= 0")
        self.theta, self.sigma = float(theta), float(sigma)
        super().__init__(seed)

    def _allocate(self, n):
        self.x = np.zeros((n, 7))

    def _start(self, idx):
        self.x[idx] = self.rng.uniform(-0.5, 0.5, (len(idx), 7))

    def _act(self, infos):
        self.x += -self.theta * self.x + self.sigma * self.rng.normal(size=self.x.shape)
        np.clip(self.x, -1.0, 1.0, out=self.x)
        return self.x.copy()


class _Segmented(Policy):
    """A behaviour whose parameters are redrawn per segment of ``segment`` = (min, max) steps."""

    def __init__(self, seed=None, segment=(16, 48), params: _Params | None = None):
        lo, hi = segment
        if not 1 <= lo <= hi:
            raise ValueError(f"segment must be (min, max) steps with 1 <= min <= max, got {segment}")
        self.segment, self.p = (int(lo), int(hi)), params or _Params()
        super().__init__(seed)

    def _allocate(self, n):
        self.left = np.zeros(n, np.int64)
        self.a = np.zeros((n, 7))

    def _start(self, idx):
        self.left[idx] = self.rng.integers(self.segment[0], self.segment[1] + 1, len(idx))
        self._draw(idx)

    def _speed(self, k):
        return self.rng.uniform(self.p.min_speed, self.p.max_speed, k) * self.rng.choice([-1.0, 1.0], k)

    def _act(self, infos):
        done = np.flatnonzero(self.left <= 0)
        if len(done):
            self._start(done)
        self.left -= 1
        out = self._shape()
        return out + self.p.noise * self.rng.normal(size=out.shape)

    def _draw(self, idx):
        raise NotImplementedError

    def _shape(self) -> np.ndarray:
        return self.a.copy()


class Sweep(_Segmented):
    """Translate along the slice normal at a constant speed per segment (a through-plane sweep)."""

    name = "sweep"

    def _draw(self, idx):
        self.a[idx] = 0.0
        self.a[idx, 2] = self._speed(len(idx))


class Orbit(_Segmented):
    """Turn about an in-plane axis (direction phi in the u-v plane) at a constant rate per segment."""

    name = "orbit"

    def _draw(self, idx):
        phi = self.rng.uniform(0, 2 * np.pi, len(idx))
        w = self._speed(len(idx))
        self.a[idx] = 0.0
        self.a[idx, 3], self.a[idx, 4] = w * np.cos(phi), w * np.sin(phi)


class Zoom(_Segmented):
    """Zoom in then out (a triangle wave of the field of view) with a per-segment rate and phase."""

    name = "zoom"

    def _allocate(self, n):
        super()._allocate(n)
        self.t = np.zeros(n, np.int64)
        self.half = np.ones(n, np.int64)

    def _draw(self, idx):
        self.a[idx] = 0.0
        self.a[idx, 6] = self._speed(len(idx))
        self.half[idx] = self.rng.integers(4, 13, len(idx))
        self.t[idx] = 0

    def _shape(self):
        out = self.a.copy()
        flip = (self.t // self.half) % 2 == 1
        out[flip, 6] *= -1
        self.t += 1
        return out


class LookAround(_Segmented):
    """Stay at a point and look around it: smooth random rotations about u, v, n, no translation."""

    name = "lookaround"

    def _draw(self, idx):
        self.a[idx] = 0.0
        d = self.rng.normal(size=(len(idx), 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        self.a[idx, 3:6] = d * np.abs(self._speed(len(idx)))[:, None]

    def _shape(self):
        # the turning axis wanders slowly so the view sweeps a cone rather than a circle
        self.a[:, 3:6] += 0.1 * self.rng.normal(size=(self.num, 3))
        return self.a.copy()


class Mixture(Policy):
    """Per env, a behaviour drawn per segment (``segment`` = (min, max) steps) from ``behaviours``
    with probabilities ``weights`` (uniform by default)."""

    name = "mix"
    DEFAULT = ("random", "smooth", "sweep", "orbit", "zoom", "lookaround")

    def __init__(self, seed=None, behaviours=DEFAULT, weights=None, segment=(8, 32)):
        unknown = [b for b in behaviours if b not in POLICIES or b in ("mix", "oracle")]
        if not behaviours or unknown:
            raise ValueError(f"mixture behaviours must be among {sorted(set(POLICIES) - {'mix', 'oracle'})}, got {unknown or behaviours}")
        w = np.ones(len(behaviours)) if weights is None else np.asarray(weights, float)
        if w.shape != (len(behaviours),) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights must be non-negative, one per behaviour, not all zero")
        self.behaviour_names, self.weights = tuple(behaviours), w / w.sum()
        lo, hi = segment
        if not 1 <= lo <= hi:
            raise ValueError(f"segment must be (min, max) steps with 1 <= min <= max, got {segment}")
        self.segment = (int(lo), int(hi))
        super().__init__(seed)

    def reset(self, seed=None):
        super().reset(seed)
        children = self.rng.bit_generator.seed_seq.spawn(len(self.behaviour_names))
        # the sub-behaviours' own segments are longer than ours: we decide when to switch
        self.parts = [
            POLICIES[b](seed=c, **({"segment": (1000, 1000)} if b not in ("random", "smooth") else {}))
            for b, c in zip(self.behaviour_names, children)
        ]

    def _allocate(self, n):
        self.choice = np.zeros(n, np.int64)
        self.left = np.zeros(n, np.int64)
        for part in self.parts:  # sized anew (and started) on their next act_batch
            part.num = 0

    def _start(self, idx):
        self.choice[idx] = self.rng.choice(len(self.parts), len(idx), p=self.weights)
        self.left[idx] = self.rng.integers(self.segment[0], self.segment[1] + 1, len(idx))
        mask = np.zeros(self.num, bool)
        mask[idx] = True
        for part in self.parts:
            part.episode_start(mask)

    def _act(self, infos):
        done = np.flatnonzero(self.left <= 0)
        if len(done):
            self._start(done)
        self.left -= 1
        actions = np.stack([p.act_batch(None, infos) for p in self.parts])  # (B, N, 7)
        return actions[self.choice, np.arange(self.num)]

    @property
    def behaviour(self) -> np.ndarray:
        """(N,) index into ``behaviour_names`` of each env's current behaviour."""
        return self.choice.copy()


class Oracle(Policy):
    """Ground-truth controller for the ``landmark`` and ``plane`` tasks (the RL upper bound).

    Reads the pose from ``infos`` (``center_mm``, ``rotation``) and the task target from
    ``infos["target"]``: (3,) landmark world mm -> drive the slice centre onto it; (6,) plane
    (point mm, unit normal) -> turn the normal onto the plane's (the nearer orientation) and
    translate the centre onto the plane.  Steps are the largest the action bounds allow, so it
    converges in about (distance / max_translation_mm + angle / max_rotation_deg) steps.

    max_translation_mm, max_rotation_deg : the env's action scale (NavConfig defaults 5 mm, 5 deg).
    """

    name = "oracle"

    def __init__(self, seed=None, max_translation_mm: float = 5.0, max_rotation_deg: float = 5.0):
        if max_translation_mm <= 0 or max_rotation_deg <= 0:
            raise ValueError("the oracle needs max_translation_mm > 0 and max_rotation_deg > 0")
        self.max_mm, self.max_deg = float(max_translation_mm), float(max_rotation_deg)
        super().__init__(seed)

    def _act(self, infos):
        for key in ("center_mm", "rotation", "target"):
            if key not in infos:
                raise KeyError(f"the oracle needs infos[{key!r}] (the env's info carries it for landmark/plane tasks)")
        c = np.asarray(infos["center_mm"], float).reshape(self.num, 3)
        r = np.asarray(infos["rotation"], float).reshape(self.num, 3, 3)
        target = np.asarray(infos["target"], float).reshape(self.num, -1)
        out = np.zeros((self.num, 7))
        if target.shape[1] == 3:
            move = target - c
        elif target.shape[1] == 6:
            point, m = target[:, :3], target[:, 3:]
            n = r[:, :, 2]
            m = m * np.where(np.einsum("ni,ni->n", n, m) < 0, -1.0, 1.0)[:, None]
            move = -np.einsum("ni,ni->n", c - point, m)[:, None] * m  # onto the plane, straight
            axis = np.cross(n, m)
            sin = np.linalg.norm(axis, axis=1)
            angle = np.degrees(np.arctan2(sin, np.einsum("ni,ni->n", n, m)))
            rotvec = np.where(sin[:, None] > 1e-12, axis / np.maximum(sin, 1e-12)[:, None], 0.0) * angle[:, None]
            local = np.einsum("nji,nj->ni", r, rotvec) / self.max_deg  # world -> plane frame
            out[:, 3:6] = local / np.maximum(1.0, np.abs(local).max(1, keepdims=True))
        else:
            raise ValueError(f"the oracle solves landmark (target (3,)) and plane (target (6,)) tasks, got target shape {target.shape[1:]}")
        local = np.einsum("nji,nj->ni", r, move) / self.max_mm
        out[:, :3] = local / np.maximum(1.0, np.abs(local).max(1, keepdims=True))
        return out


POLICIES = {
    "random": UniformRandom,
    "smooth": SmoothRandom,
    "sweep": Sweep,
    "orbit": Orbit,
    "zoom": Zoom,
    "lookaround": LookAround,
    "mix": Mixture,
    "oracle": Oracle,
}


def make_policy(name: str, seed=None, **kwargs) -> Policy:
    """A policy by name (``random``, ``smooth``, ``sweep``, ``orbit``, ``zoom``, ``lookaround``, ``mix``, ``oracle``)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose from {sorted(POLICIES)}")
    return POLICIES[name](seed=seed, **kwargs)


def action_autocorrelation(actions: np.ndarray) -> float:
    """Lag-1 autocorrelation of actions (E, T, 7) within each episode, pooled over episodes and averaged over
    the components that vary: ~0 when an action cannot be predicted from the one before (``random``),
    near 1 for smooth behaviours."""
    a = np.asarray(actions, np.float64)
    if a.ndim != 3 or a.shape[1] < 2:
        raise ValueError(f"actions must be (episodes, steps >= 2, 7), got shape {a.shape}")
    a = a - a.mean((0, 1))
    num = (a[:, 1:] * a[:, :-1]).sum((0, 1))
    den = np.sqrt((a[:, 1:] ** 2).sum((0, 1)) * (a[:, :-1] ** 2).sum((0, 1)))
    ok = den > 1e-12
    return float((num[ok] / den[ok]).mean()) if ok.any() else float("nan")
