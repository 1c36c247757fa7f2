"""The identity gate: keep a generated image only when a re-ID model trained on real images still finds its source
person in it. A generated image whose identity drifted teaches the wrong person (the pose gate cannot see that).

`identity_filter` scores every image of a manifest with the model (flip-averaged softmax over the training
identities), writes a new manifest holding the kept rows with their scores (`id_prob`: the source's probability,
`id_margin`: its lead over the most probable other identity), and leaves the images where they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import fastdata
from . import model as reid_model


@dataclass
class FilterResult:
    output: Path
    scored: int
    kept: int
    unreadable: int
    margin: float
    mean_prob: float

    def summary(self) -> str:
        rule = "ranks the source first" if self.margin == 0 else f"gives the source a lead of {self.margin:g} or more"
        bad = f"; {self.unreadable} unreadable images skipped" if self.unreadable else ""
        return (f"Identity gate: kept {self.kept} of {self.scored} generated images ({self.kept / max(self.scored, 1):.0%})"
                f" where the re-ID model {rule} (mean probability of the source {self.mean_prob:.3f}){bad}. "
                f"Wrote {self.output}.")


def identity_filter(manifest: str | os.PathLike, checkpoint: str | os.PathLike, root: str | os.PathLike,
                    output: str | os.PathLike, margin: float = 0.0, arch: str | None = None,
                    layout: str | None = None, device: str = "auto", progress: bool = True) -> FilterResult:
    """Write OUTPUT: the rows of MANIFEST whose image the re-ID model CHECKPOINT (trained on ROOT's training split)
    places with its source person, by `margin` or more (0: the source is the most probable identity).

    Raises:
        InputError: no such manifest or checkpoint, a model of another class count, or sources not in ROOT.
    """
    import torch

    from ..device import resolve_device
    from ..images import scan_images
    from ..manifest import MANIFEST_COLUMNS, read_generated, write_manifest

    if not -1 <= margin <= 1:
        raise InputError(f"--margin {margin}: a probability margin between -1 and 1")
    manifest, table = read_generated(manifest)
    train = scan_images(root, layout=layout, splits=("train",)).images
    by_name = dict(zip(train["name"], train["person_id"]))
    sources = table["source"].map(os.path.basename)
    missing = ~sources.isin(by_name)
    if missing.all():
        raise InputError(f"{manifest}: none of its sources is in {root}'s training split (e.g. "
                         f"{table['source'].iloc[0]}); give the ROOT the images were generated from")
    if missing.any():
        print(f"warning: {int(missing.sum())} rows of {manifest} name sources not in {root}; left out")
    table, sources = table[~missing].reset_index(drop=True), sources[~missing]
    judge = reid_model.load(checkpoint, arch=arch, classes=sorted(set(train["person_id"])),
                            device=resolve_device(device))
    paths = [str(manifest.parent / p) for p in table["image"]]
    decoded = fastdata.decode(paths, *judge.size, progress=progress, desc="identity gate")
    table = table.iloc[decoded.kept].reset_index(drop=True)
    index = {pid: i for i, pid in enumerate(judge.classes)}
    source_class = np.array([index[by_name[s]] for s in sources.iloc[decoded.kept]])
    with torch.inference_mode():
        _, probs = judge.predict(decoded.images)
    prob, lead = reid_model.source_scores(probs, source_class)
    table["id_prob"], table["id_margin"] = np.round(prob, 5), np.round(lead, 5)
    passed = lead > 0 if margin == 0 else lead >= margin
    output = Path(output)
    if output.suffix != ".csv":
        output = output / "manifest.csv"
    kept = table[passed].copy()
    kept["image"] = [os.path.relpath((manifest.parent / p).resolve(), output.parent.resolve()) for p in kept["image"]]
    output.parent.mkdir(parents=True, exist_ok=True)
    columns = [c for c in MANIFEST_COLUMNS if c in kept] + ["id_prob", "id_margin"]
    write_manifest(output, kept, columns)
    return FilterResult(output, len(table), int(passed.sum()), len(decoded.skipped), margin,
                        float(prob.mean()) if len(prob) else float("nan"))
