"""Does a rerun of the bundled generator's command give the same file? Train the same recipe twice from scratch.

The one command (`quality_run.py`) trains from the recipe's seed, so two runs on one CPU should give the same
weights up to float noise; this trains `--steps` reconstruction steps twice into fresh folders on the same data
and prints one JSON line: the largest absolute difference between the two generators' weights, and whether the
exported files are byte-identical. Run it on another CPU to see how close that one comes. With `--second-set`, the
second run also takes those settings: settings that only the refinement stage reads must leave a reconstruction
stage's weights as they are (so a run dir's finished reconstruction stage is the same command's own).

Usage:
  python experiments/rerun_check.py --data ../shared/data/cuhk03-market --recipe small --steps 30
  python experiments/rerun_check.py --recipe small --set train.amp=bf16 --second-set model.ref_input=source \
      --second-set loss.lambda_img=10 --second-set loss.r1_gamma=0 --second-set train.ref_zero_init=false
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from reid_augment import device
from reid_augment.checkpoints import load_checkpoint
from reid_augment.config import PairConfig, load_recipe
from reid_augment.pairs import run_build_pairs
from reid_augment.train import train
from reid_augment.weights import export_generator, load_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cuhk03-market"))
    parser.add_argument("--recipe", default="small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--second-set", dest="second", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="Also for the second run only.")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    fixed = [f"train.rec_steps={args.steps}", "train.ref_steps=0", "train.sample_every=100000"]
    recipes = [load_recipe(args.recipe, [*args.overrides, *fixed]),
               load_recipe(args.recipe, [*args.overrides, *args.second, *fixed])]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        run_build_pairs(args.data, work, PairConfig(), args.data / "annotations-train.csv",
                        args.data / "annotations-test.csv")
        files = []
        for name, recipe in zip(("first", "second"), recipes):
            checkpoint = train(args.data, recipe, Path(tmp) / name, work / "pairs-train.csv", work / "poses.csv",
                               device="cpu", progress=False)
            precision = load_checkpoint(checkpoint)["precision"]
            files.append(export_generator(checkpoint, Path(tmp) / f"{name}.safetensors"))
        a, b = (load_generator(f)[0].state_dict() for f in files)
        largest = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        same_bytes = files[0].read_bytes() == files[1].read_bytes()
    print(json.dumps({"recipe": args.recipe, "overrides": args.overrides, "second_run": args.second,
                      "steps": args.steps, "device": device.describe(torch.device("cpu")), "precision": precision,
                      "max_abs_weight_difference": largest, "byte_identical": same_bytes}))


if __name__ == "__main__":
    main()
