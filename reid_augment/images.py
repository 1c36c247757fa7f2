"""The data layer: find the images of a re-ID folder, name them, and decode them safely.

Layouts (see `layouts`): Market-1501, CUHK03-NP and DukeMTMC-reID roots, MSMT17 V1/V2 roots with list files,
a flat folder of such names (or of torchreid's CUHK03 names), or `<root>/<person_id>/<image>`. Images are keyed
by file name (by `<person_id>/<image>` in the last layout), so names must be unique among the images a command
reads: MSMT17 numbers its training and test persons from 0000 each, so a command that reads only the training
split may meet a name that its test split holds too.
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
from .layouts import IMAGE_EXTENSIONS, Layout, detect_layout, layout_entries

# Person and camera of a re-ID file name: Market-1501, CUHK03-NP, DukeMTMC-reID (`<person>_c<camera>...`, groups
# 1-2), torchreid's CUHK03 (`<campus pair>_<person>_<view>_<index>`, `1_001_1_01.png`: the person is pair and
# number, `1_001`, the camera the view; groups 3-4) or MSMT17 (`<person>_<index>_<camera>_<date>_<frame>_<n>`,
# groups 5-6). MSMT17's date has letters (`0303morning`), so its names never take the CUHK03 branch.
_NAME = re.compile(r"^(?:(-1|\d+)_c(\d+)|(\d_\d{3})_([12])_\d{2}(?=[._]|$)|(\d+)_\d+_(\d+)_)")
# Market-1501's distractors and junk boxes (person -1 or 0000), in a Market-style name or as the person folder.
_DISTRACTOR_NAME = re.compile(r"^(?:-1|0000)(?:_c\d|/)")
COLUMNS = ["name", "path", "person_id", "camera_id", "split"]


def _person_camera(found: re.Match) -> tuple[str, int]:
    groups = found.groups()
    first = 0 if groups[0] is not None else 2 if groups[2] is not None else 4
    return groups[first], int(groups[first + 1])


def _match(base: str) -> tuple[str, int] | None:
    """(person, camera) of a file name, or None."""
    found = _NAME.match(base)
    return _person_camera(found) if found else None


def parse_market_name(name: str) -> tuple[str, int]:
    """Person id (as written, e.g. '0002') and camera id of a re-ID file name: Market-1501, CUHK03-NP and
    DukeMTMC-reID (`<person>_c<camera>...`), torchreid's CUHK03 (person: campus pair and number; camera: the
    view) or MSMT17 (camera: the third `_` field).

    Examples:
        >>> parse_market_name("0002_c1s1_000451_03.jpg")
        ('0002', 1)
        >>> parse_market_name("1_001_2_07.png")
        ('1_001', 2)
        >>> parse_market_name("0000_000_01_0303morning_0015_0.jpg")
        ('0000', 1)
    """
    found = _match(os.path.basename(name))
    if found is None:
        raise ValueError(f"{name}: not a re-ID file name (<person>_c<camera>..., e.g. 0002_c1s1_000451_03.jpg, "
                         f"CUHK03's 1_001_1_01.png or MSMT17's 0000_000_01_0303morning_0015_0.jpg)")
    return found


def identities(names) -> tuple[np.ndarray, np.ndarray]:
    """Person ids (str) and camera ids (int, -1 when absent) of image names, in one pass.

    A name is `<person_id>/<image>` (the folder is the person) or a re-ID file name (Market, Duke, MSMT17);
    the camera comes from the file name in either case.

    Raises:
        InputError: a name is neither.
    """
    pids, cams = [], []
    match = _NAME.match  # This loop runs over every name of a pose file.
    for name in names:
        folder, sep, base = name.partition("/")
        found = match(base.rpartition("/")[2] if sep else name)
        if not sep and found is None:
            raise InputError(f"{name[:80]}: image name is neither a re-ID file name (0002_c1s1_000451_03.jpg, "
                             f"0001_c2_f0046182.jpg, 1_001_1_01.png, 0000_000_01_0303morning_0015_0.jpg) nor "
                             f"<person_id>/<image>")
        person, camera = _person_camera(found) if found else (None, -1)
        pids.append(folder if sep else person)
        cams.append(camera)
    return np.array(pids, dtype=object), np.array(cams, dtype=np.int64)


def distractors(names) -> np.ndarray:
    """Which names are Market-1501 distractors or junk (person -1 or 0000, in a Market-style name or as the
    person folder); MSMT17's person 0000 is a real person."""
    return pd.Series(list(names), dtype=object).str.match(_DISTRACTOR_NAME).to_numpy(dtype=bool)


@dataclass
class ImageSet:
    """The usable images of a folder, and what was left out and why.

    `images` has the columns name (unique key used in pose and pair files), path, person_id (str),
    camera_id (int, -1 when unknown) and split ('train', 'val', 'test', 'query'). `layout` is where they came from.
    """

    images: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    distractors: int = 0
    layout: Layout | None = None

    @property
    def paths(self) -> dict[str, str]:
        """Each image's path by its name, as pose and pair files name images."""
        return dict(zip(self.images["name"], self.images["path"]))


def scan_images(root: str | os.PathLike, include_distractors: bool = False, layout: str | None = None,
                splits: tuple[str, ...] | None = None) -> ImageSet:
    """Find the images under `root` (layout detected, or forced with `layout`) and name them, without decoding.

    `splits` ('train', 'val', 'query', 'test'; default: all, or those of a `Layout` given as `root`) are the
    splits read: a command that keys only training images by name reads only them, so a name that MSMT17's test
    split holds too does not stop it. Images an MSMT17 list names but the folder lacks are skipped, with reasons.

    Raises:
        InputError: `root` is not a folder, holds no image, is not a known layout, or two images read share a name.
    """
    found = detect_layout(root, layout)
    if splits is not None:
        found = found.only(*splits)
    rows: list[tuple[str, str, str, int, str]] = []
    skipped: list[tuple[str, str]] = []
    entries = layout_entries(found)
    if found.kind == "msmt17":  # Listed is not present: say which listed images are missing.
        present = [path.is_file() for _, path, _ in entries]
        skipped += [(name, f"listed for {split} but no such file ({path})")
                    for (name, path, split), ok in zip(entries, present) if not ok]
        entries = [entry for entry, ok in zip(entries, present) if ok]
    if found.kind == "by-person":
        names = [n for n, _, _ in entries]
        pids, cams = identities(names) if names else ([], [])
        rows = [(n, str(p), pid, int(cam), split) for (n, p, split), pid, cam in zip(entries, pids, cams)]
    else:
        for name, path, split in entries:
            parsed = _match(name)
            if parsed is None:
                skipped.append((name, "not a re-ID file name (e.g. 0002_c1s1_000451_03.jpg)"))
                continue
            rows.append((name, str(path), parsed[0], parsed[1], split))
    images = pd.DataFrame(rows, columns=COLUMNS)
    if images.empty:
        first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise InputError(f"{found.root}: no image files found ({', '.join(sorted(IMAGE_EXTENSIONS))}){first}")
    dup = images["name"].duplicated(keep=False)
    if dup.any():
        first = images[dup].sort_values("name").head(2)
        read = f"the {', '.join(found.splits)} images" if found.splits else "the images of all its splits"
        raise InputError(f"{found.root}: two images share the name {first['name'].iloc[0]!r} ({first['path'].iloc[0]} "
                         f"and {first['path'].iloc[1]}); pose and pair files key images by name, so names must be "
                         f"unique among {read}")
    distractor = distractors(images["name"])
    if not include_distractors:
        images = images[~distractor].reset_index(drop=True)
    return ImageSet(images, skipped, int(distractor.sum()), found)


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


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image from its header, without decoding the pixels.

    Raises:
        InputError: the file is missing or not an image.
    """
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{path}: unreadable image ({err.__class__.__name__})") from None


def image_sizes(paths) -> np.ndarray:
    """[N, 2] (H, W) of many images from their headers, read in threads."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        return np.array(list(pool.map(image_size, paths)), dtype=np.int64).reshape(-1, 2)


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
    return ImageSet(image_set.images[~bad].reset_index(drop=True), skipped, image_set.distractors, image_set.layout)
