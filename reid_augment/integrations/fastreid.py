"""fast-reid datasets that serve any stock data set plus a manifest's generated images.

`register(manifest, base="Market1501")` adds `<base>VDG` to fast-reid's `DATASET_REGISTRY`: the stock class's
train, query and gallery (read by fast-reid's own code), plus every generated image under its source's
identity and camera names (`market1501_<pid>`, `dukemtmc_<pid>`, `msmt17_<pid>`, ...).

The index build `fastreid==1.4.0` (install with `pip install --no-deps fastreid==1.4.0 yacs tabulate`) predates
torch 2 and Python 3.10: importing `fastreid.data` needs `torch._six.string_classes` and `collections.Mapping`,
which fast-reid's own source later stopped using. Importing this module adds those two names when they are
missing, and nothing else.

Examples::

    from reid_augment.integrations.fastreid import register
    register("work/generated/manifest.csv", base="DukeMTMC")  # then DATASETS.NAMES: ("DukeMTMCVDG",)
"""

from __future__ import annotations

import collections
import collections.abc
import os
import sys
import types

from ..errors import InputError
from . import with_generated


def _shim_old_fastreid() -> None:
    """The two names fastreid 1.4.0 imports that torch 2 and Python 3.10 removed."""
    try:
        import torch._six  # noqa: F401
    except ImportError:
        six = types.ModuleType("torch._six")
        six.string_classes = (str,)
        sys.modules["torch._six"] = six
    if not hasattr(collections, "Mapping"):
        collections.Mapping = collections.abc.Mapping


_shim_old_fastreid()

from fastreid.data.datasets import DATASET_REGISTRY  # noqa: E402  (after the shims)
from fastreid.data.datasets.bases import ImageDataset  # noqa: E402


def register(manifest: str | os.PathLike, base: str = "Market1501", name: str | None = None) -> type:
    """Register `base` plus the images of `manifest` as `name` (default `<base>VDG`); returns the class.

    Raises:
        InputError: `base` is not in fast-reid's registry.
    """
    known = DATASET_REGISTRY._obj_map  # Registry.register refuses a second registration of a name.
    if base not in known:
        raise InputError(f"unknown fast-reid data set {base!r}; known: {', '.join(sorted(known))}")
    name = name or f"{base}VDG"
    cls = with_generated(known[base], ImageDataset, name, manifest)
    known[name] = cls
    return cls
