"""Which real training images a re-ID run keeps: a range of persons and K images of each (the low-data regime).

Generated images pay where real data is scarce, so the benchmark can shrink the real training set. Which images
stay is a pure function of (names, persons, K, seed), so the generator's input folder (`select_folder`) and the
benchmark's training list pick the same ones, and the record says exactly what was kept. The generator that
augments them must never have seen the dropped images: train it on other persons (see the README's protocol).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Regime:
    """Which real training images stay: persons `first`..`last` (as numbers, inclusive; None: all) and at most
    `per_id` images of each (None: all), drawn with `seed`."""

    persons: tuple[int, int] | None = None
    per_id: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.per_id is not None and self.per_id < 1:
            raise InputError(f"--real-per-id {self.per_id}: at least 1")
        if self.persons is not None and (self.persons[0] > self.persons[1] or self.persons[0] < 0):
            raise InputError(f"--persons {self.persons[0]}-{self.persons[1]}: FIRST-LAST with 0 <= FIRST <= LAST")

    @property
    def full(self) -> bool:
        return self.persons is None and self.per_id is None

    def describe(self) -> str:
        who = "every training person" if self.persons is None else f"persons {self.persons[0]}-{self.persons[1]}"
        what = "all their real images" if self.per_id is None else f"{self.per_id} real images each (seed {self.seed})"
        return f"{who}, {what}"


def parse_persons(text: str | None) -> tuple[int, int] | None:
    """'322-643' -> (322, 643); None stays None."""
    if text is None:
        return None
    try:
        first, last = (int(v) for v in text.split("-"))
    except ValueError:
        raise InputError(f"--persons {text!r}: expected FIRST-LAST person numbers, e.g. 322-643") from None
    return first, last


@dataclass(frozen=True)
class Selection:
    keep: np.ndarray      # Boolean, one per input image.
    short: int            # Identities with fewer than K images (they keep all they have).
    identities: int
    folder: Path | None = None  # Where `select_folder` wrote the selection.

    def summary(self) -> str:
        note = f"; {self.short} of them have fewer than K and keep all they have" if self.short else ""
        wrote = f"; wrote {self.folder}" if self.folder is not None else ""
        return f"{int(self.keep.sum())} real images of {self.identities} identities kept{note}{wrote}"


def select(names: list[str], person_ids: list[str], regime: Regime) -> Selection:
    """Which of the named images stay under `regime`. Per person, K names are drawn from the sorted names with a
    generator seeded by (seed, person number), so the choice of one person does not depend on the others."""
    names, pids = np.asarray(names, dtype=object), np.asarray(person_ids, dtype=object)
    keep = np.ones(len(names), dtype=bool)
    if regime.persons is not None:
        numbers = np.array([int(p) if str(p).lstrip("-").isdigit() else -1 for p in pids])
        keep &= (numbers >= regime.persons[0]) & (numbers <= regime.persons[1])
    short, ids = 0, sorted(set(pids[keep]))
    if regime.per_id is not None:
        for pid in ids:
            rows = np.flatnonzero(keep & (pids == pid))
            rows = rows[np.argsort(names[rows].astype(str), kind="stable")]
            if len(rows) <= regime.per_id:
                short += len(rows) < regime.per_id
                continue
            number = int(pid) if str(pid).isdigit() else abs(hash(pid)) % 2**31
            chosen = np.random.default_rng([regime.seed, number]).choice(len(rows), regime.per_id, replace=False)
            drop = np.delete(rows, chosen)
            keep[drop] = False
    if not keep.any():
        raise InputError(f"no training image left under {regime.describe()}")
    return Selection(keep, short, len(ids))


def select_folder(root: str | os.PathLike, out: str | os.PathLike, regime: Regime,
                  poses: str | os.PathLike | None = None) -> Selection:
    """A Market-1501-layout folder at OUT holding (as symlinks) the training images `regime` keeps, and the
    query and gallery of ROOT as they are; with `poses`, OUT/annotations.csv holds the kept images' rows. This is
    the generator's input in the low-data protocol: it can only read the kept images."""
    from ..fileio import atomic_write_text
    from ..images import scan_images

    found = scan_images(root, splits=("train",))
    table = found.images
    selection = select(list(table["name"]), list(table["person_id"]), regime)
    out = Path(out)
    train = out / "bounding_box_train"
    train.mkdir(parents=True, exist_ok=True)
    for path in table["path"][selection.keep]:
        link = train / os.path.basename(path)
        if not link.exists():
            link.symlink_to(Path(path).resolve())
    test_dir = found.layout.root
    for split in ("query", "bounding_box_test"):
        if (test_dir / split).is_dir() and not (out / split).exists():
            (out / split).symlink_to((test_dir / split).resolve())
    if poses is not None:  # The rows themselves, copied as text: the file stays in its own format.
        kept = set(table["name"][selection.keep])
        try:
            lines = Path(poses).read_text().splitlines(keepends=True)
        except OSError as err:
            raise InputError(f"{poses}: cannot read the pose file ({err.strerror})") from None
        rows = [line for line in lines[1:] if line.split(":", 1)[0].strip() in kept]
        atomic_write_text(out / "annotations.csv", "".join(lines[:1] + rows))
    return dataclasses.replace(selection, folder=out)
