"""Pairs/s of build-pairs on synthetic annotations at Market-1501 scale (12,936 images) and 10x that.

Usage: python benchmarks/bench_pairs.py   (prints one JSON line per scale)
"""

from __future__ import annotations

import json
import time

import numpy as np

from reid_augment.config import PairConfig
from reid_augment.pairs import build_pairs
from reid_augment.poses import PoseTable


def synthetic_market(num_images: int, num_ids: int, seed: int = 0) -> PoseTable:
    """Market-like annotations: ids with uneven image counts, ~8% pose-less rows."""
    rng = np.random.default_rng(seed)
    pids = np.sort(rng.integers(1, num_ids + 1, size=num_images))
    names = [f"{p:05d}_c{rng.integers(1, 7)}s1_{i:06d}_00.jpg" for i, p in enumerate(pids)]
    coords = rng.uniform(0, 60, size=(num_images, 18, 2)).astype(np.float32)
    coords[rng.random(num_images) < 0.08, 8] = -1
    return PoseTable.from_arrays(names, coords)


def main() -> None:
    for scale, (images, ids) in {"market": (12936, 751), "market_x10": (129360, 7510)}.items():
        poses = synthetic_market(images, ids)
        start = time.perf_counter()
        pair_set = build_pairs(poses, PairConfig())
        seconds = time.perf_counter() - start
        pairs = len(pair_set.train)
        print(json.dumps({"bench": "build_pairs", "scale": scale, "images": images, "pairs": pairs,
                          "seconds": round(seconds, 3), "pairs_per_s": round(pairs / seconds)}))


if __name__ == "__main__":
    main()
