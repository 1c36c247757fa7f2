"""Pose tables and the Def-GAN/PATN annotation CSV that the whole field reads and writes.

File format: header `name:keypoints_y:keypoints_x`, then one row per image,
`0002_c1s1_000451_03.jpg: [y0, ..., y17]: [x0, ..., x17]`, integer pixels, -1 for a missing joint.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .fileio import atomic_open
from .keypoints import MISSING, NUM_JOINTS

HEADER = "name:keypoints_y:keypoints_x"
_MAX_REPORTED = 5


@dataclass
class PoseTable:
    """Poses of named images.

    Attributes:
        names: [N] image names (the key shared with pair files).
        coords: [N, K, 2] float (y, x) pixel coordinates, -1 for a missing joint.
        lines: [N] line numbers in the file they were read from (0 when made in memory).
    """

    names: np.ndarray
    coords: np.ndarray
    lines: np.ndarray

    @classmethod
    def from_arrays(cls, names, coords) -> "PoseTable":
        names = np.asarray(list(names), dtype=object)
        coords = np.asarray(coords, dtype=np.float32).reshape(len(names), NUM_JOINTS, 2)
        return cls(names, coords, np.zeros(len(names), dtype=np.int64))

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, keep: np.ndarray) -> "PoseTable":
        return PoseTable(self.names[keep], self.coords[keep], self.lines[keep])

    def lookup(self, names) -> np.ndarray:
        """Coordinates of the given names, [M, K, 2]; KeyError names the first unknown one."""
        index = {n: i for i, n in enumerate(self.names)}
        return self.coords[[index[n] for n in names]]


def _parse_joints(text: str) -> list[float]:
    try:
        values = json.loads(text)
    except RecursionError:
        raise ValueError("joints nested too deeply") from None
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise ValueError("joints are not a list of numbers")
    if len(values) != NUM_JOINTS:
        raise ValueError(f"{len(values)} joints, expected {NUM_JOINTS}")
    return values


def read_poses(path: str | os.PathLike) -> PoseTable:
    """Read a Def-GAN/PATN annotation CSV.

    Raises:
        InputError: missing file, not UTF-8 text, wrong header, or malformed rows (each named by its line number).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such pose file")
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark from a spreadsheet is no header error.
            lines = f.read().splitlines()
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a pose CSV (not UTF-8 text: byte {err.start})") from None
    if not lines or lines[0].replace(" ", "") != HEADER:
        raise InputError(f"{path}: line 1: expected the header {HEADER!r}, got {lines[0][:60] if lines else ''!r}")
    names, coords, numbers, errors = [], [], [], []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.rsplit(":", 2)
        try:
            if len(parts) != 3:
                raise ValueError("expected 'name: [y...]: [x...]'")
            name = parts[0].strip()
            if not name:
                raise ValueError("no image name")
            if name in seen:
                raise ValueError(f"{name[:60]} already given on line {seen[name]}")
            ys, xs = _parse_joints(parts[1]), _parse_joints(parts[2])
        except ValueError as err:  # json.JSONDecodeError is a ValueError too.
            errors.append(f"line {lineno}: {' '.join(str(err).split())[:100]}")
            continue
        seen[name] = lineno
        names.append(name)
        coords.append(np.stack([ys, xs], axis=-1))
        numbers.append(lineno)
    if errors:
        more = f" (and {len(errors) - _MAX_REPORTED} more)" if len(errors) > _MAX_REPORTED else ""
        raise InputError(f"{path}: {len(errors)} malformed rows: {'; '.join(errors[:_MAX_REPORTED])}{more}")
    coords_arr = np.asarray(coords, dtype=np.float32).reshape(-1, NUM_JOINTS, 2)
    coords_arr[(coords_arr[..., 0] < 0) | (coords_arr[..., 1] < 0)] = MISSING
    return PoseTable(np.asarray(names, dtype=object), coords_arr, np.asarray(numbers, dtype=np.int64))


def format_pose_rows(table: PoseTable) -> list[str]:
    """The CSV rows of `table` (no header), coordinates rounded to whole pixels as the field stores them."""
    ints = np.where(table.coords < 0, MISSING, np.rint(table.coords)).astype(np.int64)
    return [f"{n}: {json.dumps(c[:, 0].tolist())}: {json.dumps(c[:, 1].tolist())}\n" for n, c in zip(table.names, ints)]


def write_poses(path: str | os.PathLike, table: PoseTable) -> None:
    """Write `table` as a Def-GAN/PATN annotation CSV, atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(HEADER + "\n")
        f.writelines(format_pose_rows(table))
