from collections import Counter

import pandas as pd
import pytest
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.config import GenerateConfig
from reid_augment.generate import generate


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, market_root, checkpoint, cuhk_dir):
    out = tmp_path_factory.mktemp("generated")
    result = generate(market_root, checkpoint, cuhk_dir / "annotations.csv", out,
                      GenerateConfig(per_id=3, num_workers=0), device="cpu", progress=False)
    return result.manifest


def test_export_builds_a_market_root_the_stock_torchreid_loader_reads(manifest, market_root, tmp_path):
    torchreid = pytest.importorskip("torchreid")
    result = CliRunner().invoke(cli, ["export", str(manifest.parent), "--market-root", str(market_root.parent.parent),
                                      "-o", str(tmp_path / "market1501")])
    assert result.exit_code == 0, result.output
    assert "18 generated" in result.output
    try:
        from torchreid.reid.data.datasets.image.market1501 import Market1501
    except ImportError:
        from torchreid.data.datasets.image.market1501 import Market1501
    original = Market1501(root=str(market_root.parent.parent), verbose=False)
    augmented = Market1501(root=str(tmp_path), verbose=False)
    assert len(augmented.train) == len(original.train) + 18
    assert augmented.num_train_pids == original.num_train_pids == 6  # No new identities.
    assert len(augmented.query) == len(original.query) and len(augmented.gallery) == len(original.gallery)
    per_pid = Counter(item[1] for item in augmented.train)
    base = Counter(item[1] for item in original.train)
    assert all(per_pid[p] == base[p] + 3 for p in base)
    del torchreid


def test_torchreid_registered_dataset_serves_originals_and_generated(manifest, market_root):
    pytest.importorskip("torchreid")
    from reid_augment.integrations.torchreid import register

    cls = register(manifest, name="market1501_vdg_test")
    dataset = cls(root=str(market_root.parent.parent), verbose=False)
    generated = [item for item in dataset.train if "_vdg" in item[0]]
    assert len(generated) == 18 and dataset.num_train_pids == 6
    table = pd.read_csv(manifest, dtype={"pid": str})
    labels = {item[0].rsplit("/", 1)[-1][:4]: item[1] for item in dataset.train if "_vdg" not in item[0]}
    for path, label, camid, _ in generated:
        row = table[table["image"].str.endswith(path.rsplit("/", 1)[-1])].iloc[0]
        assert label == labels[row["pid"]] and camid == row["camid"] - 1
    try:
        import torchreid.reid.data as tdata
    except ImportError:
        import torchreid.data as tdata
    manager = tdata.ImageDataManager(root=str(market_root.parent.parent), sources="market1501_vdg_test",
                                     height=64, width=32, batch_size_train=4, workers=0, train_sampler="RandomSampler")
    assert manager.num_train_pids == 6
