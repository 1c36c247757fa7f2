"""Metric throughput: pairs/s of SSIM + mask-SSIM scoring (decode, masks, batched SSIM) on the bundled sample.

Usage: python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path


from reid_augment.config import PairConfig
from reid_augment.evaluate import evaluate
from reid_augment.pairs import build_pairs
from reid_augment.poses import read_poses

SAMPLE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample" / "cuhk03"


def main() -> None:
    poses = read_poses(SAMPLE / "annotations.csv")
    pairs = build_pairs(poses, PairConfig()).train
    with tempfile.TemporaryDirectory() as tmp:
        gen = Path(tmp) / "gen"
        gen.mkdir()
        for src, tgt in zip(pairs["from"], pairs["to"]):  # Stand-in outputs: the targets themselves.
            shutil.copy(SAMPLE / tgt, gen / f"{src}___{tgt}")
        pairs[["from", "to"]].to_csv(Path(tmp) / "pairs.csv", index=False)
        start = time.perf_counter()
        report = evaluate(SAMPLE, Path(tmp) / "pairs.csv", SAMPLE / "annotations.csv", Path(tmp) / "report",
                          generated=gen, device="cpu", progress=False)
        seconds = time.perf_counter() - start
    print(json.dumps({"bench": "metrics_ssim", "device": "cpu", "pairs": report.metrics["num_pairs"],
                      "pairs_per_s": round(report.metrics["num_pairs"] / seconds, 1)}))


if __name__ == "__main__":
    main()
