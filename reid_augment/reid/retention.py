"""Identity retention: can a re-ID model still find the person in a generated image?

The generated images of the test pairs are used as queries against the data set's gallery, under torchreid's
protocol (same person and camera left out; the 0000 distractors stay, the -1 junk goes), with a re-ID model
trained on the data set's real training images. Their mAP over the mAP of the pairs' source crops as queries is
the share of the person the generator kept: copying the source scores 1.0 (and fails the pose, so read it beside
PCKh); the real targets as queries say how hard the new poses are for the model anyway.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pandas as pd

from ..errors import InputError
from ..images import parse_market_name, scan_images
from . import fastdata
from . import model as reid_model


def _features(judge: reid_model.ReidModel, paths: list[str], what: str, progress: bool):
    decoded = fastdata.decode(paths, *judge.size, progress=progress, desc=f"re-ID features ({what})")
    if decoded.skipped:
        raise InputError(f"{decoded.skipped[0][0]}: {decoded.skipped[0][1]}")
    return judge.predict(decoded.images)[0]


def _ranked(judge, query_paths, query_names, gallery, progress: bool, what: str) -> tuple[float, float]:
    tr = reid_model.torchreid()
    qf = _features(judge, query_paths, what, progress)
    pid_cam = [parse_market_name(n) for n in query_names]
    qp = np.array([p for p, _ in pid_cam])
    qc = np.array([c for _, c in pid_cam])
    gf, gp, gc = gallery
    ids = {p: i for i, p in enumerate(sorted(set(qp) | set(gp)))}
    qp, gpi = np.array([ids[p] for p in qp]), np.array([ids[p] for p in gp])
    distmat = tr.metrics.compute_distance_matrix(qf, gf, "euclidean").numpy()
    kept = len(gpi) - ((gpi[None] == qp[:, None]) & (gc[None] == qc[:, None])).sum(1).max()
    with contextlib.redirect_stdout(io.StringIO()):  # torchreid notes queries without a match in the gallery.
        cmc, mean_ap = tr.metrics.evaluate_rank(distmat, qp, gpi, qc, gc, max_rank=int(max(1, min(50, kept))))
    return float(mean_ap), float(cmc[0])


def identity_retention(pairs: pd.DataFrame, paths: dict[str, str], root: str | os.PathLike,
                       checkpoint: str | os.PathLike, arch: str | None = None, device: str = "auto",
                       progress: bool = True) -> dict:
    """mAP and Rank-1 of the pairs' generated images (column `image`), their sources (`from`) and their real
    targets (`to`) as queries against ROOT's gallery; retention = generated mAP / source mAP.

    Raises:
        InputError: ROOT has no gallery, no pair's person is in it, or the checkpoint does not load.
    """
    from ..device import resolve_device

    try:
        gallery_set = scan_images(root, include_distractors=True, splits=("test",)).images
    except InputError as err:
        raise InputError(f"--reid-model needs a data set with a gallery (bounding_box_test): {err}") from None
    gallery_set = gallery_set[gallery_set["person_id"] != "-1"]
    if gallery_set.empty:
        raise InputError(f"{root}: no gallery images; --reid-model ranks the generated images against them")
    judge = reid_model.load(checkpoint, arch=arch, device=resolve_device(device))
    pairs = pairs[pairs["from"].map(lambda n: parse_market_name(n)[0]).isin(set(gallery_set["person_id"]))]
    if pairs.empty:
        raise InputError(f"{root}: none of the scored pairs' persons is in its gallery; identity retention ranks "
                         "test persons against their own gallery")
    gallery = (_features(judge, list(gallery_set["path"]), "gallery", progress),
               np.array(gallery_set["person_id"]), np.array(gallery_set["camera_id"]))
    sources = list(pairs["from"])
    rows = {"generated": (list(pairs["image"]), sources), "source": ([paths[n] for n in sources], sources),
            "real_target": ([paths[n] for n in pairs["to"]], list(pairs["to"]))}
    ranked = {key: _ranked(judge, q, names, gallery, progress, key) for key, (q, names) in rows.items()}
    base = ranked["source"][0]
    return {"reid_model": str(checkpoint), "arch": judge.arch, "queries": len(pairs),
            "gallery": len(gallery_set), **{f"map_{k}": v[0] for k, v in ranked.items()},
            **{f"rank1_{k}": v[1] for k, v in ranked.items()},
            "identity_retention": ranked["generated"][0] / base if base > 0 else None,
            "real_target_retention": ranked["real_target"][0] / base if base > 0 else None}
