"""Pose-consistency scoring (PCKh, as `generate` scores its images) in images/s against scoring processes.

On the bundled cuhk03-test crops: their JPEG bytes, decoded and scored against their own poses, as generate
scores the bytes it writes. Each process holds its own MediaPipe estimator; the first pass (spawning the
processes and building their estimators) is timed apart from the steady rate, and every pool must give the
scores of the first one.

Usage: python benchmarks/bench_scoring.py [--processes 1,2] [--repeat 4] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from reid_augment.device import available_cores, describe
from reid_augment.pckh import PoseScorer
from reid_augment.poses import read_poses

SAMPLE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample" / "cuhk03-test"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", default="1,2", help="Comma-separated pool sizes (0: in this process).")
    parser.add_argument("--repeat", type=int, default=4, help="Passes over the images for the steady rate.")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N images.")
    args = parser.parse_args()
    names = sorted(p.name for p in SAMPLE.glob("*.jpg"))[:args.limit]
    files = [(SAMPLE / n).read_bytes() for n in names]
    targets = read_poses(SAMPLE / "annotations.csv").lookup(names)
    reference = None
    for processes in (int(p) for p in args.processes.split(",")):
        scorer = PoseScorer.offline(processes)
        if scorer is None:
            print(json.dumps({"bench": "scoring", "skipped": "the offline pose backend is not installed"}))
            return
        with scorer:
            start = time.perf_counter()
            first = scorer.score_encoded(files, targets)
            first_s = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.repeat):
                scorer.score_encoded(files, targets)
            seconds = time.perf_counter() - start
        reference = first if reference is None else reference
        images = len(files) * args.repeat
        print(json.dumps({"bench": "scoring", "device": describe(torch.device("cpu")), "processes": processes,
                          "cores": available_cores(), "images": images,
                          "images_per_s": round(images / seconds, 1), "first_pass_s": round(first_s, 1),
                          "same_scores": bool(np.array_equal(first, reference, equal_nan=True))}))


if __name__ == "__main__":
    main()
