"""Shared fixtures: the bundled real samples and small synthetic folders built from them."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from reid_augment.checkpoint import save_checkpoint
from reid_augment.config import ModelConfig
from reid_augment.networks import VDG

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


TINY_MODEL = ModelConfig(image_size=(64, 32), num_levels=3, base_channels=8, z_dim=8, ref_levels=3, ref_channels=8,
                         disc_channels=8, disc_levels=3)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny VDG checkpoint (step 7): enough to test everything downstream of training."""
    torch.manual_seed(0)
    model = VDG(TINY_MODEL)
    path = tmp_path_factory.mktemp("ckpt") / "latest.pt"
    save_checkpoint(path, model_config=TINY_MODEL, step=7, rec=model.rec.state_dict(), ref=model.ref.state_dict())
    return path


@pytest.fixture(scope="session")
def market_root(tmp_path_factory, cuhk_dir) -> Path:
    """A Market-1501-shaped root from the CUHK03 sample: ids 1-6 train, 7-12 query (camera 1) and gallery."""
    root = tmp_path_factory.mktemp("reid-data") / "market1501" / "Market-1501-v15.09.15"
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
        (root / sub).mkdir(parents=True)
    queried = set()
    for path in sorted(cuhk_dir.glob("*.jpg")):
        pid = int(path.name[:4])
        sub = "bounding_box_train" if pid <= 6 else "query" if pid not in queried else "bounding_box_test"
        queried.add(pid)
        shutil.copy(path, root / sub / path.name)
    return root
