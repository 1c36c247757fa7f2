"""torchreid dataset `market1501_vdg`: Market-1501 plus a manifest's images under one identity map.

Examples::

    import torchreid
    from reid_augment.integrations.torchreid import register

    register("work/generated/manifest.csv")  # adds the dataset name "market1501_vdg"
    datamanager = torchreid.data.ImageDataManager(root="reid-data", sources="market1501_vdg")
"""

from __future__ import annotations

import os

from ..export import find_market_dir, manifest_items, market_items

try:  # The PyPI build (torchreid 0.2.x) nests the package under torchreid.reid.
    from torchreid.reid.data import ImageDataset, register_image_dataset
except ImportError:  # A source install of deep-person-reid.
    from torchreid.data import ImageDataset, register_image_dataset


def train_items(market_dir, manifest) -> list[tuple[str, int, int]]:
    """Originals and generated images, pids relabelled 0..n-1 together and camids from 0, as torchreid wants."""
    items = [it for it in market_items(market_dir / "bounding_box_train") + manifest_items(manifest) if it[1] != 0]
    labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
    return [(path, labels[pid], cam - 1) for path, pid, cam in items]


class Market1501VDG(ImageDataset):
    """Market-1501 whose training split also holds the generated images of `manifest` (same pids)."""

    dataset_dir = "market1501"
    manifest: str | None = None

    def __init__(self, root: str = "", manifest: str | os.PathLike | None = None, **kwargs):
        manifest = manifest or self.manifest
        if manifest is None:
            raise ValueError("Market1501VDG needs a manifest: use register(manifest) or pass manifest=")
        market_dir = find_market_dir(os.path.expanduser(root))
        train = train_items(market_dir, manifest)
        query = [(p, pid, cam - 1) for p, pid, cam in market_items(market_dir / "query")]
        gallery = [(p, pid, cam - 1) for p, pid, cam in market_items(market_dir / "bounding_box_test")]
        super().__init__(train, query, gallery, **kwargs)


def register(manifest: str | os.PathLike, name: str = "market1501_vdg") -> type:
    """Register a Market1501VDG bound to `manifest` under `name`; returns the class."""
    cls = type("Market1501VDG", (Market1501VDG,), {"manifest": str(manifest)})
    register_image_dataset(name, cls)
    return cls
