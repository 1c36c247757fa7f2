"""Train a generator on a Market-layout data set, then measure it against copying the source on held-out people.

The prepared run behind the bundled-generator model card: build-pairs (training identities, and test pairs
from the held-out identities' own pose file), train, export `generator.safetensors`, evaluate on N test pairs
(SSIM, mask-SSIM, PCKh, each beside the copy-the-source baseline). Prints one JSON line and writes
quality_run.json to --out.

Usage:
  python benchmarks/quality_run.py --data ../shared/data/cuhk03-market --recipe small --out quality   # defaults
  python benchmarks/quality_run.py --data data/cuhk03-market --device cuda --set train.rec_steps=20000 ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from reid_augment.config import PairConfig, load_recipe
from reid_augment.evaluate import evaluate
from reid_augment.generator_file import export_generator
from reid_augment.pairs import run_build_pairs
from reid_augment.device import resolve_device
from reid_augment.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cuhk03-market"))
    parser.add_argument("--recipe", default="small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--eval-pairs", type=int, default=500, help="Test pairs scored (sampled with seed 0).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("quality"))
    args = parser.parse_args()
    dev = resolve_device(args.device)
    work = args.out / "work"
    start = time.perf_counter()
    run_build_pairs(args.data, work, PairConfig(), args.data / "annotations-train.csv",
                    args.data / "annotations-test.csv")
    recipe = load_recipe(args.recipe, args.overrides)
    run = args.out / "run"
    checkpoint = train(args.data, recipe, run, work / "pairs-train.csv", work / "poses.csv", device=str(dev))
    train_seconds = time.perf_counter() - start
    shared = export_generator(run, args.out / f"{args.data.name}-{args.recipe}.safetensors", bf16=True)
    pairs = pd.read_csv(work / "pairs-test.csv")
    pairs.sample(min(args.eval_pairs, len(pairs)), random_state=0).to_csv(work / "pairs-eval.csv", index=False)
    report = evaluate(args.data, work / "pairs-eval.csv", args.data / "annotations-test.csv", args.out / "report",
                      checkpoint=shared, device=str(dev))
    m = report.metrics
    result = {"data": str(args.data), "recipe": recipe.name, "device": torch.cuda.get_device_name(dev)
              if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
              "steps": [recipe.train.rec_steps, recipe.train.ref_steps], "batch_size": recipe.train.batch_size,
              "train_minutes": round(train_seconds / 60, 1), "checkpoint": str(checkpoint), "generator": str(shared),
              "generator_mib": round(shared.stat().st_size / 2**20, 2), "eval_pairs": m["num_pairs"],
              "model": {k: m[k] for k in ("ssim", "mask_ssim", "pckh")},
              "copy_source": {k: m["baseline"][k] for k in ("ssim", "mask_ssim", "pckh")}}
    (args.out / "quality_run.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
