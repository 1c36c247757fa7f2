"""One table for an equal-time A/B of generator designs: each arm a `quality_run.py` run, scored on the same pairs.

Where compute is short a design must win at the budget it will get, not at 150 steps. Each arm is a
`experiments/quality_run.py` run with wall-clock minutes per stage (--rec-minutes, --ref-minutes), or with steps
in the ratio of the designs' measured step costs, so every arm trains for the same time and a costlier design
takes fewer steps; arms may run side by side with --threads 1 each (then the same interference hits both). Every
arm is scored by `evaluate` on the same held-out pairs of the validation half (500 of persons 0644-0693 sampled
with seed 0 on cuhk03-market; the report half is the model card's): SSIM, mask-SSIM, pooled PCKh, edge energy and,
where the arms were run with --reid-model, identity retention, beside copying the source and the real targets.
This script reads the arms' quality_run.json, its report's metrics.json and pairs.csv (each arm's PCKh against
the first arm's on the same pairs, with a paired bootstrap interval) and run/stats.jsonl (G_rec's training L1
over its last logged steps), and prints the markdown table with each arm's command.

Usage:
  python experiments/quality_run.py --out ab/base --threads 1 --rec-minutes 40 --ref-minutes 25 &
  python experiments/quality_run.py --out ab/pose-decoder --threads 1 --rec-minutes 40 --ref-minutes 25 \\
      --set model.pose_to_decoder=true &
  wait; python experiments/design_ab.py ab/base ab/pose-decoder
  python experiments/design_ab.py ab/float32 ab/bf16 --losses   # also the training L1 of every logged step
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from reid_augment.pckh import pckh_counts
from reid_augment.poses import read_poses
from reid_augment.weights import read_metadata


def table(arms: list[Path]) -> str:
    rows, commands = [], []
    for i, arm in enumerate(arms):
        run = json.loads((arm / "quality_run.json").read_text())
        report = Path(run.get("report", arm / "report"))
        metrics = json.loads((report / "metrics.json").read_text())
        scores = pd.read_csv(report / "pairs.csv")  # Per pair, in the order every arm scored them.
        pckh = scores["pckh"]
        if i == 0:
            reference, first = metrics, pckh
            joints = _target_joints(scores["to"], Path(run["data"]) / "annotations-test.csv")
        elif Path(metrics["pairs"]).read_bytes() != Path(reference["pairs"]).read_bytes():
            raise SystemExit(f"{arm}: scored on other pairs than {arms[0]}; an A/B needs the same pairs")
        m = run["model"]
        gain = _paired_gain(pckh, first, joints) if i else "-"
        rows.append(f"| {arm.name} | {run['steps'][0]:,} + {run['steps'][1]:,} | {run['train_minutes']} | "
                    f"{_last_rec_l1(arm)} | {m['ssim']:.3f} | {m['mask_ssim']:.3f} | {m['pckh']:.3f} | {gain} | "
                    f"{_fmt(m.get('edge_energy'))} | {_fmt(m.get('identity_retention'))} |")
        commands.append(f"    {read_metadata(run['generator'])['command']}")  # The model card's.
    copy, ceiling = reference["baseline"], reference["real_target"]["pckh"]
    identity = reference.get("identity") or {}
    lines = [f"| arm | steps (rec + ref) | train minutes | last rec L1 | SSIM | mask-SSIM | PCKh | PCKh minus "
             f"{arms[0].name} (95% CI) | edge energy | identity retention |", "|---" * 10 + "|", *rows,
             f"| copy the source | - | - | - | {copy['ssim']:.3f} | {copy['mask_ssim']:.3f} | {copy['pckh']:.3f} | | "
             f"{_fmt(copy.get('edge_energy'))} | {'1.00' if identity else '-'} |",
             f"| real target (ceiling) | - | - | - | 1.000 | 1.000 | {ceiling:.3f} | | 1.00 | "
             f"{_fmt(identity.get('real_target_retention'))} |"]
    return "\n".join(lines) + f"\n\n{reference['num_pairs']} held-out pairs. Commands:\n\n" + "\n".join(commands) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _target_joints(targets: pd.Series, annotations: Path) -> np.ndarray:
    """Each pair's PCKh denominator: its target's joints, 0 where the target has no head box (not counted)."""
    target = read_poses(annotations).lookup(targets)
    return pckh_counts(target, target)[1]


def _paired_gain(pckh: pd.Series, first: pd.Series, joints: np.ndarray, draws: int = 2000) -> str:
    """Pooled PCKh of an arm minus the first arm's, with a 95% bootstrap interval over the shared pairs.

    Both arms' per-pair PCKh share the denominator (the target's joints), so the pooled difference is
    sum(joints * (a - b)) / sum(joints), and resampling pairs keeps each pair's two scores together."""
    diff = np.nan_to_num((pckh.to_numpy() - first.to_numpy()) * joints)
    pick = np.random.default_rng(0).integers(0, len(diff), (draws, len(diff)))
    boot = diff[pick].sum(1) / joints[pick].sum(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return f"{diff.sum() / joints.sum():+.3f} ({low:+.3f} to {high:+.3f})"


def _rec_l1(arm: Path) -> dict[int, float]:
    """G_rec's training L1 at each logged step of the reconstruction stage (run/stats.jsonl)."""
    records = [json.loads(line) for line in (arm / "run" / "stats.jsonl").read_text().splitlines() if line]
    return {r["step"]: r["rec_l1"] for r in records if r.get("stage") == "rec" and "rec_l1" in r}


def _last_rec_l1(arm: Path, lines: int = 4) -> str:
    """G_rec's training L1 over the reconstruction stage's last logged lines (with `log_every` 50: 200 steps)."""
    last = list(_rec_l1(arm).values())[-lines:]
    return f"{sum(last) / len(last):.4f}" if last else "-"


def losses(arms: list[Path]) -> str:
    """G_rec's training L1 at every logged step of each arm, side by side (e.g. float32 against bf16)."""
    curves = [_rec_l1(arm) for arm in arms]
    steps = sorted(set().union(*curves))
    lines = ["| step | " + " | ".join(arm.name for arm in arms) + " |", "|---" * (len(arms) + 1) + "|"]
    lines += [f"| {step} | " + " | ".join(f"{c[step]:.4f}" if step in c else "-" for c in curves) + " |"
              for step in steps]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("arms", nargs="+", type=Path, help="quality_run.py --out folders, one per arm.")
    parser.add_argument("--losses", action="store_true", help="Also the training L1 of every logged step.")
    args = parser.parse_args()
    print(table(args.arms))
    if args.losses:
        print(losses(args.arms))


if __name__ == "__main__":
    main()
