"""Pose estimation images/s of each backend on the bundled sample (mmpose with random weights: same cost).

Usage: python benchmarks/bench_estimate.py [--device auto]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from reid_augment.errors import InputError
from reid_augment.estimate import estimate_poses
from reid_augment.device import resolve_device

SAMPLE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample" / "cuhk03"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    for backend in ("mediapipe", "mmpose"):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                result = estimate_poses(SAMPLE, Path(tmp) / "poses.csv", backend, pose_checkpoint=None,
                                        batch_size=args.batch_size, device=str(dev), progress=False)
            except InputError as err:
                print(json.dumps({"bench": "estimate_poses", "backend": backend, "skipped": str(err)}))
                continue
        print(json.dumps({"bench": "estimate_poses", "backend": backend, "device": name if backend == "mmpose" else "cpu",
                          "images": result.estimated, "images_per_s": round(result.estimated / result.seconds, 2)}))


if __name__ == "__main__":
    main()
