"""A contact sheet of pairs with their pose skeletons, to eyeball poses and pairs before spending GPU hours."""

from __future__ import annotations


import numpy as np
import pandas as pd
from PIL import Image

from .images import load_rgb
from .keypoints import draw_skeleton
from .poses import PoseTable


def grid(rows) -> np.ndarray:
    """Tiles rows of equally sized [H, W, 3] images into one sheet."""
    return np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)


def overlay(rgb: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """The pose skeleton drawn over the image: [H, W, 3] uint8."""
    skeleton = draw_skeleton(pose, rgb.shape[:2])
    drawn = skeleton.any(-1, keepdims=True)
    return np.where(drawn, skeleton, rgb)


def pair_sheet(pairs: pd.DataFrame, poses: PoseTable, paths: dict[str, str], count: int = 8,
               seed: int = 0) -> np.ndarray:
    """Rows of: source | source with its pose | target with its pose | target, for `count` seeded pairs."""
    chosen = pairs.sample(n=min(count, len(pairs)), random_state=seed)
    rows = []
    for src, tgt in zip(chosen["from"], chosen["to"]):
        a, b = load_rgb(paths[src]), load_rgb(paths[tgt])
        b = np.array(Image.fromarray(b).resize(a.shape[1::-1])) if b.shape != a.shape else b
        rows.append([a, overlay(a, poses.lookup([src])[0]), overlay(b, poses.lookup([tgt])[0]), b])
    return grid(rows)

