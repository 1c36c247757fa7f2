"""Training data: every training image decoded once; batches of (source, target) crops and poses gathered from it.

Heatmaps and body masks are not made here: the loop draws them from the poses on the training device, batched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Sampler

from .errors import InputError
from .images import try_load_rgb
from .keypoints import FLIP_PERMUTATION, NUM_JOINTS, scale_pose
from .poses import PoseTable


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [3, H, W] float in [-1, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


def fit_crop(rgb: np.ndarray, pose: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize an [H, W, 3] crop to `size` = (H, W) and scale its pose to match."""
    h, w = rgb.shape[:2]
    if (h, w) != tuple(size):
        rgb = np.array(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))
        pose = scale_pose(pose, (h, w), size)
    return rgb, pose.astype(np.float32)


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


@dataclass
class TrainingData:
    """Every training image decoded once, at the model's size, with its pose in the model's frame.

    Pairs are index pairs into these arrays, so a batch is a gather (on the training device when the images
    fit there: Market-1501's training split is 318 MB as uint8) instead of two JPEG decodes per pair per step.
    """

    names: np.ndarray          # [M] image names.
    images: torch.Tensor       # [M, H, W, 3] uint8.
    poses: torch.Tensor        # [M, K, 2] float32, (y, x) in the model's frame, -1 for missing.
    src: torch.Tensor          # [P] int64 indices into images: the pairs' sources...
    tgt: torch.Tensor          # ...and targets.
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, reason) left out with their pairs.

    def __len__(self) -> int:
        return len(self.src)

    def to(self, dev: torch.device) -> "TrainingData":
        """The arrays on `dev` (pinned host memory when they do not fit a quarter of the free GPU memory)."""
        if dev.type == "cuda":
            free = torch.cuda.mem_get_info(dev)[0]
            if self.images.numel() > free // 4:
                return replace(self, images=self.images.pin_memory())
        return replace(self, images=self.images.to(dev), poses=self.poses.to(dev), src=self.src.to(dev),
                       tgt=self.tgt.to(dev))

    def batch(self, pairs: torch.Tensor, flips: torch.Tensor, dev: torch.device) -> dict[str, torch.Tensor]:
        """Pairs `pairs` ([B] int64), mirrored where `flips` ([B] bool): src_img, tgt_img [B, 3, H, W] in [-1, 1];
        src_pose, tgt_pose [B, K, 2]. The gather runs where the images live, the rest on `dev`; what crosses from
        the host to a GPU goes through pinned memory without blocking, so a training step never waits for a copy."""
        where = self.images.device
        pairs, flips = to_device(pairs, where), to_device(flips, dev)
        src, tgt = self.src.to(where)[pairs], self.tgt.to(where)[pairs]
        out = {}
        for side, index in (("src", src), ("tgt", tgt)):
            images = _gather(self.images, index, dev).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            poses = _gather(self.poses.to(where), index, dev)
            out[f"{side}_img"] = torch.where(flips[:, None, None, None], images.flip(-1), images)
            out[f"{side}_pose"] = torch.where(flips[:, None, None], flip_pose_tensor(poses, images.shape[-1]), poses)
        return out


def flip_pose_tensor(poses: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror [..., K, 2] (y, x) poses in an image `width` wide, swapping left and right joints
    (`keypoints.FLIP_PERMUTATION`): x -> width - 1 - x for present joints; a missing joint (a negative coordinate)
    keeps its coordinates, so it stays missing, at its mirror joint's index."""
    flipped = poses.index_select(-2, _flip_index(poses.device))
    vis = (flipped[..., 0] >= 0) & (flipped[..., 1] >= 0)
    return torch.stack([flipped[..., 0], torch.where(vis, width - 1 - flipped[..., 1], flipped[..., 1])], dim=-1)


@functools.cache
def _flip_index(dev: torch.device) -> torch.Tensor:
    """FLIP_PERMUTATION as an index on `dev`, made once: a Python list as an index is a blocking host copy per call."""
    return to_device(torch.tensor(FLIP_PERMUTATION), dev)


def to_device(tensor: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """`tensor` on `dev`; from the host to a GPU through pinned memory, without blocking the host.

    A plain `.to(cuda)` of pageable memory waits for the copy: a host sync in every training step. The pinned
    buffer comes from torch's caching host allocator, which keeps it until the copy is done.
    """
    if tensor.device == dev:
        return tensor
    if dev.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(dev, non_blocking=True)
    return tensor.to(dev)


def _gather(source: torch.Tensor, index: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """source[index] on `dev`: gathered on the host straight into pinned memory when the source stays there."""
    if source.device.type == "cpu" and dev.type == "cuda":
        pinned = torch.empty((len(index), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
        return torch.index_select(source, 0, index, out=pinned).to(dev, non_blocking=True)
    return source[index].to(dev)


def load_training_data(pairs: pd.DataFrame, poses: PoseTable, paths: dict[str, str], size: tuple[int, int],
                       progress: bool = True, threads: int = 8) -> TrainingData:
    """Decode each image of `pairs` once (in threads), resize it to `size` and scale its pose to match.

    An image that cannot be decoded is reported in `skipped` and its pairs are left out.

    Raises:
        InputError: no pair is left.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    names = pd.unique(pd.concat([pairs["from"], pairs["to"]])).astype(object)
    rows = poses.lookup(names) if len(names) else np.zeros((0, NUM_JOINTS, 2), np.float32)
    h, w = size

    def decode(i: int):
        rgb, reason = try_load_rgb(paths[names[i]])
        return (fit_crop(rgb, rows[i], size), None) if rgb is not None else (None, reason)

    images = np.zeros((len(names), h, w, 3), np.uint8)
    coords = np.full((len(names), NUM_JOINTS, 2), -1.0, np.float32)
    ok = np.ones(len(names), dtype=bool)
    skipped = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(decode, range(len(names)))
        for i, (crop, reason) in enumerate(tqdm(results, total=len(names), desc="decode training images",
                                                unit="img", disable=not progress)):
            if crop is None:
                ok[i] = False
                skipped.append((str(names[i]), reason))
            else:
                images[i], coords[i] = crop
    index = {n: i for i, n in enumerate(names)}
    src = pairs["from"].map(index).to_numpy()
    tgt = pairs["to"].map(index).to_numpy()
    keep = ok[src] & ok[tgt]
    if not keep.any():
        raise InputError(f"no training pair has two readable images ({len(skipped)} unreadable, e.g. "
                         f"{skipped[0][0] if skipped else '-'})")
    return TrainingData(names, torch.from_numpy(images), torch.from_numpy(coords),
                        torch.from_numpy(src[keep]).long(), torch.from_numpy(tgt[keep]).long(), skipped)


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
