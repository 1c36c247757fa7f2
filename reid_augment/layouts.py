"""The folder layouts of the common re-ID data sets: detect one, and list its images with person, camera and split.

- `market1501`: `bounding_box_train/`, `query/`, `bounding_box_test/` with names `<person>_c<camera>...`:
  Market-1501 (`0002_c1s1_000451_03.jpg`), CUHK03-NP (the same names) and DukeMTMC-reID (`0001_c2_f0046182.jpg`).
- `msmt17`: MSMT17 V1 (`train/`, `test/`) or V2 (`mask_train_v2/`, `mask_test_v2/`) with `list_train.txt`,
  `list_val.txt`, `list_query.txt`, `list_gallery.txt` (lines `0000/<name> <label>`); the training split is
  what `list_train.txt` says; names `<person>_<index>_<camera>_<date>_<frame>_<n>.jpg`.
- `flat`: one folder of Market/Duke/MSMT-style names or torchreid's CUHK03 names (`1_001_1_01.png`), all
  training images.
- `by-person`: `<root>/<person_id>/<image>`.

The data set folder may also be the parent torchreid and fast-reid expect (`market1501/Market-1501-v15.09.15`,
`dukemtmc-reid/DukeMTMC-reID`, `msmt17/MSMT17_V1`): it is found below the given folder. A `Layout` is path-like,
so one can be passed wherever a data set folder is taken, to force its kind or to read only some of its splits.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

LAYOUTS = ("market1501", "msmt17", "flat", "by-person")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MARKET_SPLITS = {"bounding_box_train": "train", "bounding_box_test": "test", "query": "query"}
MSMT_VERSIONS = {"train": "test", "mask_train_v2": "mask_test_v2"}  # Train folder -> test folder (V1, V2).
MSMT_LISTS = {"list_train.txt": "train", "list_val.txt": "val", "list_query.txt": "query",
              "list_gallery.txt": "test"}
CUHK03_SETS = ("images_detected", "images_labeled")  # torchreid's CUHK03 folder: two image sets of one name space.


@dataclass(frozen=True)
class Layout:
    """A data set's layout: its kind, the folder that holds its splits, and the splits a command reads (None: all).

    Path-like (its root): pass one wherever a data set folder is taken, e.g. `scan_images(layout.only("train"))`.
    """

    kind: str
    root: Path
    splits: tuple[str, ...] | None = None

    def __fspath__(self) -> str:
        return str(self.root)

    def only(self, *splits: str) -> "Layout":
        """The same data set, read for these splits only (names then need be unique among them alone)."""
        return dataclasses.replace(self, splits=tuple(splits))

    @property
    def train_dir(self) -> Path:
        """Where training images live (for msmt17, the folder the list files' paths are relative to)."""
        if self.kind == "market1501":
            return self.root / "bounding_box_train"
        if self.kind == "msmt17":
            return next(self.root / d for d in MSMT_VERSIONS if (self.root / d).is_dir())
        return self.root

    @property
    def test_dir(self) -> Path | None:
        if self.kind == "msmt17":
            return self.root / MSMT_VERSIONS[self.train_dir.name]
        return None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _below(root: Path, depth: int = 2) -> list[Path]:
    """`root` and its sub-folders down to `depth` levels, shallowest first."""
    found, level = [root], [root]
    for _ in range(depth):
        level = [c for p in level for c in sorted(p.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        found += level
    return found


def _market_root(folder: Path) -> bool:
    present = [d for d in MARKET_SPLITS if (folder / d).is_dir()]
    if present and "bounding_box_train" not in present:
        raise InputError(f"{folder}: has {'/, '.join(present)}/ but no bounding_box_train/; a Market-1501, "
                         f"CUHK03-NP or DukeMTMC-reID root holds bounding_box_train/, query/ and bounding_box_test/")
    return bool(present)


def _msmt_root(folder: Path) -> bool:
    lists = [f for f in MSMT_LISTS if (folder / f).is_file()]
    trains = [d for d in MSMT_VERSIONS if (folder / d).is_dir()]
    if lists and not trains:
        raise InputError(f"{folder}: has {lists[0]} but no train/ or mask_train_v2/ folder (MSMT17 V1 or V2)")
    if lists and "list_train.txt" not in lists:
        raise InputError(f"{folder}: an MSMT17 root needs list_train.txt (found {', '.join(lists)})")
    halves = [(t, s) for t, s in MSMT_VERSIONS.items() if (folder / t).is_dir() and (folder / s).is_dir()]
    if not lists and halves:
        raise InputError(f"{folder}: has {halves[0][0]}/ and {halves[0][1]}/ but no list_train.txt; an MSMT17 root "
                         f"holds list_train.txt, list_val.txt, list_query.txt and list_gallery.txt beside them (or "
                         f"pass one split's folder as a by-person folder)")
    return bool(lists)


def detect_layout(root: str | os.PathLike, layout: str | None = None) -> Layout:
    """The layout of the data set at `root` (or one or two levels below it); `layout` forces the kind.

    Raises:
        InputError: `root` is missing, half a layout (e.g. query/ without bounding_box_train/), none of
            the known layouts, or not the forced one.
    """
    if isinstance(root, Layout) and layout in (None, root.kind):
        return root
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    if layout is not None and layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if layout in (None, "market1501", "msmt17"):
        for folder in _below(root):
            if layout in (None, "market1501") and _market_root(folder):
                return Layout("market1501", folder)
            if layout in (None, "msmt17") and _msmt_root(folder):
                return Layout("msmt17", folder)
        if layout is not None:
            what = "bounding_box_train/" if layout == "market1501" else "list_train.txt and train/"
            raise InputError(f"{root}: --layout {layout}, but no folder here has {what}")
    has_files = bool(list_images(root))
    if layout == "flat" or (layout is None and has_files):
        if not has_files:
            raise InputError(f"{root}: --layout flat, but the folder holds no image files")
        return Layout("flat", root)
    sets = [d for d in CUHK03_SETS if (root / d).is_dir()]
    if sets and layout is None:
        raise InputError(f"{root}: torchreid's CUHK03 folder holds {' and '.join(sets)}, two image sets with the same "
                         f"names; pass one of them ({root / sets[0]}) as a flat folder")
    person_dirs = [p for p in root.iterdir() if p.is_dir() and list_images(p)]
    if not person_dirs:
        raise InputError(f"{root}: no image files found ({', '.join(sorted(IMAGE_EXTENSIONS))}) in any known layout "
                         f"({', '.join(LAYOUTS)})")
    return Layout("by-person", root)


def _short(text: str, limit: int = 60) -> str:
    """`text` quoted, cut to `limit` characters: error messages stay one short line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_msmt_list(path: Path) -> list[tuple[str, str]]:
    """(relative path, label) of an MSMT17 list file's lines `0000/<name> <label>` (the label a whole number).

    Raises:
        InputError: the file is not text, or a line is not of that form or leaves the root (the message names the
            file and line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a UTF-8 text file (byte {err.start}); an MSMT17 list file has lines "
                         f"'<person>/<image> <label>'") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        rel = parts[0] if parts else ""
        if len(parts) != 2 or "/" not in rel or not parts[1].isdigit() or not parts[1].isascii():
            raise InputError(f"{path}: line {number}: expected '<person>/<image> <label>', got {_short(line)}")
        if rel.startswith("/") or "\\" in rel or ".." in rel.split("/") or posixpath.normpath(rel) != rel:
            raise InputError(f"{path}: line {number}: {_short(rel)} is not a plain path inside the image folder")
        rows.append((rel, parts[1]))
    return rows


def layout_entries(layout: Layout) -> list[tuple[str, Path, str]]:
    """(name, path, split) of every image the layout lists in its splits; names are file names (person folder for
    by-person). Folders and list files of other splits are not read."""
    def wanted(split: str) -> bool:
        return layout.splits is None or split in layout.splits

    if layout.kind == "market1501":
        return [(p.name, p, split) for d, split in MARKET_SPLITS.items()
                if wanted(split) and (layout.root / d).is_dir() for p in list_images(layout.root / d)]
    if layout.kind == "msmt17":
        entries = []
        for list_name, split in MSMT_LISTS.items():
            if wanted(split) and (layout.root / list_name).is_file():
                folder = layout.train_dir if split in ("train", "val") else layout.test_dir
                entries += [(rel.rsplit("/", 1)[1], folder / rel, split)
                            for rel, _ in read_msmt_list(layout.root / list_name)]
        return entries
    if not wanted("train"):
        return []
    if layout.kind == "flat":
        return [(p.name, p, "train") for p in list_images(layout.root)]
    return [(f"{d.name}/{p.name}", p, "train") for d in sorted(layout.root.iterdir()) if d.is_dir()
            for p in list_images(d)]


def open_data_set(path: str | os.PathLike, layout: str | None = None, *splits: str) -> Layout:
    """A data-set argument as every verb reads it: its layout (detected, or forced by `layout`) and, when given,
    only `splits` (names then need be unique among those alone). Path-like, so it goes wherever a folder is taken;
    `images.scan_images` lists its images (`ImageSet.paths`: path by name)."""
    found = detect_layout(path, layout)
    return found.only(*splits) if splits else found
