import subprocess
import sys

import pandas as pd

from reid_augment.integrations import with_generated
from reid_augment.manifest import (LOG_COLUMNS, MANIFEST_COLUMNS, append_manifest, candidates_path, manifest_name,
                                   read_manifest, write_manifest)


def _rows(*names):
    return pd.DataFrame([{c: "" for c in MANIFEST_COLUMNS} | {"image": f"images/{n}_vdg00.jpg", "pid": n[:4],
                                                              "source": f"{n}.jpg"} for n in names])


def test_manifest_module_and_integrations_package_import_without_torch():
    code = ("import sys, reid_augment.manifest, reid_augment.integrations; "
            "assert not {'torch', 'reid_augment.generate', 'reid_augment.export'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_names_and_append_write_read_round_trip(tmp_path):
    assert manifest_name() == "manifest.csv" and manifest_name((1, 4)) == "manifest.shard-1-of-4.csv"
    path = tmp_path / manifest_name((1, 4))
    assert candidates_path(path).name == "candidates.shard-1-of-4.csv"
    (tmp_path / "images").mkdir()
    for name in ("0001_a", "0002_b"):
        (tmp_path / "images" / f"{name}_vdg00.jpg").write_bytes(b"")
    write_manifest(path, _rows("0001_a"))
    append_manifest(path, _rows("0002_b", "0003_c"))  # 0003_c's image is not on disk.
    with open(path, "a") as f:
        f.write("images/torn")  # A killed run's last line.
    assert list(read_manifest(path)["image"]) == ["images/0001_a_vdg00.jpg", "images/0002_b_vdg00.jpg"]
    assert len(read_manifest(path, on_disk=False)) == 3
    assert list(read_manifest(tmp_path / "none.csv", LOG_COLUMNS).columns) == LOG_COLUMNS


def test_with_generated_joins_the_manifest_images_to_the_stock_training_list(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0001_a_vdg00.jpg").write_bytes(b"")
    write_manifest(tmp_path / "manifest.csv", _rows("0001_a"))

    class ImageDataset:  # Stands for torchreid's or fast-reid's.
        def __init__(self, train, query, gallery, **kwargs):
            self.train, self.kwargs = train, kwargs

    class Stock(ImageDataset):
        def __init__(self, **kwargs):
            super().__init__(lambda: [("/data/0001_a.jpg", 7, 2)], [], [], **kwargs)

    dataset = with_generated(Stock, ImageDataset, "StockVDG", tmp_path / "manifest.csv")(verbose=False)
    assert dataset.train == [("/data/0001_a.jpg", 7, 2), (str(tmp_path / "images" / "0001_a_vdg00.jpg"), 7, 2)]
    assert dataset.kwargs == {"verbose": False}
