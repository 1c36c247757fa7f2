"""PCKh: does a generated image show the target pose? The pose-transfer field's measure, as PATN's calPCKH.

The generated image's pose is estimated (here with the offline MediaPipe backend) and compared joint by joint
with the target pose: a joint is right when both are present and |dx| < alpha * head width and |dy| < alpha * head
height, the head box spanning the target's nose, neck, eyes and ears (at least two of them, else the pair is not
counted). PCKh = right joints / target joints present, over all counted pairs (alpha = 0.5).
"""

from __future__ import annotations

import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

import numpy as np
from PIL import Image

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
    return pckh_per_pair(*pckh_counts(pred, target, alpha))


def pckh_per_pair(right: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Each pair's PCKh from `pckh_counts`' counts, nan where the pair is not counted."""
    return np.where(total > 0, right / np.maximum(total, 1), np.nan)


def decode(data: bytes) -> np.ndarray:
    """Encoded image bytes as [H, W, 3] uint8 RGB, decoded as `images.load_rgb` decodes the written file."""
    with Image.open(io.BytesIO(data)) as img:
        return np.array(img.convert("RGB"))


class PoseScorer:
    """Estimates poses of generated images with the offline backend (`offline()` is None when not installed).

    MediaPipe runs on one core (about 30 images/s), slower than a GPU generates, so `score_encoded` can spread
    the images over a pool of `processes` worker processes, each with its own estimator (spawned, not forked: a
    forked MediaPipe or torch is not safe). Each image is estimated on its own (static-image mode), so a score
    does not depend on the pool, its size, or which images share a call.
    """

    def __init__(self, estimate: Callable[[Sequence[np.ndarray]], np.ndarray], name: str, processes: int = 0):
        self.estimate, self.name, self.processes = estimate, name, processes
        self._pool: ProcessPoolExecutor | None = None

    @classmethod
    def offline(cls, processes: int = 0) -> "PoseScorer | None":
        """The MediaPipe scorer; `processes` > 0 scores `score_encoded`'s images in that many processes."""
        from .errors import InputError
        from .estimate import estimate_arrays, make_estimator

        try:
            estimator, name = make_estimator("mediapipe")
        except InputError:
            return None
        return cls(lambda crops: estimate_arrays(crops, estimator, "mediapipe"), name, processes)

    def score(self, crops: Sequence[np.ndarray], targets: np.ndarray) -> np.ndarray:
        """PCKh of each crop against its target pose ([N, K, 2] in the crop's frame), in this process."""
        return per_image_pckh(self.estimate(crops), targets)

    def score_encoded(self, files: Sequence[bytes], targets: np.ndarray) -> np.ndarray:
        """PCKh of each encoded image (the bytes of a .jpg or .png) as decoded from those bytes.

        The estimator is sensitive to JPEG encoding, so scoring the bytes that are written, not the pixels
        before encoding, makes a score what re-estimating the written file gives.
        """
        if not self.processes or len(files) <= 1:
            return self.score([decode(f) for f in files], targets)
        if self._pool is None:
            from .orphans import mark_main_starter

            mark_main_starter()
            self._pool = ProcessPoolExecutor(self.processes, multiprocessing.get_context("spawn"),
                                             initializer=_start_worker)
        step = -(-len(files) // (4 * self.processes))  # Small chunks: a slow image does not idle the others.
        starts = range(0, len(files), step)
        parts = self._pool.map(_score_in_worker, [files[i:i + step] for i in starts],
                               [targets[i:i + step] for i in starts])
        return np.concatenate(list(parts))

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "PoseScorer":
        return self

    def __exit__(self, *_) -> None:
        self.close()


_WORKER: PoseScorer | None = None  # A pool worker's own estimator.


def _start_worker() -> None:
    from .orphans import die_with_parent

    global _WORKER
    die_with_parent()  # A parent killed with SIGKILL leaves no scoring worker behind.
    _WORKER = PoseScorer.offline()


def _score_in_worker(files: Sequence[bytes], targets: np.ndarray) -> np.ndarray:
    return _WORKER.score([decode(f) for f in files], targets)
