"""torchreid datasets that serve any stock image data set plus a manifest's generated images.

`register(manifest, base="market1501")` registers `<base>_vdg`: the base class's own train, query and
gallery (read by torchreid's own code from its usual root), plus every generated image under its source's
(relabelled) identity and camera. Works for any torchreid image data set (`market1501`, `dukemtmcreid`,
`msmt17`, `cuhk03`, ...) and both import paths (the PyPI build's `torchreid.reid`, a source install's
`torchreid`).

Examples::

    import torchreid
    from reid_augment.integrations.torchreid import register

    register("work/generated/manifest.csv", base="dukemtmcreid")  # adds "dukemtmcreid_vdg"
    datamanager = torchreid.reid.data.ImageDataManager(root="reid-data", sources="dukemtmcreid_vdg")
"""

from __future__ import annotations

import os

from ..errors import InputError
from . import with_generated

try:  # The PyPI build (torchreid 0.2.x) nests the package under torchreid.reid.
    from torchreid.reid.data import ImageDataset
    from torchreid.reid.data import datasets as _datasets
except ImportError:  # A source install of deep-person-reid.
    from torchreid.data import ImageDataset
    from torchreid.data import datasets as _datasets


def _registry() -> dict:
    return getattr(_datasets, "__image_datasets")  # torchreid's name -> class map (a module-private global).


def register(manifest: str | os.PathLike, base: str = "market1501", name: str | None = None) -> type:
    """Register `base` plus the images of `manifest` under `name` (default `<base>_vdg`); returns the class.

    Registering the same name again replaces it (handy in notebooks).

    Raises:
        InputError: `base` is not a torchreid image data set.
    """
    datasets = _registry()
    if base not in datasets:
        raise InputError(f"unknown torchreid image data set {base!r}; known: {', '.join(sorted(datasets))}")
    stock = datasets[base]
    cls = with_generated(stock, ImageDataset, f"{stock.__name__}VDG", manifest)
    datasets[name or f"{base}_vdg"] = cls
    return cls
