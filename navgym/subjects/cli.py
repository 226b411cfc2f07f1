"""``navgym-subjects``: write synthetic subjects to a BIDS-like folder (and optionally a picture).

    navgym-subjects --n 200 --seed 0 --out data/subjects [--jobs 2] [--spacing 1.0] [--figure data/subjects.png]

Seeds ``seed .. seed+n-1``; subjects already written (their sidecar exists) are skipped, so an
interrupted run resumes; a folder holding subjects generated with other settings (``--spacing``) is
refused.  ``participants.tsv`` lists id, contrast and split of every subject.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..configs import add_options, config_field, options_config, to_dict
from ..files import RunFolderError, differences, write_atomic, write_json_atomic
from .io import find_entries
from .pool import split_of
from .synthetic import SyntheticConfig, synthetic_id, synthetic_subject

__all__ = ["main", "generate"]


def _one(args) -> tuple[str, str, float]:
    """Generate and save one subject; returns (id, contrast, CPU seconds of the generation)."""
    seed, out, spacing = args
    t0 = time.process_time()
    subject = synthetic_subject(seed, SyntheticConfig(spacing=spacing))
    elapsed = time.process_time() - t0
    from .io import save_subject

    save_subject(subject, out, split=split_of(subject.subject_id))
    return subject.subject_id, subject.meta["contrast"], elapsed


def _done(out: Path, seed: int) -> bool:
    sid = synthetic_id(seed)
    return any((out / f"sub-{sid}" / "anat").glob(f"sub-{sid}_*.json"))


def generate(n: int, seed: int, out: str | Path, jobs: int = 1, spacing: float | None = None) -> list[float]:
    """Write subjects with seeds ``seed .. seed+n-1`` under ``out``; returns generation CPU seconds per new subject."""
    out = Path(out)
    _check_settings(out, SyntheticConfig(spacing=spacing))
    out.mkdir(parents=True, exist_ok=True)
    todo = [(s, out, spacing) for s in range(seed, seed + n) if not _done(out, s)]
    times = []
    bar = tqdm(total=len(todo), desc="subjects", unit="subj")
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(jobs) as pool:
            for _, _, dt in pool.map(_one, todo):
                times.append(dt)
                bar.update()
    else:
        for item in todo:
            times.append(_one(item)[2])
            bar.update()
    bar.close()
    _write_index(out)
    return times


def _check_settings(out: Path, cfg: SyntheticConfig) -> None:
    """Raise :class:`RunFolderError` if ``out`` holds synthetic subjects generated with another config."""
    want = to_dict(cfg)
    for sidecar in sorted(out.glob("sub-*/anat/sub-*_*.json")):
        record = json.loads(sidecar.read_text()).get("navgym", {})
        if record.get("generator") == "navgym.subjects.synthetic" and record.get("config") != want:
            raise RunFolderError(
                f"{out} holds subjects generated with other settings ({sidecar.parts[-3]}: "
                f"{'; '.join(differences(record.get('config') or {}, want))}); use a new --out, or the same settings "
                f"to add subjects")


def _write_index(out: Path) -> None:
    write_json_atomic(out / "dataset_description.json", {
        "Name": "navgym synthetic subjects (MNI152 2009 deformed)", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "navgym-subjects"}],
    })
    rows = ["participant_id\tcontrast\tsplit"]
    for e in find_entries(out):
        contrast = e.image.name.split("_")[-1].split(".")[0]
        rows.append(f"sub-{e.subject_id}\t{contrast}\t{split_of(e.subject_id)}")
    write_atomic(out / "participants.tsv", "\n".join(rows) + "\n")


@dataclass(frozen=True)
class SubjectsOptions:
    """``navgym-subjects`` options."""

    n: int = config_field(help="number of subjects")
    out: str = config_field(help="output folder (BIDS-like)")
    seed: int = config_field(0, "first seed (subject ids synth<seed>)")
    jobs: int = config_field(1, "worker processes")
    spacing: float | None = config_field(None, "force isotropic voxels of this size (mm)", show="drawn per subject")
    figure: str | None = config_field(None, "also write a PNG of the first few subjects with landmarks")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="navgym-subjects", description=__doc__.split("\n")[0])
    add_options(p, SubjectsOptions)
    a = options_config(SubjectsOptions, p.parse_args(argv))
    if a.n < 1:
        p.error("--n must be >= 1")
    try:
        times = generate(a.n, a.seed, a.out, a.jobs, a.spacing)
    except RunFolderError as e:
        p.error(str(e))
    if times:
        print(json.dumps({"generated": len(times), "median_cpu_s_per_subject": round(statistics.median(times), 3),
                          "mean_cpu_s_per_subject": round(statistics.mean(times), 3), "out": a.out}))
    if a.figure:
        from .figure import subjects_figure
        from .pool import load_subjects

        subjects_figure(load_subjects(a.out)[:4], a.figure)
        print(f"wrote {a.figure}")


if __name__ == "__main__":
    main()
