"""Shared fixtures: the bundled real samples and small synthetic folders built from them."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from reid_augment.checkpoints import save_checkpoint
from reid_augment.config import ModelConfig
from reid_augment.networks import VDG

pytest_plugins = ["ci_skips"]  # Under CI=true, a skip for a package that did not import fails.

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
    recipe = load_recipe("tiny", ["train.rec_steps=400", "train.ref_steps=0", "train.sample_every=1000"])
    return train(cuhk_dir, recipe, work / "run", work / "pairs-train.csv", work / "poses.csv", device="cpu",
                 progress=False)


def resized_copy(src: Path, out: Path, poses, sizes) -> Path:
    """Copy the images of `src` resized to sizes[i % len(sizes)] (H, W), with their poses scaled to match."""
    from PIL import Image

    from reid_augment.keypoints import scale_pose
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


DUKE_SIZES = ((128, 64), (160, 64), (144, 72), (112, 48))  # DukeMTMC-reID's crops are of many sizes.


def _msmt_name(pid: int, index: int, cam: int, date: str) -> str:
    return f"{pid:04d}_{index:03d}_{cam:02d}_{date}_{index:04d}_0.jpg"


def _split_of(pid: int, queried: set, index_in_person: int) -> str:
    """ids 1-6 train (every 4th of their images validation), 7-12 query (first image) and gallery."""
    if pid <= 6:
        return "val" if index_in_person % 4 == 3 else "train"
    split = "query" if pid not in queried else "test"
    queried.add(pid)
    return split


def _write_layout(kind: str, root: Path, cuhk_dir: Path, poses) -> None:
    """One layout of the CUHK03 sample, with a pose file beside it keyed by the new names (one row per name)."""
    from PIL import Image

    from reid_augment.keypoints import scale_pose
    from reid_augment.poses import PoseTable, write_poses

    row = {n: i for i, n in enumerate(poses.names)}
    names, coords, lists, queried, counters = [], [], {"train": [], "val": [], "query": [], "test": []}, set(), {}
    per_person: dict[int, int] = {}
    for index, path in enumerate(sorted(cuhk_dir.glob("*.jpg"))):
        pid, cam = int(path.name[:4]), int(path.name[6])
        split = _split_of(pid, queried, per_person.setdefault(pid, 0))
        per_person[pid] += 1
        if split == "val" and kind == "duke":
            split = "train"
        pose = poses.coords[row[path.name]]
        if kind == "duke":
            name = f"{pid:04d}_c{cam}_f{index:07d}.jpg"
            dst = root / {"train": "bounding_box_train", "query": "query", "test": "bounding_box_test"}[split] / name
            h, w = DUKE_SIZES[index % len(DUKE_SIZES)]
            dst.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as img:
                pose = scale_pose(pose, (img.height, img.width), (h, w))
                img.convert("RGB").resize((w, h), Image.BICUBIC).save(dst, quality=98)
        else:
            new_pid = (pid - 1) % 6  # MSMT17: persons 0000-0005 in each split.
            folder = {"msmt": ("train", "test"), "msmt2": ("mask_train_v2", "mask_test_v2")}[kind][
                split in ("query", "test")]
            if kind == "msmt":  # V1: dates by split and a running index keep every name unique.
                name = _msmt_name(new_pid, index, cam, "0303morning" if folder == "train" else "0113noon")
            else:  # V2: each folder counts each person's images from 0, one date: test names repeat train ones.
                k = counters[folder, new_pid] = counters.get((folder, new_pid), -1) + 1
                name = _msmt_name(new_pid, k, cam, "0303morning")
            dst = root / folder / f"{new_pid:04d}" / name
            lists[split].append(f"{new_pid:04d}/{name} {new_pid}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dst)
        if name not in names:
            names.append(name)
            coords.append(pose)
    if kind != "duke":
        for split, lines in lists.items():
            list_name = {"test": "list_gallery.txt"}.get(split, f"list_{split}.txt")
            (root / list_name).write_text("".join(f"{line}\n" for line in lines))
    write_poses(root.parent / "poses.csv", PoseTable.from_arrays(names, np.stack(coords)))


@pytest.fixture(scope="session")
def layout_roots(tmp_path_factory, cuhk_dir) -> dict:
    """The CUHK03 sample as DukeMTMC-reID (crops of four sizes), MSMT17 V1 and MSMT17 V2 roots where torchreid
    looks for them (ids 1-6 train, every 4th of their images validation for MSMT17, 7-12 query (first image) and
    gallery), with a pose file each keyed by the new names. V2 lives under its own reid-data root (torchreid
    prefers V1), and its test names repeat training names, as MSMT17's two splits, both from person 0000, can."""
    from reid_augment.poses import read_poses

    poses = read_poses(cuhk_dir / "annotations.csv")
    reid_data, reid_data_v2 = tmp_path_factory.mktemp("layouts"), tmp_path_factory.mktemp("layouts-v2")
    roots = {"duke": reid_data / "dukemtmc-reid" / "DukeMTMC-reID", "msmt": reid_data / "msmt17" / "MSMT17_V1",
             "msmt2": reid_data_v2 / "msmt17" / "MSMT17_V2"}
    for kind, root in roots.items():
        _write_layout(kind, root, cuhk_dir, poses)
    return {"reid_data": reid_data, "reid_data_v2": reid_data_v2, **roots}


@pytest.fixture(scope="session")
def cuhk03_torchreid(tmp_path_factory, cuhk_dir) -> dict:
    """The CUHK03 sample laid out as torchreid 0.2.5's CUHK03 class reads it once extracted: cuhk03/ with
    images_detected/ and images_labeled/ of `<pair>_<person>_<view>_<index>.png` (campus pair 1, persons 1-12),
    the .mat files it checks for (empty: with the split files present it never opens them) and its four split
    files; the new protocol's split: persons 1-6 train (relabelled 0-5), 7-12 query (first image) and gallery."""
    import json

    from PIL import Image

    from reid_augment.poses import PoseTable, read_poses, write_poses

    poses = read_poses(cuhk_dir / "annotations.csv")
    row = {n: i for i, n in enumerate(poses.names)}
    reid_data = tmp_path_factory.mktemp("cuhk03-torchreid")
    top = reid_data / "cuhk03"
    for folder in ("images_detected", "images_labeled", "cuhk03_release"):
        (top / folder).mkdir(parents=True)
    for empty in ("cuhk03_release/cuhk-03.mat", "cuhk03_new_protocol_config_detected.mat",
                  "cuhk03_new_protocol_config_labeled.mat"):
        (top / empty).write_bytes(b"")
    names, coords, count, queried = [], [], {}, set()
    splits = {kind: {"train": [], "query": [], "gallery": []} for kind in ("detected", "labeled")}
    for path in sorted(cuhk_dir.glob("*.jpg")):
        pid, view = int(path.name[:4]), int(path.name[6])
        count[pid] = count.get(pid, 0) + 1
        name = f"1_{pid:03d}_{view}_{count[pid]:02d}.png"
        with Image.open(path) as img:
            img.convert("RGB").save(top / "images_detected" / name)
        shutil.copy(top / "images_detected" / name, top / "images_labeled" / name)
        split = "train" if pid <= 6 else "query" if pid not in queried else "gallery"
        queried.add(pid)
        for kind in splits:
            label = pid - 1 if split == "train" else pid
            splits[kind][split].append([str(top / f"images_{kind}" / name), label, view - 1])
        names.append(name)
        coords.append(poses.coords[row[path.name]])
    for kind, split in splits.items():
        record = [{**split, **{f"num_{k}_pids": len({p for _, p, _ in v}) for k, v in split.items()},
                   **{f"num_{k}_imgs": len(v) for k, v in split.items()}}]
        for protocol in ("new", "classic"):
            (top / f"splits_{protocol}_{kind}.json").write_text(json.dumps(record))
    write_poses(reid_data / "poses.csv", PoseTable.from_arrays(names, np.stack(coords)))
    return {"reid_data": reid_data, "images": top / "images_detected", "poses": reid_data / "poses.csv"}
