"""Hand generated images to re-ID code: item lists for torchreid/fast-reid, and an augmented Market-1501 root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import InputError
from .images import parse_market_name



def find_market_dir(root: str | os.PathLike) -> Path:
    """The folder holding bounding_box_train/, in the layouts torchreid and fast-reid accept."""
    root = Path(root)
    for candidate in (root, root / "Market-1501-v15.09.15", root / "market1501" / "Market-1501-v15.09.15",
                      root / "market1501"):
        if (candidate / "bounding_box_train").is_dir():
            return candidate
    raise InputError(f"{root}: no Market-1501 root (a folder with bounding_box_train/, query/, bounding_box_test/)")


def market_items(folder: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(path, pid, camid) of a Market-1501 folder's .jpg images, junk (-1) left out; camid as in the name."""
    items = []
    for path in sorted(Path(folder).glob("*.jpg")):
        pid, camid = parse_market_name(path.name)
        if pid != "-1":
            items.append((str(path), int(pid), camid))
    return items


def manifest_items(manifest: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(path, pid, camid) of a generate manifest's images: each keeps its source's person and camera."""
    from .generate import read_manifest

    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"{manifest}: no such manifest (run `reid-augment generate` first)")
    table = read_manifest(manifest)
    try:
        return [(str(manifest.parent / p), int(pid), int(cam))
                for p, pid, cam in zip(table["image"], table["pid"], table["camid"])]
    except ValueError:
        raise InputError(f"{manifest}: person ids are not numbers; re-ID loaders need Market-1501 style ids") from None


def export(manifest: str | os.PathLike, market_root: str | os.PathLike, new_root: str | os.PathLike,
           copy: bool = False) -> dict[str, int]:
    """Build a Market-1501 root whose bounding_box_train/ holds the originals plus the generated images.

    query/ and bounding_box_test/ are linked (or copied) unchanged, so any Market-1501 loader trains on the
    augmented set as is. Files are symlinked unless `copy`. Returns counts per kind.
    """
    source = find_market_dir(market_root)
    new_root = Path(new_root)
    train_dir = new_root / "bounding_box_train"
    train_dir.mkdir(parents=True, exist_ok=True)
    place = shutil.copy2 if copy else (lambda src, dst: os.symlink(os.path.abspath(src), dst))
    counts = {"original": 0, "generated": 0}
    for kind, items in (("original", market_items(source / "bounding_box_train")), ("generated", manifest_items(manifest))):
        for path, _, _ in items:
            target = train_dir / Path(path).name
            if not target.exists():
                place(path, target)
            counts[kind] += 1
    for sub in ("bounding_box_test", "query"):
        target = new_root / sub
        if not target.exists() and (source / sub).is_dir():
            if copy:
                shutil.copytree(source / sub, target)
            else:
                os.symlink(os.path.abspath(source / sub), target, target_is_directory=True)
    return counts
