"""Hand generated images to re-ID code: an augmented copy of a data set root in its own layout.

A generated image keeps its source's person and camera: in a file name that each data set's own parser
reads (`0002_c1s1_000451_03_vdg07.jpg`, `0000_000_01_0303morning_0015_0_vdg07.jpg`), in MSMT17's list
files (the source's label), and in `manifest.generated_items` (the source's item in the re-ID framework, which
the torchreid and fast-reid integrations use).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .errors import InputError
from .fileio import atomic_open, atomic_write_text, copy_file
from .images import image_size, image_sizes, scan_images
from .layouts import MSMT_LISTS, detect_layout, layout_entries, read_msmt_list
from .manifest import read_generated


def _place(src: Path, dst: Path, copy: bool, size: tuple[int, int] | None) -> bool:
    """Link (or copy) src to dst; resized to `size` (H, W) when it has another size (a new file then).

    Returns whether it was resized.
    """
    if dst.exists() or dst.is_symlink():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    if size is not None and image_size(src) != tuple(size):
        with Image.open(src) as img, atomic_open(dst, "wb") as f:
            img.convert("RGB").resize((size[1], size[0]), Image.BICUBIC).save(f, format="JPEG", quality=95)
        return True
    if copy:
        copy_file(src, dst)
    else:
        os.symlink(os.path.abspath(src), dst)
    return False


def _mirror(src: Path, dst: Path, copy: bool) -> None:
    """A folder or file unchanged: linked, or copied (new files take the umask's mode, as `cp` gives). A copied
    folder that an interrupted run left half made is completed (its files are whole: each was written atomically)."""
    if not src.exists() or (dst.is_symlink() or dst.exists()) and not (copy and src.is_dir() and dst.is_dir()):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        os.symlink(os.path.abspath(src), dst, target_is_directory=src.is_dir())
    elif src.is_dir():
        shutil.copytree(src, dst, copy_function=_copy_missing, dirs_exist_ok=True)
    else:
        copy_file(src, dst)


def _copy_missing(src: str, dst: str) -> None:
    if not os.path.exists(dst):
        copy_file(src, dst)


def _training_splits(kind: str) -> tuple[str, ...]:
    """The splits whose images live in the training folder: MSMT17's validation list names images of train/ too,
    and torchreid's `combineall` trains on them."""
    return ("train", "val") if kind == "msmt17" else ("train",)


@dataclass
class ExportResult:
    """What `export` wrote: NEW_ROOT, its training split's counts, and whether files were copied or linked."""

    new_root: Path
    original: int
    generated: int
    resized: int
    unknown_source: int
    copied: bool

    def summary(self) -> str:
        resized = f", {self.resized} of them resized to their source's size" if self.resized else ""
        unknown = (f"; {self.unknown_source} whose source is not in ROOT were skipped" if self.unknown_source
                   else "")
        return (f"Wrote {self.new_root}: its training split holds {self.original} original and {self.generated} "
                f"generated images{resized}{unknown}; query and gallery are unchanged "
                f"({'copied' if self.copied else 'linked'}).")


def export(manifest: str | os.PathLike, root: str | os.PathLike, new_root: str | os.PathLike, copy: bool = False,
           out_size: tuple[int, int] | None = None, layout: str | None = None) -> ExportResult:
    """Build NEW_ROOT in ROOT's own layout, whose training split holds the originals plus the generated images.

    Market-1501 / CUHK03-NP / DukeMTMC-reID: bounding_box_train/ gets both, query/ and bounding_box_test/ are
    unchanged. MSMT17: the images of the training and validation lists stay in train/<pid>/, the generated ones
    join them and their lines join list_train.txt (the source's label); the other lists and test/ are unchanged.
    Flat and <pid>/<image> folders: the images go beside their sources. Files are symlinked unless `copy`. A
    generated image is written resized when its size differs from its source's (or from `out_size`). Everything
    is checked before the first file is written. A rerun completes what an interrupted one left.

    Raises:
        InputError: a missing or malformed manifest or data set, or a data set image its lists name but lacks.
    """
    lay = detect_layout(root, layout)
    manifest_path, table = read_generated(manifest)
    new_root = Path(new_root)
    if new_root.resolve() == lay.root.resolve():
        raise InputError(f"{new_root}: the new root must differ from the original {lay.root}")
    source_paths = scan_images(lay.only("train"), include_distractors=True).paths

    # Plan and check everything first: a bad input leaves no half-made NEW_ROOT behind.
    originals = [path for _, path, _ in layout_entries(lay.only(*_training_splits(lay.kind)))]
    missing = [path for path in originals if not path.is_file()]
    if missing:
        raise InputError(f"{lay.root}: {len(missing)} images its lists name do not exist (first: {missing[0]}); "
                         f"export copies the data set as its loader reads it")
    labels = {rel.rsplit("/", 1)[1]: label for rel, label in read_msmt_list(lay.root / "list_train.txt")} \
        if lay.kind == "msmt17" else {}
    planned = []  # (generated image, its place under NEW_ROOT, its source)
    for image, source in zip(table["image"], table["source"]):
        key = source if lay.kind == "by-person" else os.path.basename(source)
        if key in source_paths:
            src_path = Path(source_paths[key])
            planned.append((manifest_path.parent / image, new_root / src_path.relative_to(lay.root).parent
                            / os.path.basename(image), src_path, key))
    if not planned and len(table):
        raise InputError(f"{manifest_path}: none of its sources is in {lay.root} (e.g. {table['source'].iloc[0]})")
    sizes = [out_size] * len(planned) if out_size else image_sizes([src for _, _, src, _ in planned])
    counts = {"original": len(originals), "generated": len(planned), "resized": 0,
              "unknown_source": len(table) - len(planned)}

    # Originals of the training split, as they are, at the same place under NEW_ROOT.
    for src in originals:
        _place(src, new_root / src.relative_to(lay.root), copy, None)
    # Generated images, each beside its source, at its source's size (or out_size).
    for (image, dst, _, _), size in zip(planned, sizes):
        counts["resized"] += _place(image, dst, copy, tuple(size))

    # The rest of the data set, unchanged.
    if lay.kind == "market1501":
        for sub in ("bounding_box_test", "query"):
            _mirror(lay.root / sub, new_root / sub, copy)
    elif lay.kind == "msmt17":
        train_dir = new_root / lay.train_dir.name
        train_list = (lay.root / "list_train.txt").read_text(encoding="utf-8")
        if train_list and not train_list.endswith("\n"):
            train_list += "\n"
        train_list += "".join(f"{dst.relative_to(train_dir).as_posix()} {labels[key]}\n" for _, dst, _, key in planned)
        atomic_write_text(new_root / "list_train.txt", train_list)
        for name in MSMT_LISTS:
            if name != "list_train.txt":
                _mirror(lay.root / name, new_root / name, True)
        _mirror(lay.test_dir, new_root / lay.test_dir.name, copy)
    return ExportResult(new_root, copied=copy, **counts)
