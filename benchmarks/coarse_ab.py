"""A/B of a reconstruction-stage setting: train G_rec alone for a few steps, score its coarse images on unseen people.

How the `small` recipe's choices were made where compute is short: each run trains only G_rec (L1, Eq. 2) with
the recipe and its overrides, then scores the coarse images of 200 held-out test pairs (sampled with seed 0)
against copying the source: SSIM, mask-SSIM and PCKh (MediaPipe), each the mean over pairs. Prints one JSON line
and writes <out>/<name>.png (source | coarse | target) and appends to <out>/results.jsonl.

Usage:
  python benchmarks/coarse_ab.py --name fc --steps 150 --set model.z_dim=64
  python benchmarks/coarse_ab.py --name spatial --steps 150 --set model.z_dim=0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reid_augment.checkpoint import load_generator
from reid_augment.config import PairConfig, load_recipe
from reid_augment.data import load_training_data, to_uint8
from reid_augment.evaluate import ssim_scores
from reid_augment.fileio import save_png
from reid_augment.images import scan_images
from reid_augment.keypoints import body_masks, to_heatmaps
from reid_augment.networks import coarse_image
from reid_augment.pairs import run_build_pairs
from reid_augment.pckh import PoseScorer
from reid_augment.poses import read_poses
from reid_augment.preview import grid
from reid_augment.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cuhk03-market"))
    parser.add_argument("--recipe", default="small")
    parser.add_argument("--name", required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("coarse-ab"))
    args = parser.parse_args()
    work = args.out / "work"
    if not (work / "pairs-train.csv").is_file():
        run_build_pairs(args.data, work, PairConfig(), args.data / "annotations-train.csv",
                        args.data / "annotations-test.csv")
    recipe = load_recipe(args.recipe, [f"train.rec_steps={args.steps}", "train.sample_every=100000",
                                       "train.checkpoint_every=100000", *args.overrides])
    start = time.perf_counter()
    checkpoint = train(args.data, recipe, args.out / args.name, work / "pairs-train.csv", work / "poses.csv",
                       stage="rec", device="cpu", progress=False)
    minutes = (time.perf_counter() - start) / 60
    model, _ = load_generator(checkpoint)
    cfg = model.cfg

    pairs = pd.read_csv(work / "pairs-test.csv").sample(args.pairs, random_state=0)
    found = scan_images(args.data).images
    data = load_training_data(pairs, read_poses(args.data / "annotations-test.csv"),
                              dict(zip(found["name"], found["path"])), cfg.image_size, progress=False)
    batch = data.batch(torch.arange(len(data)), torch.zeros(len(data), dtype=torch.bool), torch.device("cpu"))
    src_maps = to_heatmaps(batch["src_pose"], cfg.image_size, cfg.heatmap_sigma)
    tgt_maps = to_heatmaps(batch["tgt_pose"], cfg.image_size, cfg.heatmap_sigma)
    with torch.no_grad():
        coarse = torch.cat([coarse_image(model.rec, batch["src_img"][i:i + 50], src_maps[i:i + 50],
                                         tgt_maps[i:i + 50]) for i in range(0, len(data), 50)])
    mask = body_masks(batch["tgt_pose"], cfg.image_size)

    def masked(images: torch.Tensor) -> np.ndarray:
        """The body only, the background black (evaluate's mask-SSIM input)."""
        return to_uint8(images * mask - (1 - mask))

    target, masked_target = to_uint8(batch["tgt_img"]), masked(batch["tgt_img"])
    scorer = PoseScorer.offline()
    result = {"name": args.name, "steps": args.steps, "overrides": args.overrides, "train_minutes": round(minutes, 1),
              "pairs": len(data)}
    for method, images in (("model", coarse), ("copy_source", batch["src_img"])):
        rgb = to_uint8(images)
        result[method] = {
            "ssim": round(float(ssim_scores(rgb, target).mean()), 3),
            "mask_ssim": round(float(ssim_scores(masked(images), masked_target).mean()), 3),
            "pckh": round(float(np.nanmean(scorer.score(list(rgb), batch["tgt_pose"].numpy()))), 3)
            if scorer else None}
    save_png(args.out / f"{args.name}.png", grid(zip(to_uint8(batch["src_img"][:12]), to_uint8(coarse[:12]),
                                                     target[:12])))
    with open(args.out / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
