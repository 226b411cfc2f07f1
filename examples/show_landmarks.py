"""Draw the built-in landmarks on the MNI152 template (writes runs/landmarks.png; the docs' figure:
``python examples/show_landmarks.py --out docs/landmarks.png``).

Each landmark gets a panel: the three canonical slices through it, with a cross at the
landmark, so its placement can be checked by eye.
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from navgym import SlicePose, render_slice  # noqa: E402
from navgym.anatomy import TEMPLATE_LANDMARKS, load_template  # noqa: E402
from navgym.files import atomic_path  # noqa: E402


def main(out: str, fov: float = 80.0, size: int = 160):
    vol = load_template()
    names = list(TEMPLATE_LANDMARKS)
    fig, axes = plt.subplots(len(names), 3, figsize=(7.5, 2.5 * len(names)))
    for row, name in enumerate(names):
        xyz = TEMPLATE_LANDMARKS[name]
        for col, view in enumerate(("sagittal", "coronal", "axial")):
            img = render_slice(vol, SlicePose.canonical(view, xyz, fov), (size, size))
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.plot([size / 2 - 0.5], [size / 2 - 0.5], "r+", ms=14, mew=1.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"{name}\n{tuple(float(c) for c in xyz)}", fontsize=8)
            if row == 0:
                ax.set_title(view, fontsize=9)
    fig.tight_layout()
    atomic_path(out, lambda tmp: fig.savefig(tmp, dpi=80))
    print(f"wrote {out}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/landmarks.png", help="PNG to write (default: %(default)s)")
    main(p.parse_args().out)
