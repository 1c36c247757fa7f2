"""Training body masks drawn batched on the device against the Def-GAN-exact mask the metrics use.

Input: 1,000 poses of the field's real Market-1501 test annotations (tests/data/), 128x64. Prints one JSON line:
IoU (pooled, mean, min) and masks/s of each.

Usage: python benchmarks/bench_masks.py [--device auto]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reid_augment.keypoints import body_mask, body_masks
from reid_augment.poses import read_poses
from reid_augment.device import resolve_device

ANNOTATIONS = Path(__file__).resolve().parent.parent / "tests" / "data" / "market-annotation-test.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    with tempfile.NamedTemporaryFile(suffix=".csv") as f:
        f.write(gzip.decompress(ANNOTATIONS.read_bytes()))
        f.flush()
        poses = read_poses(f.name)
    coords = poses.coords[np.random.default_rng(0).choice(len(poses.names), 1000, replace=False)]
    start = time.perf_counter()
    exact = np.stack([body_mask(c, (128, 64)) for c in coords])
    exact_rate = len(coords) / (time.perf_counter() - start)
    batch = torch.from_numpy(coords).to(dev)
    body_masks(batch[:16], (128, 64))  # Warm-up.
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    fast = body_masks(batch, (128, 64))[:, 0].cpu().numpy() > 0.5
    fast_rate = len(coords) / (time.perf_counter() - start)
    inter, union = (exact & fast).sum((1, 2)), (exact | fast).sum((1, 2))
    iou = inter[union > 0] / union[union > 0]
    print(json.dumps({"bench": "body_masks", "device": str(dev), "poses": len(coords),
                      "input": "real (Market-1501 test annotations)", "iou_pooled": round(float(inter.sum() / union.sum()), 4),
                      "iou_mean": round(float(iou.mean()), 4), "iou_min": round(float(iou.min()), 4),
                      "batched_masks_per_s": round(fast_rate), "exact_masks_per_s": round(exact_rate)}))


if __name__ == "__main__":
    main()
