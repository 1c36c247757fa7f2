"""`reid-augment warp`: generate's plan rendered by the learning-free part warp (`partwarp`), with no model.

The same sources, target poses, seeds and manifest contract as `generate` (rows land only after their image, a
rerun makes only what is missing), so everything downstream (export, the integrations, `filter`,
`reid-benchmark`) reads its output unchanged. Images are named `<source>_warpNN.jpg`; the manifest's
`checkpoint` column says `partwarp`. Nothing is learnt, so nothing can leak: the low-data protocol needs no
generator trained on other people.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from . import __version__
from .config import GenerateConfig
from .fileio import atomic_write_bytes
from .generate import encode, plan
from .images import load_rgb, scan_images
from .keypoints import scale_pose
from .locks import hold
from .manifest import MANIFEST_COLUMNS, append_manifest, manifest_name, read_manifest, write_manifest
from .partwarp import warp_to_pose
from .poses import read_poses


@dataclass
class WarpResult:
    manifest: Path
    made: int
    already: int
    identities: int
    unusable: int
    seconds: float

    def summary(self) -> str:
        rate = self.made / self.seconds if self.seconds else 0.0
        return (f"Warped {self.made} images for {self.identities} identities in {self.seconds:.1f} s ({rate:.1f} "
                f"images/s); {self.already} were already done; {self.unusable} identities had no usable image. "
                f"Manifest: {self.manifest}.")


def warp_images(images: str | os.PathLike, poses: str | os.PathLike, out_dir: str | os.PathLike,
                cfg: GenerateConfig = GenerateConfig(), shard: tuple[int, int] = (0, 1),
                progress: bool = True) -> WarpResult:
    """`cfg.per_id` part-warped images for every identity of IMAGES (this shard's share), into OUT_DIR."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    pose_table = read_poses(poses)
    requests, unusable = plan(scan_images(images, layout=cfg.layout, splits=("train",)), pose_table,
                              replace(cfg, candidates=1), shard)  # Nothing scores a warp: N per identity, no more.
    requests["image"] = requests["image"].str.replace(r"_vdg(\d+)\.jpg$", r"_warp\1.jpg", regex=True)
    requests = requests.assign(strategy=cfg.strategy, checkpoint="partwarp", step=0, version=__version__,
                               pckh="")
    manifest = out_dir / manifest_name(shard)
    lock = ".lock" if shard[1] == 1 else f".lock.shard-{shard[0]}-of-{shard[1]}"
    with hold(out_dir, lock, "this warp output"):
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        done = read_manifest(manifest) if manifest.is_file() else pd.DataFrame(columns=MANIFEST_COLUMNS)
        done = done[done["image"].isin(set(requests["image"]))]  # Whole rows of this plan, images on disk.
        write_manifest(manifest, done, MANIFEST_COLUMNS)  # The header, and no torn last line to append after.
        todo = requests[~requests["image"].isin(set(done["image"]))]
        made = 0
        for _, rows in tqdm(todo.groupby("pid", sort=False), desc="warp", unit="id", disable=not progress):
            files = []
            for row in rows.itertuples():
                image = load_rgb(row.source_path)
                frame = image.shape[:2]
                src, tgt = pose_table.lookup([row.source, row.pose_from])
                tgt = scale_pose(tgt, (int(row.target_h), int(row.target_w)), frame)
                files.append(encode(warp_to_pose(image, src, tgt), ".jpg", cfg.jpeg_quality))
            for name, data in zip(rows["image"], files):
                atomic_write_bytes(out_dir / name, data)
            append_manifest(manifest, rows, MANIFEST_COLUMNS)  # After the identity's images: only whole rows.
            made += len(rows)
    return WarpResult(manifest, made, len(requests) - len(todo), requests["pid"].nunique(), unusable,
                      time.perf_counter() - start)

