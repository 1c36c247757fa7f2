"""One table from several `reid-benchmark` folders that share a baseline (`--baseline-from`): each manifest against it.

Each folder's metrics.json holds its seeds' runs; over the seeds every folder ran, this prints the baseline once, then one row per folder's
augmented arm (mean ± standard deviation over seeds, percent) and its paired difference from the baseline
(within each seed, then mean ± standard deviation, points), with each seed's training minutes, and the paired
mAP difference's 95% Student t interval over the seeds with the smallest difference the run could detect (80%
power). Refuses folders whose baselines differ (then they are not one comparison).

Usage:
  python experiments/reid_table.py rb/bench-ungated rb/bench-gated --name ungated --name "gated (best 4 of 12)"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from reid_augment.reid.stats import describe, paired_interval

COLUMNS = ("rank1", "rank5", "mAP", "mINP")


def _pm(values: list[float], points: bool = False) -> str:
    mean, std = 100 * np.mean(values), 100 * np.std(values, ddof=1) if len(values) > 1 else None
    text = f"{mean:+.1f}" if points else f"{mean:.1f}%"
    return text if std is None else f"{text} ± {std:.1f}"


def table(folders: list[Path], names: list[str]) -> str:
    metrics = [json.loads((f / "metrics.json").read_text()) for f in folders]
    seeds = [s for s in metrics[0]["seeds"] if all(s in m["seeds"] for m in metrics)]  # Those every folder ran.
    base = {s: metrics[0]["runs"][str(s)]["baseline"] for s in seeds}
    for folder, m in zip(folders[1:], metrics[1:]):
        theirs = {s: m["runs"][str(s)]["baseline"] for s in seeds}
        if not seeds or any(theirs[s]["history"] != base[s]["history"] for s in seeds):
            raise SystemExit(f"{folder}: its baselines are not {folders[0]}'s; run it with --baseline-from")
    minutes = lambda runs: " / ".join(f"{r['train_seconds'] / 60:.1f}" for r in runs)  # noqa: E731
    head = ("| arm | train images (generated) | " + " | ".join(("Rank-1", "Rank-5", "mAP", "mINP"))
            + " | training minutes per seed | mAP difference, 95% CI (detectable) |")
    rows = [head, "|" + "---|" * (len(COLUMNS) + 4),
            f"| baseline | {base[seeds[0]]['train_images']:,} (0) | "
            + " | ".join(_pm([base[s][k] for s in seeds]) for k in COLUMNS) + f" | {minutes(base.values())} | |"]
    for name, m in zip(names, metrics):
        aug = {s: m["runs"][str(s)]["augmented"] for s in seeds}
        first = aug[seeds[0]]
        rows.append(f"| {name} | {first['train_images']:,} ({first['generated_images']:,}) | "
                    + " | ".join(_pm([aug[s][k] for s in seeds]) for k in COLUMNS) + f" | {minutes(aug.values())} | |")
        ci = describe(paired_interval([aug[s]["mAP"] - base[s]["mAP"] for s in seeds]))
        rows.append(f"| {name} minus baseline (paired) | | "
                    + " | ".join(_pm([aug[s][k] - base[s][k] for s in seeds], points=True) for k in COLUMNS)
                    + f" | | {ci} |")
    per_seed = [f"seed {s}: baseline {base[s]['mAP']:.1%}, " + ", ".join(
        f"{name} {m['runs'][str(s)]['augmented']['mAP']:.1%}" for name, m in zip(names, metrics)) for s in seeds]
    return "\n".join(rows) + f"\n\nSeeds {', '.join(map(str, seeds))}. mAP per seed: {'; '.join(per_seed)}.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="reid-benchmark -o folders; the first trained the baseline.")
    parser.add_argument("--name", action="append", help="The name of a folder's augmented arm, once per folder "
                        "(default: the folder names).")
    args = parser.parse_args()
    names = args.name or [f.name for f in args.folders]
    if len(names) != len(args.folders):
        raise SystemExit(f"--name: {len(names)} names for {len(args.folders)} folders")
    print(table(args.folders, names))


if __name__ == "__main__":
    main()
