"""fast-reid dataset `Market1501VDG`: Market-1501 plus a manifest's images, in fast-reid's registry.

fast-reid is not on the package index; this follows its documented dataset contract (a class in
`fastreid.data.datasets.DATASET_REGISTRY`, built with `root=`, whose training items are
(path, "<dataset_name>_<pid>", "<dataset_name>_<camid>") and test items (path, pid, camid)).

Examples::

    from reid_augment.integrations.fastreid import register
    register("work/generated/manifest.csv")   # then DATASETS.NAMES: ("Market1501VDG",) in the config
"""

from __future__ import annotations

import os

from ..export import find_market_dir, manifest_items, market_items

from fastreid.data.datasets import DATASET_REGISTRY  # noqa: E402  (imported only when this module is used)
from fastreid.data.datasets.bases import ImageDataset


class _Market1501VDG(ImageDataset):
    dataset_name = "market1501"  # Shares fast-reid's Market1501 identity names: generated images keep them.
    manifest: str | None = None

    def __init__(self, root: str = "datasets", **kwargs):
        market_dir = find_market_dir(root)
        name = self.dataset_name
        train = [(p, f"{name}_{pid}", f"{name}_{cam - 1}")
                 for p, pid, cam in market_items(market_dir / "bounding_box_train") + manifest_items(self.manifest)]
        query = [(p, pid, cam - 1) for p, pid, cam in market_items(market_dir / "query")]
        gallery = [(p, pid, cam - 1) for p, pid, cam in market_items(market_dir / "bounding_box_test")]
        super().__init__(train, query, gallery, **kwargs)


def register(manifest: str | os.PathLike, name: str = "Market1501VDG") -> type:
    """Register a dataset bound to `manifest` in fast-reid's DATASET_REGISTRY under `name`."""
    cls = type(name, (_Market1501VDG,), {"manifest": str(manifest)})
    DATASET_REGISTRY.register(cls)
    return cls
