"""Metric throughput on the bundled sample: pairs/s of `evaluate` (decode, masks, batched SSIM and mask-SSIM for the
model's images and for the copy-the-source baseline), without and with PCKh (MediaPipe on both images of a pair).

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
        for pckh in (False, True):
            start = time.perf_counter()
            report = evaluate(SAMPLE, Path(tmp) / "pairs.csv", SAMPLE / "annotations.csv", Path(tmp) / f"r{pckh}",
                              generated=gen, device="cpu", progress=False, pckh=pckh)
            seconds = time.perf_counter() - start
            if pckh and report.metrics["pckh"] is None:
                continue  # No offline pose backend here.
            print(json.dumps({"bench": "metrics_ssim", "device": "cpu", "pairs": report.metrics["num_pairs"],
                              "pckh": pckh, "pairs_per_s": round(report.metrics["num_pairs"] / seconds, 1)}))


if __name__ == "__main__":
    main()
