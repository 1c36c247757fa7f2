"""Shared fixtures: the bundled real samples and small synthetic folders built from them."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def cuhk_dir() -> Path:
    """116 real 128x64 crops of 12 identities with MediaPipe poses (annotations.csv)."""
    return SAMPLE / "cuhk03"


@pytest.fixture(scope="session")
def market_sample_dir() -> Path:
    """18 real Market-1501 crops with the field's OpenPose annotations."""
    return SAMPLE / "market"


@pytest.fixture(scope="session")
def market_test_annotations(tmp_path_factory) -> Path:
    """The field's 19,732-row Market-1501 test annotation file."""
    out = tmp_path_factory.mktemp("market") / "market-annotation-test.csv"
    with gzip.open(DATA / "market-annotation-test.csv.gz", "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


@pytest.fixture(scope="session")
def market_test_pairs(tmp_path_factory) -> Path:
    """The field's 12,000 standard Market-1501 test pairs."""
    out = tmp_path_factory.mktemp("market") / "market-pairs-test.csv"
    with gzip.open(DATA / "market-pairs-test.csv.gz", "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


@pytest.fixture
def cuhk_copy(tmp_path, cuhk_dir) -> Path:
    """A writable copy of the CUHK03 sample images (without the annotation file)."""
    out = tmp_path / "images"
    shutil.copytree(cuhk_dir, out, ignore=shutil.ignore_patterns("*.csv"))
    return out
