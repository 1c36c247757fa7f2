"""Re-ID images decoded once into one uint8 tensor, batches made on tensors: no per-item JPEG decoding.

torchreid's loader decodes and transforms every image on every pass in worker processes, which on a 2-core CPU
share the cores with training (about half a `reid-benchmark` step). A re-ID training set at 128x64 is small
(6,264 images: 150 MB), so it is decoded once; a batch is an index, a flip and a normalisation on tensors.
The flips of step s come from a generator seeded by (seed, s), so a resumed run draws what an uninterrupted one
would. Unreadable images are reported and left out, not fatal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..images import try_load_rgb

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # torchreid's (ImageNet) normalisation.
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclass
class Decoded:
    images: torch.Tensor        # (N, 3, H, W) uint8 of the readable images.
    kept: np.ndarray            # Indices into the input paths of those images.
    skipped: list[tuple[str, str]]  # (path, reason) of the others.


def _load(path: str, height: int, width: int) -> tuple[np.ndarray | None, str | None]:
    image, reason = try_load_rgb(path)
    if image is not None and image.shape[:2] != (height, width):  # torchreid's Resize: bilinear to (H, W).
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    return image, reason


def decode(paths: list[str], height: int, width: int, progress: bool = False, desc: str = "decode") -> Decoded:
    """Every image at (height, width), decoded once in threads."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    out = torch.empty((len(paths), 3, height, width), dtype=torch.uint8)
    kept, skipped = [], []
    with ThreadPoolExecutor(max_workers=4) as pool:
        loads = pool.map(lambda p: _load(p, height, width), paths)
        for i, (image, reason) in enumerate(tqdm(loads, total=len(paths), desc=desc, unit="img",
                                                 disable=not progress, leave=False)):
            if image is None:
                skipped.append((paths[i], reason))
                continue
            out[len(kept)] = torch.from_numpy(np.array(image)).permute(2, 0, 1)
            kept.append(i)
    return Decoded(out[:len(kept)], np.array(kept, dtype=np.int64), skipped)


def batch(images: torch.Tensor, index, flip: torch.Tensor | None = None, channels_last: bool = False) -> torch.Tensor:
    """Normalised float batch of `images[index]`; rows where `flip` is true mirrored left-right."""
    x = images[torch.as_tensor(index)].float().div_(255)
    if flip is not None and bool(flip.any()):
        x[flip] = x[flip].flip(-1)
    x = (x - MEAN) / STD
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def flips(seed: int, step: int, n: int) -> torch.Tensor:
    """Which of a step's n images are mirrored (p = 0.5, torchreid's random_flip), a function of (seed, step)."""
    return torch.from_numpy(np.random.default_rng([seed, step, 7]).random(n) < 0.5)
