"""The generated-images manifest: its columns and file names, and how it is read, appended, rewritten and merged;
plus the items a re-ID framework trains on.

`generate` writes OUT/manifest.csv (one row per kept image, appended only once the image is on disk) and
OUT/candidates.csv (every candidate, with `kept`); shards write manifest.shard-I-of-N.csv and
candidates.shard-I-of-N.csv, which `merge` joins. Export, evaluate, the torchreid and fast-reid integrations and the
re-ID benchmark only read it. The contract lives here, beside fileio and errors, so that a reader of a CSV does not
import the generator (torch, the model) and so that writer and readers cannot drift apart.
"""

from __future__ import annotations

import contextlib
import os
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .fileio import WrittenFile, atomic_open

MANIFEST_COLUMNS = ["image", "pid", "camid", "source", "pose_from", "strategy", "seed", "checkpoint", "step",
                    "version", "pckh"]
LOG_COLUMNS = MANIFEST_COLUMNS + ["kept"]  # candidates.csv: every candidate made, kept (1) or not (0).


def manifest_name(shard: tuple[int, int] = (0, 1)) -> str:
    """manifest.csv, or manifest.shard-I-of-N.csv for shard (I, N): `merge` finds shards by the manifest* prefix."""
    return "manifest.csv" if shard[1] == 1 else f"manifest.shard-{shard[0]}-of-{shard[1]}.csv"


def candidates_path(manifest: Path) -> Path:
    """manifest.csv -> candidates.csv; manifest.shard-0-of-4.csv -> candidates.shard-0-of-4.csv."""
    return manifest.with_name("candidates" + manifest.name[len("manifest"):])


def read_manifest(path: Path, columns: list[str] = MANIFEST_COLUMNS, on_disk: bool = True) -> pd.DataFrame:
    """Rows of a manifest (or of a candidates log: LOG_COLUMNS), with `on_disk` only those whose image exists;
    a torn last line (a killed run) is dropped.

    Raises:
        InputError: the file is not a manifest CSV (not text, malformed rows, no image or source column).
    """
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a manifest (not UTF-8 text: byte {err.start})") from None
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    try:
        table = pd.read_csv(StringIO(text), dtype={"pid": str}, keep_default_na=False) if text else pd.DataFrame(
            columns=columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise InputError(f"{path}: not a manifest CSV ({' '.join(str(err).split())[:120]})") from None
    if not {"image", "source"} <= set(table.columns):
        raise InputError(f"{path}: not a manifest: it needs the columns image and source (found "
                         f"{', '.join(map(str, table.columns[:8]))})")
    table["image"] = table["image"].astype(str)
    for column in columns:  # Manifests of older versions lack the newer columns.
        if column not in table:
            table[column] = ""
    if not on_disk:
        return table
    exists = np.array([(path.parent / p).is_file() for p in table["image"]], dtype=bool)
    return table[exists].reset_index(drop=True)


def append_manifest(path: Path, rows: pd.DataFrame, columns: list[str] = MANIFEST_COLUMNS) -> None:
    """Append rows (no header) to a manifest or candidates log and fsync it: a row lands only after its image,
    and a kill leaves at most a torn last line, which `read_manifest` drops."""
    data = rows[columns].to_csv(header=False, index=False, lineterminator="\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    start = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as err:  # A full disk: cut back to the last whole row, so that a rerun appends after it.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        os.close(fd)


def write_manifest(path: Path, table: pd.DataFrame, columns: list[str] = MANIFEST_COLUMNS) -> None:
    """Write a whole manifest or candidates log (header and rows) atomically: a reader sees the old or the new."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        table.to_csv(f, index=False, lineterminator="\n", columns=columns)


def merge(out_dirs: list[str | os.PathLike], output: str | os.PathLike | None = None) -> WrittenFile:
    """Join the manifests of shard runs into one manifest.csv (image paths made relative to it); returns it."""
    if not out_dirs:
        raise InputError("merge needs at least one output folder")
    output = Path(output) if output else Path(out_dirs[0]) / "manifest.csv"
    parts = []
    for folder in map(Path, out_dirs):
        files = sorted(p for p in folder.glob("manifest*.csv") if p.resolve() != output.resolve())
        if not files:
            raise InputError(f"{folder}: no manifest*.csv to merge")
        for path in files:
            table = read_manifest(path)
            table["image"] = [os.path.relpath(path.parent / p, output.parent) for p in table["image"]]
            parts.append(table)
    merged = pd.concat(parts, ignore_index=True).drop_duplicates("image").sort_values(["pid", "image"])
    if merged.empty:  # Shards killed before their first batch: nothing to train on, say so rather than write it.
        raise InputError(f"{', '.join(map(str, out_dirs))}: the shard manifests list no image yet (rerun the shards)")
    write_manifest(output, merged)
    return WrittenFile(output, f"Merged the manifests of {len(out_dirs)} folder(s) into {output}: {len(merged)} "
                               f"images of {merged['pid'].nunique()} identities.")


def read_generated(manifest: str | os.PathLike) -> tuple[Path, pd.DataFrame]:
    """(manifest path, its rows whose image exists); `manifest` may be the generate output folder.

    Raises:
        InputError: no such manifest, not a manifest, or none of its images on disk (nothing to hand on).
    """
    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"{manifest}: no such manifest (run `reid-augment generate` first)")
    table = read_manifest(manifest)
    if table.empty:
        raise InputError(f"{manifest}: lists no generated image that is on disk beside it (an empty or torn "
                         f"manifest, or images moved away)")
    return manifest, table


def generated_items(manifest: str | os.PathLike, base_train: list[tuple]) -> list[tuple]:
    """Items for a re-ID framework's training list: each generated image takes its source's item (pid, camid,
    and whatever else the framework keeps) with its own path. Sources are matched by file name.

    Raises:
        InputError: no generated image's source is in `base_train` (the manifest is for another data set).
    """
    manifest, table = read_generated(manifest)
    by_name = {os.path.basename(item[0]): item for item in base_train}
    items = [(str(manifest.parent / image), *by_name[os.path.basename(source)][1:])
             for image, source in zip(table["image"], table["source"]) if os.path.basename(source) in by_name]
    if len(table) and not items:
        raise InputError(f"{manifest}: none of its {len(table)} sources is in this data set's training split "
                         f"(e.g. {table['source'].iloc[0]}); was it generated from another data set?")
    return items
