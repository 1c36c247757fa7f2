"""Equal-time A/B of generator designs: train each arm for the same wall-clock minutes, score all on held-out people.

Where compute is short a design must win at the budget it will get, not at 150 steps. Each arm trains the
reconstruction stage of the recipe plus its overrides for exactly
--minutes of wall-clock time (train's time_limit), then `--score` rates every arm's generator on the same
held-out test pairs that quality_run.py and the model card use (500 pairs of persons 0644-0743 sampled with
seed 0), with `evaluate` itself: SSIM, mask-SSIM and pooled PCKh, beside copying the source and the PCKh of the
real targets (the estimator's ceiling). A generator whose refinement stage never trained renders its coarse
image, so a reconstruction-only arm is scored as such.

Arms run one after another, or side by side with --threads 1 each (then each sees the same interference, and
the table says so). Rerunning an arm resumes it; a finished arm is not trained again.

Usage:
  python benchmarks/design_ab.py --name base --minutes 40 --threads 1
  python benchmarks/design_ab.py --name pose-dec --minutes 40 --threads 1 --set model.pose_to_decoder=true
  python benchmarks/design_ab.py --score            # every arm under --out: prints the table, writes results.md
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from reid_augment.checkpoint import load_checkpoint
from reid_augment.config import PairConfig, load_recipe
from reid_augment.evaluate import evaluate
from reid_augment.pairs import run_build_pairs
from reid_augment.train import train


def prepare(data: Path, work: Path, eval_pairs: int) -> None:
    """Training pairs, held-out test pairs, and the scored sample of them (quality_run.py's)."""
    if (work / "pairs-eval.csv").is_file():
        return
    run_build_pairs(data, work, PairConfig(), data / "annotations-train.csv", data / "annotations-test.csv")
    pairs = pd.read_csv(work / "pairs-test.csv")
    pairs.sample(min(eval_pairs, len(pairs)), random_state=0).to_csv(work / "pairs-eval.csv", index=False)


def train_arm(args: argparse.Namespace, work: Path) -> None:
    arm = args.out / args.name
    info_path = arm / "arm.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"train_seconds": 0.0, "cpu_seconds": 0.0}
    budget = args.minutes * 60 - info["train_seconds"]
    if budget <= 0:
        print(f"{args.name}: done ({info['train_seconds'] / 60:.1f} min)")
        return
    overrides = [f"train.rec_steps={args.max_steps}", "train.ref_steps=0",
                 "train.sample_every=500", "train.checkpoint_every=250", *args.overrides]
    recipe = load_recipe(args.recipe, overrides)
    start, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_utime
    train(args.data, recipe, arm, work / "pairs-train.csv", work / "poses.csv", stage="rec", device="cpu",
          progress=False, time_limit=budget)
    info["train_seconds"] += time.perf_counter() - start
    info["cpu_seconds"] += resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
    stats_path = arm / "stats.jsonl"
    stats = [json.loads(line) for line in stats_path.read_text().splitlines() if line] if stats_path.is_file() else []
    info.update(name=args.name, recipe=recipe.name, overrides=args.overrides, threads=args.threads,
                steps=load_checkpoint(arm / "checkpoints" / "latest.pt")["step"],
                last_l1=stats[-1].get("rec_l1") if stats else None, command=shlex.join(["python", *sys.argv]))
    info_path.write_text(json.dumps(info, indent=2))
    print(json.dumps(info))


def score(args: argparse.Namespace, work: Path) -> None:
    rows = []
    for info_path in sorted(args.out.glob("*/arm.json")):
        info = json.loads(info_path.read_text())
        arm = info_path.parent
        metrics_path = arm / "report" / "metrics.json"
        if not metrics_path.is_file():
            evaluate(args.data, work / "pairs-eval.csv", args.data / "annotations-test.csv", arm / "report",
                     checkpoint=arm / "checkpoints" / "latest.pt", device="cpu", progress=False)
        m = json.loads(metrics_path.read_text())
        rows.append((info, m))
    lines = ["| arm | overrides | minutes (threads) | steps | SSIM | mask-SSIM | PCKh |", "|---|---|---|---|---|---|---|"]
    for info, m in rows:
        lines.append(f"| {info['name']} | {' '.join(info['overrides']) or '-'} | {info['train_seconds'] / 60:.0f} "
                     f"({info['threads']}) | {info['steps']} | {m['ssim']:.3f} | {m['mask_ssim']:.3f} | "
                     f"{m['pckh']:.3f} |")
    if rows:
        m = rows[0][1]
        b = m["baseline"]
        lines.append(f"| copy the source | | | | {b['ssim']:.3f} | {b['mask_ssim']:.3f} | {b['pckh']:.3f} |")
        lines.append(f"| real target (ceiling) | | | | 1.000 | 1.000 | {m['real_target']['pckh']:.3f} |")
    table = "\n".join(lines) + f"\n\n{rows[0][1]['num_pairs'] if rows else 0} held-out pairs; commands:\n\n" + \
        "\n".join(f"    {info['command']}" for info, _ in rows) + "\n"
    (args.out / "results.md").write_text(table)
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cuhk03-market"))
    parser.add_argument("--recipe", default="small")
    parser.add_argument("--name", help="The arm to train.")
    parser.add_argument("--minutes", type=float, default=20.0, help="Wall-clock training minutes of the arm.")
    parser.add_argument("--max-steps", type=int, default=1_000_000, help="Reconstruction steps if time allowed.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--eval-pairs", type=int, default=500)
    parser.add_argument("--score", action="store_true", help="Score every arm under --out and write the table.")
    parser.add_argument("--out", type=Path, default=Path("design-ab"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.out / "work"
    prepare(args.data, work, args.eval_pairs)
    if args.score:
        score(args, work)
    elif args.name:
        train_arm(args, work)
    else:
        parser.error("give --name ARM to train an arm, or --score")


if __name__ == "__main__":
    main()
