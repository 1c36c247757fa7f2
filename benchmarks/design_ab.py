"""One table for an equal-time A/B of generator designs: each arm a `quality_run.py` run, scored on the same pairs.

Where compute is short a design must win at the budget it will get, not at 150 steps. Each arm is a
`benchmarks/quality_run.py` run with wall-clock minutes per stage (--rec-minutes, --ref-minutes) instead of steps,
so every arm trains for the same time and a costlier design takes fewer steps; arms may run side by side with
--threads 1 each (then the same interference hits both). Every arm is scored by `evaluate` on the same held-out
pairs (500 of persons 0644-0743 sampled with seed 0 on cuhk03-market): SSIM, mask-SSIM and pooled PCKh, beside
copying the source and the PCKh of the real targets (the estimator's ceiling). This script reads the arms'
quality_run.json, report/metrics.json and run/stats.jsonl (G_rec's training L1 over its last logged steps) and
prints the markdown table with each arm's command.

Usage:
  python benchmarks/quality_run.py --out ab/base --threads 1 --rec-minutes 40 --ref-minutes 25 &
  python benchmarks/quality_run.py --out ab/pose-decoder --threads 1 --rec-minutes 40 --ref-minutes 25 \\
      --set model.pose_to_decoder=true &
  wait; python benchmarks/design_ab.py ab/base ab/pose-decoder
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reid_augment.weights import read_metadata


def table(arms: list[Path]) -> str:
    rows, commands, reference = [], [], None
    for arm in arms:
        run = json.loads((arm / "quality_run.json").read_text())
        metrics = json.loads((arm / "report" / "metrics.json").read_text())
        if reference is None:
            reference = metrics
        elif Path(metrics["pairs"]).read_bytes() != Path(reference["pairs"]).read_bytes():
            raise SystemExit(f"{arm}: scored on other pairs than {arms[0]}; an A/B needs the same pairs")
        m = run["model"]
        rows.append(f"| {arm.name} | {run['steps'][0]:,} + {run['steps'][1]:,} | {run['train_minutes']} | "
                    f"{_last_rec_l1(arm / 'run' / 'stats.jsonl')} | {m['ssim']:.3f} | {m['mask_ssim']:.3f} | "
                    f"{m['pckh']:.3f} |")
        commands.append(f"    {read_metadata(run['generator'])['command']}")  # The model card's.
    copy, ceiling = reference["baseline"], reference["real_target"]["pckh"]
    lines = ["| arm | steps (rec + ref) | train minutes | last rec L1 | SSIM | mask-SSIM | PCKh |",
             "|---|---|---|---|---|---|---|", *rows,
             f"| copy the source | - | - | - | {copy['ssim']:.3f} | {copy['mask_ssim']:.3f} | {copy['pckh']:.3f} |",
             f"| real target (ceiling) | - | - | - | 1.000 | 1.000 | {ceiling:.3f} |"]
    return "\n".join(lines) + f"\n\n{reference['num_pairs']} held-out pairs. Commands:\n\n" + "\n".join(commands) + "\n"


def _last_rec_l1(stats: Path, lines: int = 4) -> str:
    """G_rec's training L1 over the reconstruction stage's last logged lines (with `log_every` 50: 200 steps)."""
    records = [json.loads(line) for line in stats.read_text().splitlines() if line]
    rec = [r["rec_l1"] for r in records if r.get("stage") == "rec" and "rec_l1" in r][-lines:]
    return f"{sum(rec) / len(rec):.4f}" if rec else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("arms", nargs="+", type=Path, help="quality_run.py --out folders, one per arm.")
    print(table(parser.parse_args().arms))


if __name__ == "__main__":
    main()
