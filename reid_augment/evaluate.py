"""Stage 5: score generated test pairs with the metrics of the paper's Table 3, computed as PG2/Def-GAN do.

SSIM: scikit-image's protocol (Gaussian sigma 1.5, population covariance, over RGB, data_range =
generated.max() - generated.min() per image) in batched torch. mask-SSIM: both images times the target's
body mask. IS and mask-IS: 10 splits of the class probabilities of the TensorFlow inception-2015-12-05 graph
(torch-fidelity's port, weights from a local file); FID from its pool features; LPIPS when the `lpips`
package and its weights are present. What cannot run is skipped and said so in the report.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image

from . import __version__
from .errors import InputError
from .fileio import atomic_open, atomic_write_text, save_png
from .generate import generate_pairs
from .images import load_rgb, scan_images
from .keypoints import body_mask
from .losses import ssim
from .manifest import read_manifest
from .pairs import read_pair_file
from .pckh import ALPHA, PoseScorer, pckh_counts, pckh_per_pair
from .poses import PoseTable, read_poses
from .preview import sheet, skeleton
from .workdir import fill_in

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's cache name.
IS_SPLITS = 10
# The paper's Table 3 (Market-1501: SSIM, IS, mask-SSIM, mask-IS; DeepFashion: SSIM, IS).
PAPER_TABLE3 = {
    "PG2": (.252, 4.015, .771, 3.555, .641, 3.187),
    "Def-GAN": (.290, 2.990, .798, 3.544, .665, 3.420),
    "VDG (L1)": (.224, 3.733, .767, 3.503, .700, 3.428),
    "VDG (mask-L1)": (.238, 3.933, .768, 3.542, .690, 3.429),
    "VDG (mask-SSIM)": (.238, 4.007, .775, 3.354, .708, 3.003),
    "VDG_w": (.266, 3.453, .783, 3.227, .702, 3.491),
}
_IMAGE_NAME = re.compile(r"(.+?\.(?:jpe?g|png|bmp|webp))", re.IGNORECASE)


def inception_score(probs: np.ndarray, splits: int = IS_SPLITS) -> tuple[float, float]:
    """Inception Score of class probabilities [N, classes], as OpenAI's code: exp(E KL(p(y|x) || p(y))) per split.

    Returns (mean, std) over the splits; fewer images than splits use one split per image.
    """
    probs = np.asarray(probs, dtype=np.float64)
    scores = []
    for part in np.array_split(probs, max(1, min(splits, len(probs)))):
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets [N, D] (Heusel et al.)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


def ssim_scores(generated: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image SSIM of uint8 [N, H, W, 3] arrays with the papers' per-image data_range."""
    # float32 on [0, 1] agrees with float64 on [0, 255] to ~1e-7 and runs twice as fast.
    gen = torch.from_numpy(generated).permute(0, 3, 1, 2).float().div(255)
    tgt = torch.from_numpy(target).permute(0, 3, 1, 2).float().div(255)
    data_range = gen.amax(dim=(1, 2, 3)) - gen.amin(dim=(1, 2, 3))
    return ssim(gen, tgt, data_range.clamp(min=1e-6)).double().numpy()


def edge_energy(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: the mean Sobel gradient magnitude of its grey levels (0-255, ITU-R 601 luma) inside the mask
    (NaN where the mask is empty). Generated over real says how much of the real detail (faces, bags, clothing
    patterns) an image keeps: blur lowers it."""
    grey = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # [N, H, W]
    pad = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (pad[:, :-2, 2:] + 2 * pad[:, 1:-1, 2:] + pad[:, 2:, 2:]) - (pad[:, :-2, :-2] + 2 * pad[:, 1:-1, :-2] + pad[:, 2:, :-2])
    gy = (pad[:, 2:, :-2] + 2 * pad[:, 2:, 1:-1] + pad[:, 2:, 2:]) - (pad[:, :-2, :-2] + 2 * pad[:, :-2, 1:-1] + pad[:, :-2, 2:])
    magnitude = np.hypot(gx, gy)
    inside = masks.reshape(magnitude.shape).astype(bool)
    count = inside.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (magnitude * inside).sum((1, 2)) / count, np.nan)


def find_generated(folder: str | os.PathLike) -> pd.DataFrame:
    """Generated test images of a folder: our manifest (source -> pose_from), or PATN names `<from>___<to>`.

    Returns a table with the columns from, to, image (path).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of generated images")
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        table = read_manifest(manifest)
        return pd.DataFrame({"from": table["source"], "to": table["pose_from"],
                             "image": [str(folder / p) for p in table["image"]]})
    rows = []
    for path in sorted(folder.rglob("*___*")):
        src, _, rest = path.name.partition("___")
        match = _IMAGE_NAME.match(rest)
        if match:
            rows.append((src, match.group(1), str(path)))
    if not rows:
        raise InputError(f"{folder}: no manifest.csv and no <from>___<to> images")
    return pd.DataFrame(rows, columns=["from", "to", "image"])


class InceptionProbe:
    """torch-fidelity's InceptionV3 (TF inception-2015-12-05 port): class probabilities and pool features."""

    def __init__(self, weights: str | os.PathLike, device: torch.device):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased", "2048"],
                                               feature_extractor_weights_path=str(weights)).to(device)
        self.device = device

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N, H, W, 3] -> probabilities [N, 1008], features [N, 2048] (resized to 299 inside)."""
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(self.device)
        with torch.no_grad():
            logits, pool = self.net(x)
        return torch.softmax(logits.double(), 1).cpu().numpy(), pool.double().cpu().numpy()


def find_inception_weights(path: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The weights file to use, or None and the reason IS/FID will be skipped."""
    if path is not None:
        if not Path(path).is_file():
            raise InputError(f"{path}: no such Inception weights file")
        return Path(path), ""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    if cached.is_file():
        return cached, ""
    return None, (f"IS, mask-IS and FID skipped: no Inception weights (pass --inception-weights PATH to "
                  f"torch-fidelity's {INCEPTION_WEIGHTS_FILE}, or put it in {cached.parent})")


@dataclass
class Report:
    metrics: dict
    report_dir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def metrics_path(self) -> Path:
        return self.report_dir / "metrics.json"

    def summary(self) -> str:
        m, b = self.metrics, self.metrics["baseline"]
        keys = [k for k in METRIC_KEYS if m.get(k) is not None]
        ceiling = (m.get("real_target") or {}).get("pckh")
        beside = {k: f"copy {b[k]:.3f}" for k in keys}
        if ceiling is not None and "pckh" in beside:
            beside["pckh"] += f", real target {ceiling:.3f}"
        shown = ", ".join(f"{k} {m[k]:.3f} ({beside[k]})" for k in keys)
        if m.get("identity") and m["identity"]["identity_retention"] is not None:
            shown += f", identity retention {m['identity']['identity_retention']:.2f} (copy 1.00)"
        return (f"Scored {m['num_pairs']} pairs ({m['skipped_pairs']} skipped): {shown}. {verdict(m)} "
                f"{' '.join(self.notes)} Report: {self.report_dir / 'report.md'}; per pair: "
                f"{self.report_dir / 'pairs.csv'}.")


METRIC_KEYS = ("ssim", "mask_ssim", "pckh", "edge_energy", "is", "mask_is", "fid", "lpips")
LOWER_IS_BETTER = ("fid", "lpips")


def verdict(metrics: dict) -> str:
    """One sentence: where the model beats copying the source, and where it does not."""
    base = metrics["baseline"]
    keys = [k for k in METRIC_KEYS if metrics.get(k) is not None and base.get(k) is not None]
    better = [k for k in keys if (metrics[k] < base[k]) == (k in LOWER_IS_BETTER) and metrics[k] != base[k]]
    worse = [k for k in keys if k not in better]
    if not worse:
        return f"The model beats copying the source on every metric ({', '.join(better)})."
    if not better:
        return f"The model does not beat copying the source on any metric ({', '.join(worse)})."
    return f"The model beats copying the source on {', '.join(better)}, not on {', '.join(worse)}."


def _markdown(metrics: dict) -> str:
    fmt = lambda v, d: "-" if v is None else f"{v:.{d}f}"  # noqa: E731

    def row(name: str, m: dict) -> str:
        return (f"| {name} | {fmt(m['ssim'], 3)} | {fmt(m['is'], 3)} | {fmt(m['mask_ssim'], 3)} | "
                f"{fmt(m['mask_is'], 3)} | {fmt(m['pckh'], 3)} | {fmt(m.get('edge_energy'), 2)} | {fmt(m['fid'], 2)} | "
                f"{fmt(m['lpips'], 3)} |")

    lines = ["| Method | SSIM | IS | mask-SSIM | mask-IS | PCKh | edge energy | FID | LPIPS |",
             "|---|---|---|---|---|---|---|---|---|",
             row(f"**this run** ({metrics['num_pairs']} pairs)", metrics),
             row("**copy the source** (baseline, same pairs)", metrics["baseline"])]
    ceiling = (metrics.get("real_target") or {}).get("pckh")
    lines.append(f"| **real target** (the estimator's ceiling) | - | - | - | - | {fmt(ceiling, 3)} | 1.00 | - | - |")
    identity = metrics.get("identity")
    if identity:
        table = ["", f"Identity retention ({identity['queries']} pairs; `{identity['arch']}` from "
                 f"`{identity['reid_model']}`; queries against the data set's {identity['gallery']} gallery images):",
                 "", "| Queries | mAP | Rank-1 | retention (mAP over the sources') |", "|---|---|---|---|",
                 f"| generated (this run) | {identity['map_generated']:.3f} | {identity['rank1_generated']:.3f} | "
                 f"{fmt(identity['identity_retention'], 2)} |",
                 f"| the sources (copy the source) | {identity['map_source']:.3f} | {identity['rank1_source']:.3f} | "
                 f"1.00 |",
                 f"| the real targets | {identity['map_real_target']:.3f} | {identity['rank1_real_target']:.3f} | "
                 f"{fmt(identity['real_target_retention'], 2)} |", ""]
    else:
        table = []
    lines += [f"| {name} (paper, Market-1501) | {v[0]:.3f} | {v[1]:.3f} | {v[2]:.3f} | {v[3]:.3f} | - | - | - | - |"
              for name, v in PAPER_TABLE3.items()]
    lines += table + ["", "| Method (paper, DeepFashion) | SSIM | IS |", "|---|---|---|"]
    lines += [f"| {name} | {v[4]:.3f} | {v[5]:.3f} |" for name, v in PAPER_TABLE3.items()]
    return ("# Evaluation\n\n" + verdict(metrics) + "\n\nSSIM and mask-SSIM follow PG2/Def-GAN (scikit-image, "
            "Gaussian sigma 1.5, population covariance, data_range of each generated image); IS over 10 splits; PCKh "
            "as PATN's calPCKH (alpha 0.5, poses of the generated images estimated offline with MediaPipe). The "
            "baseline copies the source crop, resized to the target's size, as the generated image: a generator "
            "that does not beat it adds nothing. The real target row scores the target image itself as a generated "
            "one: the PCKh the estimator reaches on real people, the ceiling of any generator. Paper figures are from "
            "Table 3 of the VDG paper, on the field's "
            "12,000 Market-1501 test pairs (Def-GAN protocol): this run compares with them only when its pairs are "
            f"those (`build-pairs --test-poses`); pairs: {metrics['pairs']}. Per-pair scores: `pairs.csv`; the best "
            "and worst pairs by mask-SSIM gained over copying: `best-worst.png` (source, target pose, generated, target).\n\n"
            + "\n".join(lines) + ("\n\n" + "\n".join(f"- {n}" for n in metrics["notes"]) if metrics["notes"] else "")
            + "\n")


def evaluate(images: str | os.PathLike, pairs: str | os.PathLike | None = None,
             poses: str | os.PathLike | None = None, report_dir: str | os.PathLike | None = None,
             checkpoint: str | os.PathLike | None = None, generated: str | os.PathLike | None = None,
             inception_weights: str | os.PathLike | None = None, batch_size: int = 64, device: str = "auto",
             num_samples: int = 8, progress: bool = True, pckh: bool = True,
             reid_model: str | os.PathLike | None = None, reid_arch: str | None = None,
             workdir: str | os.PathLike | None = None) -> Report:
    """Score the test pairs: generate them with `checkpoint`, or read `generated` (our manifest or PATN names).
    The pairs, poses and report dir left out come from `workdir` (its test pairs, target poses and report/).

    Three steps: the pairs' images (`generate.generate_pairs`, into report_dir/generated), their scores
    (`score_pairs`), the report (`write_report`).

    Args:
        images: folder with the test pairs' source and target images.
        poses: pose CSV holding the targets' poses (for the body masks).
        reid_model: a re-ID checkpoint trained on the data set's real training images: adds identity retention
            (`reid.retention`), which needs the data set's gallery.
    Raises:
        InputError: no scorable pair.
    """
    from .device import resolve_device

    if (checkpoint is None) == (generated is None):
        raise InputError("evaluate needs exactly one of --checkpoint and --generated")
    pairs, poses, report_dir = fill_in("evaluate", workdir, pairs=pairs, poses=poses, report_dir=report_dir)
    report_dir = Path(report_dir)
    paths = scan_images(images).paths
    pose_table = read_poses(poses)
    pair_table = read_pair_file(pairs)
    dev = resolve_device(device)
    meta: dict = {"checkpoint": None}
    if checkpoint is not None:
        generated = report_dir / "generated"
        provenance = generate_pairs(pair_table, paths, pose_table, checkpoint, generated, dev, batch_size, progress)
        meta = {"checkpoint": provenance["sha256"], "checkpoint_step": provenance["step"]}
    wanted = pair_table[["from", "to"]].merge(find_generated(generated), on=["from", "to"], how="left")
    scored = score_pairs(wanted, paths, pose_table, dev, inception_weights, batch_size, pckh, progress)
    identity = None
    if reid_model is not None:
        from .reid.retention import identity_retention

        identity = identity_retention(scored.pairs, paths, images, reid_model, reid_arch, device, progress)
    formats = scored.pairs["image"].map(lambda name: Path(name).suffix.lower().lstrip(".")).value_counts()
    if checkpoint is not None:  # What was scored is not what `generate` hands a user: say so.
        scored.notes.append("The generated test images were scored as written here, PNG (lossless); `generate` "
                            "writes JPEG (quality 95).")
    metrics = {**scored.metrics, "identity": identity, "pairs": str(pairs), "generated": str(generated),
               "image_formats": {str(k): int(v) for k, v in formats.items()}, "version": __version__,
               "notes": scored.notes, **meta}
    write_report(report_dir, metrics, scored.pairs, paths, pose_table, num_samples)
    return Report(metrics, report_dir, scored.notes)


@dataclass
class Scored:
    """What `score_pairs` found: per-pair scores (pairs.csv's rows), pooled metrics (the model's; the copy
    baseline's and the real target's beside them; the skipped pairs; the settings) and notes on what was skipped."""
    pairs: pd.DataFrame
    metrics: dict
    notes: list[str]


def score_pairs(pairs: pd.DataFrame, paths: dict[str, str], poses: PoseTable, dev: torch.device,
                inception_weights: str | os.PathLike | None = None, batch_size: int = 64, pckh: bool = True,
                progress: bool = True) -> Scored:
    """Score generated images against their targets, beside copying the source (the source crop resized to the
    target's size) on the same pairs and metrics, and the real target scored as a generated image (PCKh's ceiling).

    `pairs`: columns from, to and image (the generated image's path, empty when missing; `find_generated`).
    Batches are decoded in threads; SSIM, Inception and LPIPS run on `dev`. A pair whose image is missing, whose
    target has no pose, or whose image and target differ in size is skipped and counted.

    Raises:
        InputError: no scorable pair.
    """
    from tqdm import tqdm

    wanted = pairs.rename(columns={"from": "src", "to": "tgt"})
    tally = _Tally(_instruments(dev, inception_weights, pckh))
    skipped: dict[str, int] = {"missing image": 0, "no target pose": 0, "size mismatch": 0}
    examples: dict[str, str] = {}  # The first pair skipped for each reason, named in the error.
    known_poses = {n: i for i, n in enumerate(poses.names)}

    def load(row):
        try:
            return load_rgb(row.image), load_rgb(paths[row.tgt]), load_rgb(paths[row.src])
        except (InputError, KeyError, TypeError):
            return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        bar = tqdm(total=len(wanted), desc="evaluate", unit="pair", disable=not progress)
        for start in range(0, len(wanted), batch_size):
            chunk = wanted.iloc[start:start + batch_size]
            batch = _batch(chunk, pool.map(load, chunk.itertuples()), known_poses, poses, skipped, examples)
            bar.update(len(chunk))
            if batch is not None:
                tally.add(*batch)
        bar.close()
    if len(tally.model) == 0:
        reasons = ", ".join(f"{k}: {v}" + (f", e.g. {examples[k]}" if k in examples else "")
                            for k, v in skipped.items() if v)
        raise InputError(f"no scorable pair among {len(wanted)} ({reasons})")
    return Scored(pd.concat(tally.per_pair, ignore_index=True), tally.metrics(skipped), tally.tools.notes)


def _batch(chunk: pd.DataFrame, loaded, known_poses: dict[str, int], poses: PoseTable, skipped: dict[str, int],
           examples: dict[str, str]):
    """A chunk's scorable pairs: (rows (from, to, image), generated, copied source, target, target body mask,
    target pose), the arrays stacked; None when none is. The others are counted in `skipped`, the first of each
    reason described in `examples`."""
    rows, gens, copies, tgts, masks, target_poses = [], [], [], [], [], []
    for row, images in zip(chunk.itertuples(), loaded):
        if images is None or not isinstance(row.image, str):
            skipped["missing image"] += 1
            continue
        gen, tgt, src = images
        if row.tgt not in known_poses:
            skipped["no target pose"] += 1
            continue
        if gen.shape != tgt.shape:
            skipped["size mismatch"] += 1
            examples.setdefault("size mismatch", f"{row.image} is {gen.shape[0]}x{gen.shape[1]} and its target "
                                                 f"{row.tgt} {tgt.shape[0]}x{tgt.shape[1]}: generate at the "
                                                 f"targets' size (--out-size HxW)")
            continue
        pose = poses.coords[known_poses[row.tgt]]
        rows.append((row.src, row.tgt, row.image))
        gens.append(gen)
        copies.append(np.array(Image.fromarray(src).resize(gen.shape[1::-1], Image.BICUBIC)))
        tgts.append(tgt)
        masks.append(body_mask(pose, gen.shape[:2])[..., None].astype(np.uint8))
        target_poses.append(pose)
    if not gens:
        return None
    return (rows, *(np.stack(x) for x in (gens, copies, tgts, masks, target_poses)))


class _Instruments(NamedTuple):
    """What scores a batch: the Inception probe, LPIPS and the pose scorer where they can run, and notes on those
    that cannot."""
    dev: torch.device
    inception: Path | None
    probe: InceptionProbe | None
    lpips_net: object
    scorer: PoseScorer | None
    notes: list[str]


def _instruments(dev: torch.device, inception_weights: str | os.PathLike | None, pckh: bool) -> _Instruments:
    weights, why_not = find_inception_weights(inception_weights)
    probe = InceptionProbe(weights, dev) if weights else None
    notes = [why_not] if why_not else []
    lpips_net, lpips_note = _lpips(dev)
    notes += [lpips_note] if lpips_note else []
    scorer = PoseScorer.offline() if pckh else None
    if not pckh:
        notes.append("PCKh skipped (--no-pckh).")
    elif scorer is None:
        notes.append("PCKh skipped: it estimates the generated images' poses with the offline MediaPipe backend "
                     "(`make pose` installs it).")
    return _Instruments(dev, weights, probe, lpips_net, scorer, notes)


class _Tally:
    """Batch by batch: the model's and the copy baseline's scores (`_Scores`), the real target's PCKh counts and
    Inception features (FID's reference), and the per-pair table."""

    def __init__(self, tools: _Instruments):
        self.tools = tools
        self.model, self.copy = _Scores(), _Scores()
        self.target_right: list[np.ndarray] = []
        self.target_total: list[np.ndarray] = []
        self.real_feats: list[np.ndarray] = []
        self.real_edge: list[np.ndarray] = []
        self.per_pair: list[pd.DataFrame] = []

    def add(self, rows: list[tuple], gen: np.ndarray, copy: np.ndarray, tgt: np.ndarray, mask: np.ndarray,
            pose: np.ndarray) -> None:
        t = self.tools
        self.model.add(gen, tgt, mask, pose, t.probe, t.lpips_net, t.scorer, t.dev)
        self.copy.add(copy, tgt, mask, pose, t.probe, t.lpips_net, t.scorer, t.dev)
        self.real_edge.append(edge_energy(tgt, mask))
        if t.probe is not None:
            self.real_feats.append(t.probe(tgt)[1])
        table = pd.DataFrame(rows, columns=["from", "to", "image"])
        for prefix, scores in (("", self.model), ("copy_", self.copy)):
            for key, values in scores.last().items():
                table[prefix + key] = values
        table["real_target_edge"] = self.real_edge[-1]
        if t.scorer is not None:  # The ceiling: the real target scored exactly as a generated image.
            right, total = pckh_counts(t.scorer.estimate(list(tgt)), pose)
            self.target_right.append(right)
            self.target_total.append(total)
            table["real_target_pckh"] = pckh_per_pair(right, total)
        self.per_pair.append(table)

    def metrics(self, skipped: dict[str, int]) -> dict:
        real = np.concatenate(self.real_feats) if self.real_feats else None
        real_edge = float(np.nanmean(np.concatenate(self.real_edge))) if self.real_edge else None
        scorer, weights = self.tools.scorer, self.tools.inception
        return {
            **self.model.metrics(real, real_edge),
            "num_pairs": len(self.model), "skipped_pairs": int(sum(skipped.values())), "skipped_by_reason": skipped,
            "baseline": {"method": "copy the source (resized to the target's size)",
                         **self.copy.metrics(real, real_edge)},
            "real_target": {"method": "the real target image, scored as a generated one (the estimator's ceiling)",
                            "pckh": _pooled(self.target_right, self.target_total), "edge_energy": 1.0,
                            "edge_energy_grey_levels": real_edge},
            "settings": {"ssim": "gaussian_weights, sigma 1.5, window 11, population covariance, over RGB, "
                                 "data_range = generated.max() - generated.min()",
                         "mask": "PG2/Def-GAN body mask of the target pose (23 limbs, radius 4, 5x5 closing)",
                         "edge_energy": "mean Sobel gradient magnitude of grey levels inside the target's body mask, "
                                        "over all pairs, generated over the real targets'",
                         "is_splits": IS_SPLITS, "inception": str(weights) if weights else None,
                         "pckh": f"PATN's calPCKH: alpha {ALPHA}, head box of the target's nose, neck, eyes and ears; "
                                 f"poses by {scorer.name if scorer else '-'}"},
        }


def write_report(report_dir: str | os.PathLike, metrics: dict, per_pair: pd.DataFrame, paths: dict[str, str],
                 poses: PoseTable, num_samples: int = 8) -> None:
    """The report's files: pairs.csv (`per_pair`), metrics.json, report.md and, with `num_samples`, samples.png (the
    first pairs) and best-worst.png (those that gain most and least mask-SSIM over copying the source)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(report_dir / "pairs.csv", "w", encoding="utf-8", newline="") as f:
        per_pair.to_csv(f, index=False, float_format="%.4f", lineterminator="\n")
    atomic_write_text(report_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(report_dir / "report.md", _markdown(metrics))
    if num_samples:
        save_png(report_dir / "samples.png", _sample_sheet(per_pair.head(num_samples), paths, poses))
        # Ranked by what the model adds over copying the source: raw mask-SSIM favours targets with tiny masks.
        gain = per_pair["mask_ssim"] - per_pair["copy_mask_ssim"]
        ranked = per_pair.assign(gain=gain).sort_values("gain", ascending=False, kind="stable")
        half = max(1, num_samples // 2)
        picked = ranked if len(ranked) <= 2 * half else pd.concat([ranked.head(half), ranked.tail(half)])
        save_png(report_dir / "best-worst.png", _sample_sheet(picked, paths, poses))


def _sample_sheet(pairs: pd.DataFrame, paths: dict[str, str], poses: PoseTable) -> np.ndarray:
    """Rows of source | target pose | generated | target, every tile at the first generated image's size."""
    size = load_rgb(pairs["image"].iloc[0]).shape[:2]
    rows = []
    for src, tgt, image in zip(pairs["from"], pairs["to"], pairs["image"]):
        target = load_rgb(paths[tgt])
        pose = skeleton(poses.lookup([tgt])[0], size, target.shape[:2])
        rows.append([load_rgb(paths[src]), pose, load_rgb(image), target])
    return sheet(rows, size)


class _Scores:
    """Per-pair scores of one method (the model or the copy baseline), accumulated batch by batch."""

    def __init__(self):
        self.values: dict[str, list[np.ndarray]] = {"ssim": [], "mask_ssim": [], "pckh": [], "lpips": [],
                                                    "edge": []}
        self.right: list[np.ndarray] = []
        self.total: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []
        self.mask_probs: list[np.ndarray] = []
        self.feats: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(v) for v in self.values["ssim"])

    def add(self, images, targets, masks, poses, probe, lpips_net, scorer, dev) -> None:
        self.values["ssim"].append(ssim_scores(images, targets))
        self.values["mask_ssim"].append(ssim_scores(images * masks, targets * masks))
        self.values["edge"].append(edge_energy(images, masks))
        if scorer is not None:
            right, total = pckh_counts(scorer.estimate(list(images)), poses)
            self.right.append(right)
            self.total.append(total)
            self.values["pckh"].append(pckh_per_pair(right, total))
        if probe is not None:
            p, f = probe(images)
            self.probs.append(p)
            self.feats.append(f)
            self.mask_probs.append(probe(images * masks)[0])
        if lpips_net is not None:
            self.values["lpips"].append(_lpips_batch(lpips_net, images, targets, dev))

    def last(self) -> dict[str, np.ndarray]:
        """The scores of the last batch added, per pair."""
        return {k: v[-1] for k, v in self.values.items() if v}

    def metrics(self, real_feats: np.ndarray | None, real_edge: float | None = None) -> dict:
        cat = np.concatenate
        edge = float(np.nanmean(cat(self.values["edge"]))) if self.values["edge"] else None
        return {
            "edge_energy": edge / real_edge if edge is not None and real_edge else None,
            "ssim": float(cat(self.values["ssim"]).mean()), "mask_ssim": float(cat(self.values["mask_ssim"]).mean()),
            "pckh": _pooled(self.right, self.total),
            "is": inception_score(cat(self.probs))[0] if self.probs else None,
            "mask_is": inception_score(cat(self.mask_probs))[0] if self.mask_probs else None,
            "fid": frechet_distance(cat(self.feats), real_feats) if self.feats and len(self) > 1 else None,
            "lpips": float(cat(self.values["lpips"]).mean()) if self.values["lpips"] else None,
        }


def _pooled(right: list[np.ndarray], total: list[np.ndarray]) -> float | None:
    """PATN's PCKh: right joints over target joints, summed over all counted pairs (not a mean of per-pair PCKh)."""
    count = int(np.concatenate(total).sum()) if total else 0
    return float(np.concatenate(right).sum() / count) if count else None


def _lpips(dev: torch.device):
    """LPIPS (AlexNet) when the `lpips` package and its weights are available offline."""
    try:
        import lpips

        return lpips.LPIPS(net="alex", verbose=False).to(dev).eval(), ""
    except Exception as err:  # noqa: BLE001 - missing package or weights: say so, go on.
        return None, f"LPIPS skipped ({err.__class__.__name__}: the `lpips` package with its AlexNet weights is needed)."


def _lpips_batch(net, gen: np.ndarray, tgt: np.ndarray, dev: torch.device) -> np.ndarray:
    to = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(dev)  # noqa: E731
    with torch.no_grad():
        return net(to(gen), to(tgt)).flatten().cpu().numpy()
