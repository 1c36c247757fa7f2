"""Training throughput (images/s) of each stage and the share of step time spent waiting on data.

Usage: python benchmarks/bench_train.py [--recipe market1501] [--steps 6] [--device auto] [--stages rec]
       python benchmarks/bench_train.py --recipe small --batch-size 8 --steps 40 --stages rec \
           --set model.deform_skips=true     # a design's step cost, for an equal-time A/B
Trains `--steps` steps of each stage on the bundled sample (after 2 warm-up steps) and prints one JSON line
per stage, read from the run's stats.jsonl, naming the device (the CPU's model and threads) and precision.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from reid_augment.checkpoints import load_checkpoint
from reid_augment.config import PairConfig, load_recipe
from reid_augment.pairs import build_pairs, save_pair_set
from reid_augment.poses import read_poses
from reid_augment.device import describe, resolve_device
from reid_augment.train import train

SAMPLE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample" / "cuhk03"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="market1501")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stages", choices=["rec", "both"], default="both")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        save_pair_set(work, build_pairs(read_poses(SAMPLE / "annotations.csv"), PairConfig()), PairConfig())
        warm, n = 2, args.steps
        ref_steps = warm + n if args.stages == "both" else 0
        recipe = load_recipe(args.recipe, [*args.overrides, f"train.rec_steps={warm + n}", f"train.ref_steps={ref_steps}",
                                           f"train.batch_size={args.batch_size}",
                                           f"train.log_every={warm}", "train.sample_every=100000",
                                           "train.checkpoint_every=100000"])
        # log_every = warm: the first line of each stage covers the warm-up, the next ones the timed steps.
        run = work / "run"
        checkpoint = train(SAMPLE, recipe, run, work / "pairs-train.csv", work / "poses.csv", device=str(dev),
                           progress=False)
        precision = load_checkpoint(checkpoint)["precision"]
        records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    for stage in ("rec", "ref") if args.stages == "both" else ("rec",):
        timed = [r for r in records if r["stage"] == stage][1:]
        rate = sum(r["images_per_s"] for r in timed) / len(timed)
        wait = sum(r["data_wait"] for r in timed) / len(timed)
        print(json.dumps({"bench": "train", "stage": stage, "device": describe(dev), "precision": precision,
                          "torch": torch.__version__, "recipe": args.recipe, "overrides": args.overrides,
                          "batch_size": args.batch_size, "images_per_s": round(rate, 2),
                          "seconds_per_step": round(args.batch_size / rate, 4), "data_wait_share": round(wait, 3)}))


if __name__ == "__main__":
    main()
