"""Quick start: navigate the built-in MNI152 template and save what the agent sees.

    python examples/quickstart.py --steps 60 --out runs/quickstart.gif

Runs MRINav-v0 (no arguments: offline, real anatomy) with smoothly varying random actions,
prints the pose every few steps and writes a GIF of the slice beside its 3-view locator.
"""

import argparse

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np

import navgym  # noqa: F401  (registers MRINav-v0)
from navgym.files import atomic_path


def main(steps: int, out: str, seed: int):
    env = gym.make("MRINav-v0", render_mode="rgb_array")
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    action = np.zeros(7, np.float32)
    frames = [env.render()]
    for t in range(steps):
        action = np.clip(0.8 * action + 0.2 * rng.uniform(-1, 1, 7), -1, 1).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(env.render())
        if t % 10 == 0:
            c = np.array2string(info["center_mm"], precision=1)
            print(f"step {t:3d}  centre {c} mm  normal {np.array2string(info['rotation'][:, 2], precision=2)}"
                  f"  fov {info['fov_mm']:.0f} mm  obs {obs.shape} {obs.dtype}")
        if terminated or truncated:
            break
    atomic_path(out, lambda tmp: imageio.mimsave(tmp, frames, duration=0.1, loop=0))
    print(f"wrote {out} ({len(frames)} frames of {frames[0].shape})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="env steps (default: %(default)s)")
    p.add_argument("--out", default="runs/quickstart.gif", help="GIF to write (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="env and action seed (default: %(default)s)")
    a = p.parse_args()
    main(a.steps, a.out, a.seed)
