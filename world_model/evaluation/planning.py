"""Latent planning: reach a goal slice by CEM over action sequences in a world model's latent space.

Any model with this small protocol can plan (:class:`LatentModel`):

* ``encode(frames)``: (B, H, W) uint8 slices -> (B, ...) latents (torch);
* ``predict(latents, actions)``: history (B, T, ...) and the normalised actions (B, T, 7) taken
  after each of those frames -> the latent of the frame after the last action (B, ...).

Episodes (see :func:`run_planning`): a start pose drawn like the env's reset on a held-out
subject; the goal pose is the start moved by ``goal_steps`` random actions (zoom fixed), so
it is reachable; the agent sees the start and goal slices and acts for ``steps`` steps in the
real :class:`navgym.simulator.Navigator`.  Model predictive control: at every step CEM
optimises a ``horizon``-step action sequence against the cost "smallest mean squared latent
distance to the goal over the imagined steps", and the first action is executed.
Reported: final centre distance to the goal pose (mm, subject space), final angle between
the slice planes (degrees, 0..90), success (both within ``success_mm`` / ``success_deg``), and the same
for the start pose (no movement) and for uniformly random actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from navgym.simulator import NavConfig, Navigator
from navgym.subjects import Subject
from navgym.geometry import apply_actions, plane_angle_deg
from navgym.tasks import landmark_distance, make_task

__all__ = ["LatentModel", "PlanConfig", "TruePoseModel", "cem_plan", "run_planning", "pose_errors"]


class LatentModel(Protocol):
    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...

    def predict(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class PlanConfig:
    """Latent-planning budget (the same for every model).

    episodes : start/goal pairs (spread over the subjects round-robin).
    steps : real env steps per episode.  goal_steps : random actions from start to goal.
    horizon, population, elites, iterations, init_std : CEM over normalised actions.
    context : most recent real latents (and the actions between them) given to ``predict``.
    success_mm, success_deg : success thresholds on the final pose error.
    size : (H, W) slice pixels (the model's training size).  seed : start/goal/CEM randomness.
    """

    episodes: int = 8
    steps: int = 6
    goal_steps: int = 3
    horizon: int = 2
    population: int = 32
    elites: int = 4
    iterations: int = 2
    init_std: float = 0.5
    context: int = 2
    success_mm: float = 5.0
    success_deg: float = 5.0
    size: tuple[int, int] = (64, 64)
    seed: int = 0

    def __post_init__(self):
        h, w = (self.size, self.size) if np.isscalar(self.size) else tuple(self.size)
        object.__setattr__(self, "size", (int(h), int(w)))
        for name in ("episodes", "steps", "goal_steps", "horizon", "population", "elites", "iterations", "context"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.elites > self.population:
            raise ValueError("elites must be <= population")



def _actions_6(a: np.ndarray | torch.Tensor):
    """Zero the zoom component (planning and goals move and turn only)."""
    a[..., 6] = 0
    return a


@torch.no_grad()
def cem_plan(
    model: LatentModel,
    history: torch.Tensor,
    past_actions: torch.Tensor,
    goal: torch.Tensor,
    cfg: PlanConfig,
    gen: torch.Generator,
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """CEM for B episodes at once.

    history (B, T, ...) real latents, past_actions (B, T - 1, 7) between them, goal (B, ...).
    Returns the optimised mean action sequence (B, horizon, 7) in [-1, 1] (zoom 0).
    """
    b, p, h = history.shape[0], cfg.population, cfg.horizon
    mu = torch.zeros(b, h, 7) if mean is None else mean.clone()
    std = torch.full((b, h, 7), cfg.init_std)
    hist = history.repeat_interleave(p, 0)  # (B*P, T, ...)
    past = past_actions.repeat_interleave(p, 0)
    goal_p = goal.repeat_interleave(p, 0).flatten(1)
    for _ in range(cfg.iterations):
        cand = (mu[:, None] + std[:, None] * torch.randn(b, p, h, 7, generator=gen)).clamp(-1, 1)
        cand = _actions_6(cand)
        cand[:, 0] = mu  # keep the current mean in the population
        seq = cand.reshape(b * p, h, 7)
        lat, acts = hist, past
        cost = torch.full((b * p,), float("inf"))
        for k in range(h):
            acts = torch.cat([acts, seq[:, k : k + 1]], 1)
            nxt = model.predict(lat, acts)
            cost = torch.minimum(cost, (nxt.flatten(1) - goal_p).pow(2).mean(1))
            lat = torch.cat([lat, nxt[:, None]], 1)
        elite = cost.reshape(b, p).topk(cfg.elites, largest=False).indices  # (B, E)
        chosen = torch.gather(cand, 1, elite[:, :, None, None].expand(-1, -1, h, 7))
        mu, std = chosen.mean(1), chosen.std(1) + 1e-3
    return mu


class TruePoseModel:
    """A perfect latent model whose latent is the true pose: the planner's ceiling for this CEM budget.

    Latent (B, 12): centre / ``mm`` and the rotation matrix / ``rad`` (row-major), so ``mm``
    millimetres weigh like ``rad`` radians of turn.  ``predict`` applies the physical action with
    :func:`navgym.geometry.apply_actions` (without clamping to the volume).  :func:`run_planning`
    gives it the true poses instead of encoding frames.
    """

    def __init__(self, scale: np.ndarray, mm: float = 5.0, deg: float = 5.0):
        self.scale = np.asarray(scale, np.float64)
        self.mm, self.rad = mm, np.deg2rad(deg)

    def latent(self, centers: np.ndarray, rotations: np.ndarray) -> torch.Tensor:
        c = torch.as_tensor(np.asarray(centers) / self.mm, dtype=torch.float32)
        return torch.cat([c, torch.as_tensor(np.asarray(rotations) / self.rad, dtype=torch.float32).flatten(1)], 1)

    def predict(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        z = latents[:, -1].double().numpy()
        centers, rotations = z[:, :3] * self.mm, (z[:, 3:] * self.rad).reshape(-1, 3, 3)
        c, r, _ = apply_actions(centers, rotations, np.ones(len(z)), actions[:, -1].double().numpy() * self.scale)
        return self.latent(c, r)


def pose_errors(centers, rotations, goal_centers, goal_rotations) -> tuple[np.ndarray, np.ndarray]:
    """(N,) centre distance (mm) and angle between the slice planes (degrees, 0..90), with
    :func:`navgym.tasks.landmark_distance` and :func:`navgym.geometry.plane_angle_deg`."""
    angle = plane_angle_deg(rotations[:, :, 2], goal_rotations[:, :, 2])
    return landmark_distance(centers, goal_centers), angle


def _episodes(subjects: Sequence[Subject], cfg: PlanConfig) -> tuple[Navigator, dict]:
    """A Navigator at the start poses and the goal poses/frames (deterministic in cfg.seed)."""
    nav_cfg = NavConfig(size=cfg.size)
    rng = np.random.default_rng(cfg.seed)
    nav = Navigator(cfg.episodes, subjects, make_task("explore"), nav_cfg)
    goal = Navigator(cfg.episodes, subjects, make_task("explore"), nav_cfg)
    for i in range(cfg.episodes):
        nav.reset(i, rng, subject_index=i % len(subjects))
        goal.reset(i, np.random.default_rng(0), subject_index=i % len(subjects))
    goal.centers, goal.rotations, goal.fovs = nav.centers.copy(), nav.rotations.copy(), nav.fovs.copy()
    for _ in range(cfg.goal_steps):
        goal.step(_actions_6(rng.uniform(-1, 1, (cfg.episodes, 7))))
    return nav, {"frames": goal.render(), "centers": goal.centers.copy(), "rotations": goal.rotations.copy()}


def _summary(nav: Navigator, goal: dict, cfg: PlanConfig) -> dict:
    d, a = pose_errors(nav.centers, nav.rotations, goal["centers"], goal["rotations"])
    ok = (d <= cfg.success_mm) & (a <= cfg.success_deg)
    return {
        "success_rate": float(ok.mean()),
        "final_dist_mm": float(d.mean()),
        "final_angle_deg": float(a.mean()),
        "per_episode_dist_mm": d.round(3).tolist(),
        "per_episode_angle_deg": a.round(3).tolist(),
    }


def run_planning(
    subjects: Sequence[Subject],
    cfg: PlanConfig,
    model: LatentModel | None = None,
    policy: str = "cem",
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Run ``cfg.episodes`` start -> goal episodes with ``policy`` in ``cem`` (needs ``model``),
    ``true_pose`` (CEM with :class:`TruePoseModel`, the true poses), ``random`` (uniform actions, zoom 0)
    or ``stay`` (no movement).  Returns summary figures."""
    if policy not in ("cem", "true_pose", "random", "stay"):
        raise ValueError(f"unknown policy {policy!r}; choose cem, true_pose, random or stay")
    if policy == "cem" and model is None:
        raise ValueError("the cem policy needs a latent model")
    nav, goal = _episodes(subjects, cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    true_pose = TruePoseModel(nav.scale) if policy == "true_pose" else None
    encode = (lambda: true_pose.latent(nav.centers, nav.rotations)) if true_pose else (  # noqa: E731
        lambda: model.encode(torch.from_numpy(nav.render())))
    if true_pose:
        model, policy = true_pose, "cem"
    if policy == "cem":
        with torch.no_grad():
            goal_z = (true_pose.latent(goal["centers"], goal["rotations"]) if true_pose
                      else model.encode(torch.from_numpy(goal["frames"])))
            hist = encode()[:, None]
        past = torch.zeros(cfg.episodes, 0, 7)  # actions between the frames in hist
        mean = None
    for step in range(cfg.steps if policy != "stay" else 0):
        if policy == "random":
            act = _actions_6(rng.uniform(-1, 1, (cfg.episodes, 7)))
        else:
            plan = cem_plan(model, hist, past, goal_z, cfg, gen, mean)
            act = plan[:, 0].numpy().astype(np.float64)
            mean = torch.cat([plan[:, 1:], torch.zeros(cfg.episodes, 1, 7)], 1)  # warm start, shifted
        nav.step(act)
        if policy == "cem":
            with torch.no_grad():
                z = encode()
            hist = torch.cat([hist, z[:, None]], 1)[:, -cfg.context :]
            past = torch.cat([past, torch.as_tensor(act, dtype=torch.float32)[:, None]], 1)
            past = past[:, past.shape[1] - (hist.shape[1] - 1) :]
        if progress is not None:
            progress(step)
    return _summary(nav, goal, cfg)
