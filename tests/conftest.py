"""Shared fixtures: the bundled real samples and small synthetic folders built from them."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, cuhk_dir) -> Path:
    """The tiny recipe after 400 reconstruction steps on the sample (~40 s): its output follows the target pose
    (at 150 steps it does not yet)."""
    from reid_augment.config import PairConfig, load_recipe
    from reid_augment.pairs import build_pairs, save_pair_set
    from reid_augment.poses import read_poses
    from reid_augment.train import train

    work = tmp_path_factory.mktemp("trained")
    save_pair_set(work, build_pairs(read_poses(cuhk_dir / "annotations.csv"), PairConfig(test_ids=2)), PairConfig())
    recipe = load_recipe("tiny", ["train.rec_steps=400", "train.ref_steps=0", "train.num_workers=0",
                                  "train.sample_every=1000"])
    return train(cuhk_dir, recipe, work / "run", work / "pairs-train.csv", work / "poses.csv", device="cpu",
                 progress=False)


def resized_copy(src: Path, out: Path, poses, sizes) -> Path:
    """Copy the images of `src` resized to sizes[i % len(sizes)] (H, W), with their poses scaled to match."""
    from PIL import Image

    from reid_augment.data import scale_pose
    from reid_augment.poses import PoseTable, write_poses

    out.mkdir(parents=True)
    names, coords = [], []
    for i, path in enumerate(sorted(src.glob("*.jpg"))):
        h, w = sizes[i % len(sizes)]
        with Image.open(path) as img:
            img.convert("RGB").resize((w, h), Image.BICUBIC).save(out / path.name, quality=98)
            frame = (img.height, img.width)
        names.append(path.name)
        coords.append(scale_pose(poses.coords[list(poses.names).index(path.name)], frame, (h, w)))
    write_poses(out / "annotations.csv", PoseTable.from_arrays(names, np.stack(coords)))
    return out


def _layout_name(kind: str, pid: int, cam: int, index: int, split: str) -> str:
    if kind == "duke":
        return f"{pid:04d}_c{cam}_f{index:07d}.jpg"
    # MSMT17 numbers train and test persons from 0000 each; the date keeps the names unique.
    return f"{pid:04d}_{index:03d}_{cam:02d}_{'0303morning' if split == 'train' else '0113noon'}_{index:04d}_0.jpg"


@pytest.fixture(scope="session")
def layout_roots(tmp_path_factory, cuhk_dir) -> dict:
    """The CUHK03 sample as DukeMTMC-reID and MSMT17 V1 roots where torchreid looks for them (ids 1-6 train,
    7-12 query (first image) and gallery), with a pose file each keyed by the new names."""
    from reid_augment.poses import PoseTable, read_poses, write_poses

    poses = read_poses(cuhk_dir / "annotations.csv")
    row = {n: i for i, n in enumerate(poses.names)}
    reid_data = tmp_path_factory.mktemp("layouts")
    roots = {"duke": reid_data / "dukemtmc-reid" / "DukeMTMC-reID", "msmt": reid_data / "msmt17" / "MSMT17_V1"}
    out = {"reid_data": reid_data}
    for kind, root in roots.items():
        names, coords, lists, queried = [], [], {"train": [], "val": [], "query": [], "test": []}, set()
        for index, path in enumerate(sorted(cuhk_dir.glob("*.jpg"))):
            pid, cam = int(path.name[:4]), int(path.name[6])
            split = "train" if pid <= 6 else "query" if pid not in queried else "test"
            queried.add(pid)
            new_pid = pid if kind == "duke" else (pid - 1) % 6  # MSMT17: persons 0000-0005 in each split.
            name = _layout_name(kind, new_pid, cam, index, split)
            if kind == "duke":
                folder = {"train": "bounding_box_train", "query": "query", "test": "bounding_box_test"}[split]
                dst = root / folder / name
            else:
                dst = root / ("train" if split == "train" else "test") / f"{new_pid:04d}" / name
                lists[split].append(f"{new_pid:04d}/{name} {new_pid}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dst)
            names.append(name)
            coords.append(poses.coords[row[path.name]])
        if kind == "msmt":
            for split, lines in lists.items():
                list_name = {"test": "list_gallery.txt"}.get(split, f"list_{split}.txt")
                (root / list_name).write_text("".join(f"{line}\n" for line in lines))
        write_poses(root.parent / "poses.csv", PoseTable.from_arrays(names, np.stack(coords)))
        out[kind] = root
    return out
