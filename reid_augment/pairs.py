"""Stage 2: filter pose-less images and build (source, target) pairs of the same identity.

The construction is Def-GAN's, so that published test pairs are reproduced row for row: persons in
order of first appearance, each person's images in file order, every ordered pair of two different
images, then a seeded pandas sample of the test pairs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .config import PairConfig
from .errors import InputError
from .fileio import atomic_open, atomic_write_text, save_png
from .images import ImageSet, check_images, distractors, identities, scan_images
from .layouts import layout_entries
from .keypoints import valid_pose_mask
from .poses import PoseTable, read_poses, write_poses
from .preview import pair_sheet
from .workdir import WorkDir, fill_in

PAIR_COLUMNS = ["from", "to", "pid"]


def ordered_pairs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (i, j), i != j, of rows in the same group, without a Python loop.

    Groups come in order of first appearance and rows keep their order inside a group, so for
    groups [a, b, a] the pairs are (0, 2), (2, 0).

    Returns:
        Two int arrays of row indices, `src` and `tgt`.
    """
    codes, _ = pd.factorize(np.asarray(groups, dtype=object))
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.cumsum(sizes) - sizes
    group = codes[order]
    position = np.arange(len(order)) - starts[group]
    fanout = sizes[group] - 1
    src_sorted = np.repeat(np.arange(len(order)), fanout)
    k = np.arange(len(src_sorted)) - np.repeat(np.cumsum(fanout) - fanout, fanout)
    tgt_pos = k + (k >= position[src_sorted])
    tgt_sorted = starts[group[src_sorted]] + tgt_pos
    return order[src_sorted], order[tgt_sorted]


def _cap_per_group(groups: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Boolean mask keeping a seeded random `cap` rows of each group, rows staying in order."""
    codes, _ = pd.factorize(groups)
    keys = np.random.default_rng(seed).random(len(codes))
    order = np.lexsort((keys, codes))
    sizes = np.bincount(codes)
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - (np.cumsum(sizes) - sizes)[codes[order]]
    return rank < cap


def make_pairs(names: np.ndarray, person_ids: np.ndarray, camera_ids: np.ndarray, cfg: PairConfig) -> pd.DataFrame:
    """Ordered same-identity pairs of `names` under `cfg` (cross-camera rule, per-identity cap)."""
    src, tgt = ordered_pairs(person_ids)
    if cfg.cross_camera:
        keep = camera_ids[src] != camera_ids[tgt]
        src, tgt = src[keep], tgt[keep]
    if cfg.max_pairs_per_id:
        keep = _cap_per_group(person_ids[src], cfg.max_pairs_per_id, cfg.seed)
        src, tgt = src[keep], tgt[keep]
    return pd.DataFrame({"from": names[src], "to": names[tgt], "pid": person_ids[src]}, columns=PAIR_COLUMNS)


def _isin(values: np.ndarray, members) -> np.ndarray:
    """Hash-based membership for object arrays (np.isin sorts them, which is slow)."""
    return pd.Series(values, dtype=object).isin(list(members)).to_numpy()


@dataclass
class PairSet:
    """Train and test pairs, the poses they index, and the counts for the summary."""

    train: pd.DataFrame
    test: pd.DataFrame
    poses: PoseTable
    test_poses: PoseTable | None
    stats: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def build_pairs(poses: PoseTable, cfg: PairConfig, images: ImageSet | None = None,
                test_poses: PoseTable | None = None, other_images: Collection[str] = ()) -> PairSet:
    """Filter poses by the rule of `cfg` and build train and test pairs.

    Args:
        poses: poses of the training images (names are the pair-file keys).
        cfg: filter rule, test split and sampling settings.
        images: the usable training images; pose rows naming images the folder lacks are reported and
            dropped, images without a pose row are counted.
        test_poses: a separate annotation file of the test split (Market-1501 protocol); its
            identities are removed from training. Without it, `cfg.test_ids` identities are held out.
        other_images: names of the folder's other images (query, gallery, validation, unreadable ones):
            their pose rows are left out without a warning, since the images exist (a pose file of a whole
            data set holds them).
    """
    warnings: list[str] = []
    stats: dict[str, int] = {}
    names = poses.names
    if images is not None:
        known = set(images.images["name"])
        usable = _isin(names, known)
        present = _isin(names, other_images) & ~usable
        keep = usable | (present & distractors(names))  # Distractors are counted as such below.
        missing = ~usable & ~present
        for name, line in list(zip(names[missing], poses.lines[missing]))[:5]:
            warnings.append(f"line {line}: {name}: no such image in the folder; row ignored")
        if missing.sum() > 5:
            warnings.append(f"... and {missing.sum() - 5} more pose rows naming images the folder lacks")
        stats["pose_rows_read"] = len(names)
        stats["pose_rows_unknown_image"] = int(missing.sum())
        stats["pose_rows_other_images"] = int((present & ~keep).sum())
        stats["images_without_pose_row"] = int(len(known - set(names)))
        poses = poses.subset(keep)
    pids, cams = identities(poses.names)
    distractor = distractors(poses.names)
    valid = valid_pose_mask(poses.coords, cfg.require_joints, cfg.min_joints)
    stats["distractors"] = int(distractor.sum())
    stats["pose_less"] = int((~valid & ~distractor).sum())
    keep = valid & ~distractor
    kept, kept_pids, kept_cams = poses.subset(keep), pids[keep], cams[keep]

    # Choose the test identities.
    if test_poses is not None:
        test_pids, test_cams = identities(test_poses.names)
        test_keep = valid_pose_mask(test_poses.coords, cfg.require_joints, cfg.min_joints)
        test_keep &= ~distractors(test_poses.names)
        test, test_pids, test_cams = test_poses.subset(test_keep), test_pids[test_keep], test_cams[test_keep]
        test_ids = set(test_pids)
    else:
        unique = pd.unique(kept_pids)
        if cfg.test_ids >= len(unique) and cfg.test_ids > 0:
            raise InputError(f"--test-ids {cfg.test_ids}: only {len(unique)} identities have a usable pose")
        rng = np.random.default_rng(cfg.seed)
        test_ids = set(rng.choice(unique, size=cfg.test_ids, replace=False)) if cfg.test_ids else set()
        held = _isin(kept_pids, test_ids)
        test, test_pids, test_cams = kept.subset(held), kept_pids[held], kept_cams[held]
    in_test = _isin(kept_pids, test_ids)
    if test_poses is not None and in_test.any():
        warnings.append(f"{len(set(kept_pids[in_test]))} identities of the test poses are also in the training "
                        f"images; their {int(in_test.sum())} training images are left out")
    train, train_pids = kept.subset(~in_test), kept_pids[~in_test]

    train_pairs = make_pairs(train.names, train_pids, kept_cams[~in_test], cfg)
    all_test = make_pairs(test.names, test_pids, test_cams, cfg)
    test_pairs = all_test.sample(n=min(cfg.num_test_pairs, len(all_test)), random_state=cfg.seed)
    counts = pd.Series(train_pids).value_counts()
    stats.update(
        pose_rows=len(poses),
        kept=len(kept),
        train_images=len(train),
        train_identities=int(len(counts)),
        single_image_identities=int((counts == 1).sum()),
        train_pairs=len(train_pairs),
        test_images=len(test),
        test_identities=len(test_ids),
        test_pairs=len(test_pairs),
    )
    return PairSet(train_pairs, test_pairs.reset_index(drop=True), poses, test_poses, stats, warnings)


def write_pair_file(path: str | os.PathLike, pairs: pd.DataFrame) -> None:
    """Write a pairs CSV (`from,to` first, as the field reads it), atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        pairs.to_csv(f, index=False, lineterminator="\n")


def read_pair_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read a pairs CSV with at least the columns `from` and `to`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such pairs file (run `reid-augment build-pairs` first)")
    try:
        pairs = pd.read_csv(path, dtype=str, keep_default_na=False)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a pairs CSV (not UTF-8 text: byte {err.start})") from None
    except ValueError as err:  # pandas' ParserError and EmptyDataError are ValueErrors.
        raise InputError(f"{path}: not a pairs CSV ({' '.join(str(err).split())[:120]})") from None
    if not {"from", "to"} <= set(pairs.columns):
        raise InputError(f"{path}: a pairs CSV needs the columns 'from' and 'to', found "
                         f"{[str(c)[:40] for c in pairs.columns[:6]]}")
    return pairs


def save_pair_set(workdir: str | os.PathLike, pair_set: PairSet, cfg: PairConfig) -> None:
    """Leave everything the later stages need in `workdir`."""
    work = WorkDir(workdir)
    write_poses(work.poses, pair_set.poses)
    if pair_set.test_poses is not None:
        write_poses(work.test_poses, pair_set.test_poses)
    write_pair_file(work.train_pairs, pair_set.train)
    write_pair_file(work.test_pairs, pair_set.test)
    record = {"config": asdict(cfg), "stats": pair_set.stats}
    atomic_write_text(work.pairs_record, json.dumps(record, indent=2, sort_keys=True) + "\n")


def run_build_pairs(images_root: str | os.PathLike, workdir: str | os.PathLike, cfg: PairConfig,
                    poses_path: str | os.PathLike | None = None,
                    test_poses_path: str | os.PathLike | None = None, n_jobs: int = 4,
                    pose_backend: str = "mmpose", layout: str | None = None) -> PairSet:
    """The `build-pairs` stage: check the images, read (or estimate) poses, pair, write `workdir`.

    Without `poses_path`, poses are estimated with `pose_backend` and written to `workdir/poses.csv` first.
    """
    train_images = check_images(scan_images(images_root, layout=layout, splits=("train",)), n_jobs=n_jobs)
    every_split = layout_entries(replace(train_images.layout, splits=None))  # Names only: they may repeat.
    usable = set(train_images.images["name"])
    other_images = {name for name, _, _ in every_split} - usable
    if poses_path is None:
        from .estimate import estimate_poses

        poses_path = WorkDir(workdir).poses
        try:
            estimate_poses(train_images, poses_path, pose_backend)
        except InputError as err:
            raise InputError(f"{err} [build-pairs: pass --poses FILE, or --pose-backend mediapipe]") from None
    poses = read_poses(poses_path)
    test_poses = read_poses(test_poses_path) if test_poses_path is not None else None
    for path, table in ((poses_path, poses), (test_poses_path, test_poses)):
        if table is not None and len(table) == 0:
            raise InputError(f"{path}: no pose rows, only the header; nothing to pair")
    pair_set = build_pairs(poses, cfg, train_images, test_poses, other_images)
    if pair_set.stats["kept"] == 0:
        pair_set.warnings.append(f"{poses_path}: no image has a usable pose under the filter rule; check the pose "
                                 f"file, loosen --require-joints, or estimate poses (drop --poses; `make pose` "
                                 f"installs the pose backends)")
    pair_set.stats.update(images_found=len(train_images.images) + len(train_images.skipped),
                          images_unreadable=len(train_images.skipped), distractor_images=train_images.distractors)
    pair_set.warnings[:0] = [f"{name}: {reason}; skipped" for name, reason in train_images.skipped]
    save_pair_set(workdir, pair_set, cfg)
    return pair_set


def summarize(pair_set: PairSet, workdir: str | os.PathLike) -> str:
    """One paragraph for the end of `build-pairs`."""
    s = pair_set.stats
    work = WorkDir(workdir)
    return (
        f"Read {s['images_found']} training images ({s['images_unreadable']} unreadable, {s['distractor_images']} "
        f"distractors excluded) and {s.get('pose_rows_read', s['pose_rows'])} pose rows "
        f"({s['pose_rows_unknown_image']} for images the folder lacks, {s.get('pose_rows_other_images', 0)} for its "
        f"other splits' or unreadable images). Kept "
        f"{s['kept']} images: {s['pose_less']} dropped as pose-less, {s['images_without_pose_row']} had no pose row. "
        f"Training: {s['train_images']} images of {s['train_identities']} identities "
        f"({s['single_image_identities']} with a single image, so no pair), {s['train_pairs']} pairs. "
        f"Test: {s['test_images']} images of {s['test_identities']} identities, {s['test_pairs']} pairs. "
        f"Wrote {work.poses.name}, {work.train_pairs.name}, {work.test_pairs.name} and {work.pairs_record.name} "
        f"to {workdir}."
    )


@dataclass
class PairPreview:
    output: Path
    rows: int

    def summary(self) -> str:
        return f"Wrote {self.output}: {self.rows} rows of source | source pose | target pose | target."


def preview_pairs(images: str | os.PathLike, pairs: str | os.PathLike | None = None,
                  poses: str | os.PathLike | None = None, output: str | os.PathLike | None = None, count: int = 8,
                  seed: int = 0, workdir: str | os.PathLike | None = None) -> PairPreview:
    """A PNG of `count` seeded pairs with their pose skeletons (`preview.pair_sheet`): poses and pairs checked by
    eye before training spends hours on them. What is left out comes from `workdir` (its training pairs, poses
    and pairs-preview.png)."""
    pairs, poses, output = fill_in("preview", workdir, pairs=pairs, poses=poses, output=output)
    table = read_pair_file(pairs)
    sheet = pair_sheet(table, read_poses(poses), scan_images(images).paths, count, seed)
    save_png(output, sheet)
    return PairPreview(Path(output), min(count, len(table)))
