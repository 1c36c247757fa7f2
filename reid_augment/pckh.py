"""PCKh: does a generated image show the target pose? The pose-transfer field's measure, as PATN's calPCKH.

The generated image's pose is estimated (here with the offline MediaPipe backend) and compared joint by joint
with the target pose: a joint is right when both are present and |dx| < alpha * head width and |dy| < alpha * head
height, the head box spanning the target's nose, neck, eyes and ears (at least two of them, else the pair is not
counted). PCKh = right joints / target joints present, over all counted pairs (alpha = 0.5).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .keypoints import present

HEAD_JOINTS = (0, 1, 14, 15, 16, 17)  # nose, neck, Reye, Leye, Rear, Lear (PATN's PARTS_SEL).
ALPHA = 0.5


def head_sizes(poses: np.ndarray) -> np.ndarray:
    """[N, K, 2] (y, x) -> [N, 2] (head height, head width); -1 where fewer than two head joints are present."""
    head = poses[:, HEAD_JOINTS]
    vis = present(head)
    big, small = np.where(vis[..., None], head, -np.inf), np.where(vis[..., None], head, np.inf)
    size = big.max(1) - small.min(1)
    return np.where((vis.sum(1) >= 2)[:, None], size, -1.0)


def pckh_counts(pred: np.ndarray, target: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: (right joints, target joints present); both 0 for a pair whose target has no head box.

    pred, target: [N, K, 2] (y, x) in the same frame, -1 for missing.
    """
    head = head_sizes(target)
    counted = (head >= 0).all(1)
    both = present(pred) & present(target)
    close = (np.abs(pred - target) < alpha * head[:, None, :]).all(-1)
    right = (both & close).sum(1)
    return np.where(counted, right, 0), np.where(counted, present(target).sum(1), 0)


def pckh(pred: np.ndarray, target: np.ndarray, alpha: float = ALPHA) -> float:
    """PCKh over all pairs (right joints / target joints, summed over the counted pairs); nan if none counts."""
    right, total = pckh_counts(pred, target, alpha)
    return float(right.sum() / total.sum()) if total.sum() else float("nan")


def per_image_pckh(pred: np.ndarray, target: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """PCKh of each pair, nan where its target has no head box."""
    right, total = pckh_counts(pred, target, alpha)
    return np.where(total > 0, right / np.maximum(total, 1), np.nan)


class PoseScorer:
    """Estimates poses of generated images with the offline backend, lazily built; None when not installed."""

    def __init__(self, estimate: Callable[[Sequence[np.ndarray]], np.ndarray], name: str):
        self.estimate, self.name = estimate, name

    @classmethod
    def offline(cls) -> "PoseScorer | None":
        from .errors import InputError
        from .estimate import estimate_arrays, make_estimator

        try:
            estimator, name = make_estimator("mediapipe")
        except InputError:
            return None
        return cls(lambda crops: estimate_arrays(crops, estimator, "mediapipe"), name)

    def score(self, crops: Sequence[np.ndarray], targets: np.ndarray) -> np.ndarray:
        """PCKh of each crop against its target pose ([N, K, 2] in the crop's frame)."""
        return per_image_pckh(self.estimate(crops), targets)
