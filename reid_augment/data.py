"""Training data: pairs + poses + images -> batches of (source, target) crops, poses and target masks.

Heatmaps are not made here: the loop draws them from the poses on the training device, batched.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from .errors import InputError
from .images import load_rgb
from .keypoints import body_mask, flip_poses, present
from .poses import PoseTable


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [3, H, W] float in [-1, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


def scale_pose(pose: np.ndarray, frame: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A [K, 2] (y, x) pose from an image of size `frame` = (H, W) into one of size `size`; -1 stays -1."""
    scale = np.array([size[0] / frame[0], size[1] / frame[1]], dtype=np.float32)
    return np.where(present(pose)[:, None], pose * scale, pose).astype(np.float32)


def fit_crop(rgb: np.ndarray, pose: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize an [H, W, 3] crop to `size` = (H, W) and scale its pose to match."""
    h, w = rgb.shape[:2]
    if (h, w) != tuple(size):
        rgb = np.array(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))
        pose = scale_pose(pose, (h, w), size)
    return rgb, pose.astype(np.float32)


def load_crop(path: str, pose: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Decode an image, resize it to `size` = (H, W) and scale its pose to match."""
    return fit_crop(load_rgb(path), pose, size)


def resolve_pairs(pairs: pd.DataFrame, poses: PoseTable, paths: dict[str, str], where: str) -> None:
    """Check that every pair's images exist and have poses; a clear error lists the first missing ones."""
    names = pd.unique(pd.concat([pairs["from"], pairs["to"]]))
    no_image = [n for n in names if n not in paths]
    known = set(poses.names)
    no_pose = [n for n in names if n not in known]
    for missing, what in ((no_image, "no such image in the image folder"), (no_pose, "no row in the pose file")):
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise InputError(f"{where}: {len(missing)} images have {what}: {', '.join(missing[:5])}{more}")


class PairDataset(Dataset):
    """(source, target) pairs; an item is indexed by (pair index, flip) so the sampler owns all randomness.

    Item: src_img, tgt_img [3, H, W] in [-1, 1]; src_pose, tgt_pose [K, 2] (y, x), -1 for missing;
    tgt_mask [1, H, W] in {0, 1}, the body mask of the target pose (for the masked losses).
    """

    def __init__(self, pairs: pd.DataFrame, poses: PoseTable, paths: dict[str, str], size: tuple[int, int]):
        self.src = pairs["from"].to_numpy()
        self.tgt = pairs["to"].to_numpy()
        index = {n: i for i, n in enumerate(poses.names)}
        self.coords = poses.coords
        self.src_row = np.array([index[n] for n in self.src])
        self.tgt_row = np.array([index[n] for n in self.tgt])
        self.paths = paths
        self.size = tuple(size)

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, item: tuple[int, bool]) -> dict[str, torch.Tensor]:
        i, flip = item
        src_rgb, src_pose = load_crop(self.paths[self.src[i]], self.coords[self.src_row[i]], self.size)
        tgt_rgb, tgt_pose = load_crop(self.paths[self.tgt[i]], self.coords[self.tgt_row[i]], self.size)
        if flip:
            src_rgb, tgt_rgb = src_rgb[:, ::-1].copy(), tgt_rgb[:, ::-1].copy()
            src_pose, tgt_pose = flip_poses(src_pose, self.size[1]), flip_poses(tgt_pose, self.size[1])
        return {
            "src_img": to_tensor(src_rgb),
            "tgt_img": to_tensor(tgt_rgb),
            "src_pose": torch.from_numpy(src_pose),
            "tgt_pose": torch.from_numpy(tgt_pose),
            "tgt_mask": torch.from_numpy(body_mask(tgt_pose, self.size)).float()[None],
        }


class StepSampler(Sampler):
    """An endless, seeded stream of (pair index, flip) that can start at any step.

    Epoch e is a permutation drawn from (seed, e), and the flips from the same generator, so the
    stream depends only on the seed: a resumed run sees exactly the batches an uninterrupted one
    would. With several processes, rank r takes every world_size-th item of each global batch.
    """

    def __init__(self, num_pairs: int, batch_size: int, seed: int, flip: bool, start_step: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.n, self.batch, self.seed, self.flip = num_pairs, batch_size, seed, flip
        self.start, self.rank, self.world = start_step, rank, world_size

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        global_batch = self.batch * self.world
        position = self.start * global_batch
        epoch, offset = divmod(position, self.n)
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=g)
            flips = torch.rand(self.n, generator=g) < 0.5 if self.flip else torch.zeros(self.n, dtype=torch.bool)
            for j in range(offset, self.n):
                if (position % global_batch) % self.world == self.rank:
                    yield int(order[j]), bool(flips[j])
                position += 1
            epoch, offset = epoch + 1, 0
