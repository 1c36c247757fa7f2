"""Contact sheets: one sheet maker, `sheet`, for every sheet of tiles the package draws (`pair_sheet` here,
generate's preview.png, evaluate's samples.png and best-worst.png, training's sample grids); each caller only
decides what goes in the rows. `pair_sheet`: pairs with their pose skeletons, to eyeball poses and pairs before
spending GPU hours."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .errors import InputError
from .images import load_rgb
from .keypoints import draw_skeleton, scale_pose
from .poses import PoseTable

GAP = 4  # White pixels between a sheet's groups of tiles.


def fit(rgb: np.ndarray, size: tuple[int, int], resample: int = Image.BICUBIC) -> np.ndarray:
    """An [H, W, 3] image as a tile of `size` (H, W): itself when it has that size, else resized with `resample`."""
    return rgb if rgb.shape[:2] == tuple(size) else np.array(Image.fromarray(rgb).resize(tuple(size[::-1]), resample))


def skeleton(pose: np.ndarray, size: tuple[int, int], frame: tuple[int, int] | None = None) -> np.ndarray:
    """A tile: the pose's skeleton on black at `size` (H, W); `frame`: the (H, W) of the image the pose is in,
    when that is not `size` (the pose is scaled from it)."""
    return draw_skeleton(pose if frame is None else scale_pose(pose, frame, size), size)


def sheet(rows: Iterable[Sequence[np.ndarray | None]], size: tuple[int, int] | None = None,
          resample: int = Image.BICUBIC, gap_after: int | None = None, group: int | None = None) -> np.ndarray:
    """Rows of tiles as one [H', W', 3] uint8 sheet.

    Every tile is fitted to one cell size (H, W), `size` or else the first tile's (`fit`, with `resample`); None is
    a black blank, and rows shorter than the longest end in blanks. `gap_after` = k: a white GAP-pixel column after
    each row's first k tiles; `group` = g: a white GAP-pixel strip under every g rows.
    """
    rows = [list(row) for row in rows]
    size = tuple(size or next(t for row in rows for t in row if t is not None).shape[:2])
    width = max(len(row) for row in rows)
    blank = np.zeros((*size, 3), np.uint8)
    lines = []
    for i, row in enumerate(rows):
        tiles = [blank if t is None else fit(t, size, resample) for t in row] + [blank] * (width - len(row))
        if gap_after is not None:
            tiles.insert(gap_after, np.full((size[0], GAP, 3), 255, np.uint8))
        lines.append(np.concatenate(tiles, axis=1))
        if group and (i + 1) % group == 0:
            lines.append(np.full((GAP, lines[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(lines, axis=0)


def overlay(rgb: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """The pose skeleton drawn over the image: [H, W, 3] uint8."""
    lines = skeleton(pose, rgb.shape[:2])
    return np.where(lines.any(-1, keepdims=True), lines, rgb)


def pair_sheet(pairs: pd.DataFrame, poses: PoseTable, paths: dict[str, str], count: int = 8,
               seed: int = 0) -> np.ndarray:
    """Rows of: source | source with its pose | target with its pose | target, for `count` seeded pairs, every
    tile at the first source's size.

    Raises:
        InputError: no pair, or a pair names an image the data set or the pose file lacks (another data set's).
    """
    if pairs.empty:
        raise InputError("the pairs file lists no pair (only its header); run `reid-augment build-pairs` again")
    chosen = pairs.sample(n=min(count, len(pairs)), random_state=seed)
    known = set(poses.names)
    for name in (n for n in list(chosen["from"]) + list(chosen["to"])):
        if name not in paths:
            raise InputError(f"the pairs file names {name}, which is not among the images: pairs of another data set?")
        if name not in known:
            raise InputError(f"the pose file has no row for {name}: poses of another data set?")
    rows, size = [], None
    for src, tgt in zip(chosen["from"], chosen["to"]):
        a, b = load_rgb(paths[src]), load_rgb(paths[tgt])
        size = size or a.shape[:2]
        a_pose = scale_pose(poses.lookup([src])[0], a.shape[:2], size)
        b_pose = scale_pose(poses.lookup([tgt])[0], b.shape[:2], size)
        a, b = fit(a, size), fit(b, size)
        rows.append([a, overlay(a, a_pose), overlay(b, b_pose), b])
    return sheet(rows, size)

