import numpy as np
import pytest
from PIL import Image

from reid_augment.errors import InputError
from reid_augment.images import check_images, identities, load_rgb, parse_market_name, scan_images


def test_parse_market_name():
    assert parse_market_name("0002_c1s1_000451_03.jpg") == ("0002", 1)
    assert parse_market_name("-1_c5s3_086412_11.jpg") == ("-1", 5)
    assert parse_market_name("path/to/1501_c6s4_001877_02.jpg") == ("1501", 6)
    with pytest.raises(ValueError, match="not a re-ID file name"):
        parse_market_name("person.jpg")
    assert identities(["alice/img1.jpg"])[0].tolist() == ["alice"]


def test_flat_folder_excludes_distractors_and_counts_them(cuhk_copy):
    Image.new("RGB", (64, 128)).save(cuhk_copy / "-1_c1s1_000001_00.jpg")
    Image.new("RGB", (64, 128)).save(cuhk_copy / "0000_c2s1_000001_00.jpg")
    (cuhk_copy / "notes.txt").write_text("not an image")
    found = scan_images(cuhk_copy)
    assert len(found.images) == 116 and found.distractors == 2
    assert set(found.images["split"]) == {"train"}
    assert found.images["person_id"].nunique() == 12
    assert found.images["camera_id"].isin([1, 2]).all()


def test_market_root_and_generic_layout(tmp_path, cuhk_dir):
    root = tmp_path / "Market"
    for split in ("bounding_box_train", "query"):
        (root / split).mkdir(parents=True)
    src = sorted(cuhk_dir.glob("*.jpg"))
    for p in src[:5]:
        (root / "bounding_box_train" / p.name).write_bytes(p.read_bytes())
    (root / "query" / src[6].name).write_bytes(src[6].read_bytes())
    found = scan_images(root).images
    assert found.groupby("split").size().to_dict() == {"query": 1, "train": 5}

    generic = tmp_path / "generic"
    for pid in ("alice", "bob"):
        (generic / pid).mkdir(parents=True)
        Image.new("RGB", (64, 128)).save(generic / pid / "a.png")
    found = scan_images(generic).images
    assert found["name"].tolist() == ["alice/a.png", "bob/a.png"]
    assert found["person_id"].tolist() == ["alice", "bob"] and (found["camera_id"] == -1).all()


def test_corrupt_empty_and_odd_modes(cuhk_copy):
    (cuhk_copy / "0001_c1s1_999999_00.jpg").write_bytes(b"")
    (cuhk_copy / "0002_c1s1_999999_00.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("L", (64, 128), 100).save(cuhk_copy / "0003_c1s1_999999_00.png")
    Image.new("RGBA", (64, 128), (1, 2, 3, 4)).save(cuhk_copy / "0004_c1s1_999999_00.png")
    checked = check_images(scan_images(cuhk_copy), n_jobs=2)
    reasons = dict(checked.skipped)
    assert reasons["0001_c1s1_999999_00.jpg"] == "empty file"
    assert "unreadable image" in reasons["0002_c1s1_999999_00.jpg"]
    assert len(checked.images) == 118
    gray = load_rgb(cuhk_copy / "0003_c1s1_999999_00.png")
    assert gray.shape == (128, 64, 3) and gray.dtype == np.uint8 and (gray == 100).all()
    assert (load_rgb(cuhk_copy / "0004_c1s1_999999_00.png")[0, 0] == (1, 2, 3)).all()


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        scan_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        scan_images(tmp_path / "empty")
