"""Generators shipped in the package, addressable by name: `--checkpoint cuhk03-small` (see the README's model card).

A bundled generator is a .safetensors file in `reid_augment/generators/`, named after what it was trained on and
with which recipe; its metadata records how it was made and what it scored.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

GENERATORS_DIR = Path(__file__).resolve().parent / "generators"


def bundled_generators() -> dict[str, Path]:
    """Name -> file of every generator shipped in the package."""
    return {p.stem: p for p in sorted(GENERATORS_DIR.glob("*.safetensors"))}


def resolve_generator(name_or_path: str | os.PathLike) -> Path:
    """The file a `--checkpoint` value means: an existing path as given, else the bundled generator of that name.

    Raises:
        InputError: neither a file nor a bundled generator's name.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = bundled_generators()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    names = ", ".join(bundled) or "none installed"
    raise InputError(f"{name_or_path}: no such checkpoint file, and not the name of a bundled generator ({names})")
