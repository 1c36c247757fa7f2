"""Training throughput (images/s) of each stage and the share of step time spent waiting on data.

Usage: python benchmarks/bench_train.py [--recipe market1501] [--steps 6] [--device auto]
Trains `--steps` steps of each stage on the bundled sample (after 2 warm-up steps) and prints one JSON line
per stage, read from the run's stats.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from reid_augment.config import PairConfig, load_recipe
from reid_augment.pairs import build_pairs, save_pair_set
from reid_augment.poses import read_poses
from reid_augment.device import resolve_device
from reid_augment.train import train

SAMPLE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample" / "cuhk03"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="market1501")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        save_pair_set(work, build_pairs(read_poses(SAMPLE / "annotations.csv"), PairConfig()), PairConfig())
        warm, n = 2, args.steps
        recipe = load_recipe(args.recipe, [f"train.rec_steps={warm + n}", f"train.ref_steps={warm + n}",
                                           f"train.batch_size={args.batch_size}",
                                           f"train.log_every={warm}", "train.sample_every=100000",
                                           "train.checkpoint_every=100000"])
        # log_every = warm: the first line of each stage covers the warm-up, the next ones the timed steps.
        run = work / "run"
        train(SAMPLE, recipe, run, work / "pairs-train.csv", work / "poses.csv", device=str(dev), progress=False)
        records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    for stage in ("rec", "ref"):
        timed = [r for r in records if r["stage"] == stage][1:]
        rate = sum(r["images_per_s"] for r in timed) / len(timed)
        wait = sum(r["data_wait"] for r in timed) / len(timed)
        print(json.dumps({"bench": "train", "stage": stage, "device": name, "torch": torch.__version__,
                          "recipe": args.recipe, "batch_size": args.batch_size, "images_per_s": round(rate, 2),
                          "data_wait_share": round(wait, 3)}))


if __name__ == "__main__":
    main()
