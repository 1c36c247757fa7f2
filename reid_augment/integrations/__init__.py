"""Datasets for re-ID frameworks that serve the original training images plus the generated ones.

torchreid and fast-reid both build a data set the same way: a stock class (Market1501, ...) reads its files and
hands train, query and gallery to its framework's ImageDataset. Only that base class differs between them, so the
joining of the manifest's images is written once here (`WithGenerated`, put in by `with_generated`) and each
integration passes its own ImageDataset. Importing this package needs neither framework.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from ..manifest import generated_items


class WithGenerated:
    """Mixin that sits between a stock data set class and its framework's ImageDataset in the MRO: when the stock
    class hands its lists on, the manifest's images join the training list with their sources' items (label,
    camera, ...). fast-reid may hand the training list over as a callable, read lazily.

    A mixin rather than an ImageDataset subclass because each framework has its own ImageDataset.
    """

    manifest: str = ""

    def __init__(self, train: Iterable[tuple] | Callable[[], Iterable[tuple]], query, gallery, **kwargs):
        train = list(train() if callable(train) else train)
        super().__init__(train + generated_items(self.manifest, train), query, gallery, **kwargs)


def with_generated(stock: type, image_dataset: type, name: str, manifest: str | os.PathLike) -> type:
    """The class `name`: `stock` plus the images of `manifest`, `WithGenerated` placed just above
    `image_dataset` (the framework's base class that `stock` hands its lists to)."""
    return type(name, (stock, WithGenerated, image_dataset), {"manifest": str(manifest)})
