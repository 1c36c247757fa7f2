"""Target poses for generation: the bank of training poses and the three ways to pick from it.

A pose is compared after normalisation to the crop (y / H, x / W) with missing joints imputed by the
bank's mean, as Def-GAN does for pose statistics.
"""

from __future__ import annotations

import numpy as np

from .keypoints import present

STRATEGIES = ("random", "kmeans", "novel")


def normalise(coords: np.ndarray, size, fill: np.ndarray | None = None) -> np.ndarray:
    """[N, K, 2] pixels -> [N, 2K] in [0, 1]; missing joints take `fill` ([K, 2], default the mean).

    `size` is one (H, W) for all poses or [N, 1, 2], each pose's own image size.
    """
    scaled = coords / np.asarray(size, dtype=np.float32)
    vis = present(coords)
    if fill is None:
        counts = np.maximum(vis.sum(0), 1)[:, None]
        fill = np.where(vis[..., None], scaled, 0).sum(0) / counts
    return np.where(vis[..., None], scaled, fill).reshape(len(coords), -1)


def kmeans_centres(vectors: np.ndarray, k: int, seed: int, iters: int = 50) -> np.ndarray:
    """The k-means centres of the bank (PN-GAN's canonical poses), largest cluster first; [k, 2K].

    k-means++ seeding and Lloyd iterations, vectorised.
    """
    rng = np.random.default_rng(seed)
    k = min(k, len(vectors))
    centres = [vectors[rng.integers(len(vectors))]]
    for _ in range(1, k):
        d2 = ((vectors[:, None] - np.asarray(centres)[None]) ** 2).sum(-1).min(1)
        total = d2.sum()
        centres.append(vectors[rng.choice(len(vectors), p=d2 / total)] if total > 0
                       else vectors[rng.integers(len(vectors))])
    centres = np.asarray(centres)
    for _ in range(iters):
        labels = ((vectors[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        new = np.stack([vectors[labels == c].mean(0) if (labels == c).any() else centres[c] for c in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    labels = ((vectors[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
    return centres[np.argsort(-np.bincount(labels, minlength=k), kind="stable")]


def nearest_of_others(vectors: np.ndarray, groups: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """For each centre, the nearest bank pose and the nearest of another group than that one's: [k, 2] indices.

    A group's real pose (a medoid) for centre c is column 0 unless that pose is the group's own, then column 1:
    a person never gets their own pose as a target.
    """
    d2 = (vectors**2).sum(1)[None] - 2 * centres @ vectors.T  # [k, N]; |c|^2 is constant per row.
    order = np.argsort(d2, axis=1, kind="stable")
    best = order[:, 0]
    other = groups[order] != groups[best][:, None]
    runner_up = order[np.arange(len(order)), other.argmax(1)]
    return np.stack([best, np.where(other.any(1), runner_up, -1)], axis=1)


def farthest_order(bank: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Bank indices sorted by distance to the nearest of an identity's own poses, farthest first."""
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product instead of a [bank, own, 2K] temporary.
    d2 = (bank**2).sum(1)[:, None] + (own**2).sum(1)[None] - 2 * bank @ own.T
    return np.argsort(-d2.min(1), kind="stable")
