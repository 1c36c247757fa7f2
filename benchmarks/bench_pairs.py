"""build-pairs speed on the field's real Market-1501 test annotation file (19,732 rows, shipped in tests/data/)
and on a 10x replica of it (the same poses under 10x as many identities).

Two figures per input: the in-memory build (`build_pairs` on a pose table) and, at 1x, the CLI's whole stage
(`run_build_pairs`: scan the folder, decode every image to check it, read the pose file, pair, write the work
dir) on a folder of real 128x64 Market-1501 crops (the 18 bundled ones, hard-linked under the file's names).

Usage: python benchmarks/bench_pairs.py   (prints one JSON line per figure)
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from reid_augment.config import PairConfig
from reid_augment.pairs import build_pairs, run_build_pairs
from reid_augment.poses import PoseTable, read_poses, write_poses

ROOT = Path(__file__).resolve().parent.parent
ANNOTATIONS = ROOT / "tests" / "data" / "market-annotation-test.csv.gz"
CROPS = sorted((ROOT / "reid_augment" / "sample" / "market").glob("*.jpg"))


def replica(poses: PoseTable, times: int) -> PoseTable:
    """`times` copies of the table; copy r > 0 shifts person ids by r * 10000 and tags the names with r."""
    names = list(poses.names)
    for r in range(1, times):
        for name in poses.names:
            pid, rest = name.split("_", 1)
            pid = pid if pid == "-1" else f"{int(pid) + r * 10000:05d}"
            names.append(f"{pid}_{rest[:-4]}_r{r}.jpg")
    return PoseTable.from_arrays(names, np.concatenate([poses.coords] * times))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "market-annotation-test.csv"
        path.write_bytes(gzip.decompress(ANNOTATIONS.read_bytes()))
        real = read_poses(path)
        for scale, poses in (("market test annotations", real), ("10x replica", replica(real, 10))):
            start = time.perf_counter()
            pair_set = build_pairs(poses, PairConfig())
            seconds = time.perf_counter() - start
            pairs = len(pair_set.train)
            print(json.dumps({"bench": "build_pairs", "scale": scale, "input": "real (field's annotations)",
                              "images": len(poses.names), "pairs": pairs, "seconds": round(seconds, 3),
                              "pairs_per_s": round(pairs / seconds)}))
        folder = tmp / "images"
        folder.mkdir()
        for i, name in enumerate(real.names):
            os.link(CROPS[i % len(CROPS)], folder / name)
        write_poses(tmp / "poses.csv", real)
        start = time.perf_counter()
        pair_set = run_build_pairs(folder, tmp / "work", PairConfig(), tmp / "poses.csv", n_jobs=4)
        seconds = time.perf_counter() - start
        print(json.dumps({"bench": "build_pairs_cli", "images": len(real.names), "pairs": len(pair_set.train),
                          "seconds": round(seconds, 2), "images_per_s": round(len(real.names) / seconds),
                          "input": "real 128x64 crops (18, hard-linked) under the field's names"}))


if __name__ == "__main__":
    main()
