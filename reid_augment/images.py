"""The data layer: find the images of a re-ID folder, name them, and decode them safely.

Layouts: a Market-1501 root (`bounding_box_train/`, `bounding_box_test/`, `query/`), a flat folder of
Market-style names (`0002_c1s1_000451_03.jpg`: person 0002, camera 1), or `<root>/<person_id>/<image>`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from .errors import InputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MARKET_SPLITS = {"bounding_box_train": "train", "bounding_box_test": "test", "query": "query"}
DISTRACTOR_IDS = frozenset({"-1", "0000"})  # Market-1501's distractors and junk boxes.
_MARKET_NAME = re.compile(r"^(-1|\d+)_c(\d+)")
COLUMNS = ["name", "path", "person_id", "camera_id", "split"]


def parse_market_name(name: str) -> tuple[str, int]:
    """Person id (as written, e.g. '0002') and camera id of a Market-1501 style file name.

    Examples:
        >>> parse_market_name("0002_c1s1_000451_03.jpg")
        ('0002', 1)
    """
    match = _MARKET_NAME.match(os.path.basename(name))
    if match is None:
        raise ValueError(f"{name}: not a Market-1501 name (<person>_c<camera>..., e.g. 0002_c1s1_000451_03.jpg)")
    return match.group(1), int(match.group(2))


def identities(names) -> tuple[np.ndarray, np.ndarray]:
    """Person ids (str) and camera ids (int, -1 when absent) of image names, in one pass.

    A name is `<person_id>/<image>` (the folder is the person) or Market-1501 style; the camera comes
    from a Market-style file name in either case.

    Raises:
        InputError: a name is neither.
    """
    pids, cams = [], []
    for name in names:
        folder, sep, base = name.partition("/")
        match = _MARKET_NAME.match(base.rpartition("/")[2] if sep else name)
        if not sep and match is None:
            raise InputError(f"{name}: image name is neither Market-1501 style (0002_c1s1_000451_03.jpg) "
                             f"nor <person_id>/<image>")
        pids.append(folder if sep else match.group(1))
        cams.append(int(match.group(2)) if match else -1)
    return np.array(pids, dtype=object), np.array(cams, dtype=np.int64)


@dataclass
class ImageSet:
    """The usable images of a folder, and what was left out and why.

    `images` has the columns name (unique key used in pose and pair files), path, person_id (str),
    camera_id (int, -1 when unknown) and split ('train', 'test', 'query').
    """

    images: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    distractors: int = 0


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def scan_images(root: str | os.PathLike, include_distractors: bool = False) -> ImageSet:
    """Find the images under `root` and name them, without decoding them.

    Raises:
        InputError: `root` is not a folder or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    rows: list[tuple[str, str, str, int, str]] = []
    skipped: list[tuple[str, str]] = []
    split_dirs = [(root / d, s) for d, s in MARKET_SPLITS.items() if (root / d).is_dir()]
    market_names = bool(split_dirs or _list_images(root))
    if market_names:
        for folder, split in split_dirs or [(root, "train")]:
            for path in _list_images(folder):
                try:
                    pid, cam = parse_market_name(path.name)
                except ValueError as err:
                    skipped.append((path.name, str(err).split(": ", 1)[1]))
                    continue
                rows.append((path.name, str(path), pid, cam, split))
    else:
        for person_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for path in _list_images(person_dir):
                rows.append((f"{person_dir.name}/{path.name}", str(path), person_dir.name, -1, "train"))
    images = pd.DataFrame(rows, columns=COLUMNS)
    if not market_names and not images.empty:  # <person_id>/<image>: a Market-style file name still has a camera.
        images["camera_id"] = identities(images["name"])[1]
    if images.empty:
        raise InputError(f"{root}: no image files found ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    dup = images["name"].duplicated()
    if dup.any():
        raise InputError(f"{root}: image name {images['name'][dup].iloc[0]!r} appears in two splits")
    distractor = images["person_id"].isin(DISTRACTOR_IDS)
    if not include_distractors:
        images = images[~distractor].reset_index(drop=True)
    return ImageSet(images, skipped, int(distractor.sum()))


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image as [H, W, 3] uint8 RGB; grayscale, palette and RGBA are converted.

    Raises:
        InputError: the file is missing, empty or not a decodable image (the message says which).
    """
    try:
        if os.path.getsize(path) == 0:
            raise InputError(f"{path}: empty file")
        with Image.open(path) as img:
            img.load()
            if img.width == 0 or img.height == 0:
                raise InputError(f"{path}: image has no pixels")
            return np.array(img.convert("RGB"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"{path}: unreadable image ({err.__class__.__name__}: {err})") from None


def try_load_rgb(path: str | os.PathLike) -> tuple[np.ndarray | None, str | None]:
    """(image, None), or (None, the reason it is unusable): for batches that skip bad files."""
    try:
        return load_rgb(path), None
    except InputError as err:
        return None, str(err).split(": ", 1)[1]


def _unusable_reason(path: str) -> str | None:
    return try_load_rgb(path)[1]


def check_images(image_set: ImageSet, n_jobs: int = 4, progress: bool = True) -> ImageSet:
    """Decode every image once (in parallel threads) and drop the unreadable ones, with reasons.

    Raises:
        InputError: no image is usable.
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    paths = image_set.images["path"].tolist()
    checks = Parallel(n_jobs=n_jobs, prefer="threads", batch_size=64, return_as="generator")(
        delayed(_unusable_reason)(p) for p in paths)
    problems = list(tqdm(checks, total=len(paths), desc="check images", unit="img", disable=not progress))
    bad = np.array([p is not None for p in problems], dtype=bool)
    skipped = image_set.skipped + [
        (name, reason) for name, reason in zip(image_set.images["name"][bad], np.array(problems, dtype=object)[bad])
    ]
    if bad.all():
        first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise InputError(f"{Path(paths[0]).parent}: no usable image among {len(paths)} files{first}")
    return ImageSet(image_set.images[~bad].reset_index(drop=True), skipped, image_set.distractors)
