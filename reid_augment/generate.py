"""Stage 4: generate N new images per identity with a trained VDG, plus a manifest and a contact sheet.

Output: OUT/images/ (Market-1501 names that keep the source's person and camera, e.g.
0002_c1s1_000451_03_vdg07.jpg), OUT/manifest.csv (one row per image, appended only once its image is on
disk), OUT/candidates.csv (every candidate made, its PCKh and whether it was kept; an identity is done once its
rows are there) and OUT/preview.png. Shards write manifest.shard-I-of-N.csv and candidates.shard-I-of-N.csv;
`manifest.merge` joins the manifests. The manifest's columns, names, reader and writers live in `manifest`.
Evaluation's test pairs are made here too (`generate_pairs`): `plan_pairs` plans them in `plan`'s request format,
and the same `render` writes them.
"""

from __future__ import annotations

import io
import os
import time
import zlib
from contextlib import nullcontext
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import __version__
from .config import GenerateConfig
from .data import fit_crop, to_tensor, to_uint8
from .device import available_cores, resolve_device
from .errors import InputError
from .fileio import atomic_write_bytes, save_png
from .images import ImageSet, identities, image_sizes, load_rgb, scan_images
from .keypoints import condition, scale_pose, valid_pose_mask
from .locks import hold
from .manifest import (LOG_COLUMNS, MANIFEST_COLUMNS, append_manifest, candidates_path, manifest_name,
                       read_manifest, write_manifest)
from .orphans import die_with_parent, mark_main_starter
from .pckh import PoseScorer
from .posebank import STRATEGIES, farthest_order, kmeans_centres, nearest_of_others, normalise
from .poses import PoseTable, read_poses
from .preview import sheet, skeleton
from .weights import load_generator
from .workdir import fill_in

POOL_MIN_CANDIDATES = 256  # By default fewer are scored in this process: a pool's workers take seconds to start.


def image_seed(seed: int, person_id: str, j: int) -> int:
    """The seed of candidate j of a person: independent of batch size, sharding, N and M."""
    return int(np.random.SeedSequence([seed, zlib.crc32(person_id.encode()), j]).generate_state(1)[0])


def scoring_processes(requested: int | None, candidates: int) -> int:
    """--score-processes, else one per core, or none (this process) for a run too small to pay for starting them."""
    if requested is not None:
        return requested
    return available_cores() if candidates >= POOL_MIN_CANDIDATES else 0


def output_name(source: str, k: int) -> str:
    """0002_c1s1_000451_03.jpg, 7 -> 0002_c1s1_000451_03_vdg07.jpg; person/a.png -> person/a_vdg07.jpg.

    The source's person and camera stay in front, so Market-1501 parsers (torchreid, fast-reid) read a
    generated image as another image of the same person from the same camera.
    """
    return f"{os.path.splitext(source)[0]}_vdg{k:02d}.jpg"


def plan(images: ImageSet, poses: PoseTable, cfg: GenerateConfig,
         shard: tuple[int, int] = (0, 1)) -> tuple[pd.DataFrame, int]:
    """Decide every candidate to make: source, target pose, seed and output name, without touching pixels.

    An identity has N x M candidates j = 0, 1, ... in a row (N = per_id, M = candidates), of which `render`
    keeps N. Candidate j's source is the identity's j-th usable image (valid pose; name order, rotating), its
    target a pose of another identity from the bank of valid poses (`novel`: the j-th farthest from the
    identity's own), its seed and name follow from (seed, identity, j): a candidate does not depend on N, M,
    batching or sharding. Without --candidates, candidate k is image k, so --per-id 5 is a prefix of --per-id
    10. Returns the plan and the number of identities that have no usable image.
    """
    if cfg.strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {cfg.strategy!r}; known: {', '.join(STRATEGIES)}")
    table = images.images[images.images["split"] == "train"]
    index = {n: i for i, n in enumerate(poses.names)}
    has_pose = table["name"].map(index).notna().to_numpy()
    rows = table["name"].map(index).fillna(0).astype(int).to_numpy()
    usable = has_pose & valid_pose_mask(poses.coords[rows])  # Distractors were left out by scan_images.
    sources = table[usable].sort_values("name")
    bank_names = sources["name"].to_numpy()
    if len(bank_names) == 0:
        raise InputError("the pose bank is empty: no training image has a valid pose (run build-pairs, "
                         "check poses.csv)")
    bank_pids = sources["person_id"].to_numpy()
    # Compare poses in each image's own frame (y / H, x / W): crops of one data set can differ in size.
    frames = image_sizes(sources["path"])
    bank = normalise(poses.lookup(bank_names), frames[:, None, :].astype(np.float32))
    codes, ids = pd.factorize(bank_pids, sort=True)  # Integer codes: fast per-identity masks.
    if cfg.strategy == "kmeans":
        medoids = nearest_of_others(bank, codes, kmeans_centres(bank, cfg.kmeans_k, cfg.seed))
    plan_rows = []  # (pid, j, source row, target row, seed): an identity's N x M candidates in a row
    for code in range(shard[0], len(ids), shard[1]):
        pid = ids[code]
        own = np.flatnonzero(codes == code)
        others = np.flatnonzero(codes != code)
        if len(others) == 0:
            raise InputError(f"the pose bank has no pose of another identity than {pid}")
        if cfg.strategy == "novel":
            ranked = others[farthest_order(bank[others], bank[own])]
        if cfg.strategy == "kmeans":  # An identity walks the k canonical poses from its own start: all differ.
            start = np.random.default_rng(image_seed(cfg.seed, pid, 0)).integers(len(medoids))
        for j in range(cfg.per_id * cfg.candidates):
            seed = image_seed(cfg.seed, pid, j)
            rng = np.random.default_rng(seed)
            if cfg.strategy == "random":
                target = others[rng.integers(len(others))]
            elif cfg.strategy == "kmeans":
                best, runner_up = medoids[(start + j) % len(medoids)]
                target = best if codes[best] != code else runner_up
            else:
                target = ranked[j % len(ranked)]
            plan_rows.append((pid, j, own[j % len(own)], target, seed))
    pids, js, src, tgt, seeds = (np.array(c) for c in zip(*plan_rows)) if plan_rows else [np.array([], int)] * 5
    src_table = sources.iloc[src]
    requests = pd.DataFrame({
        "image": [f"images/{output_name(n, j)}" for n, j in zip(src_table["name"], js)],
        "pid": pids.astype(str) if len(pids) else pids,
        "camid": src_table["camera_id"].to_numpy(),
        "source": src_table["name"].to_numpy(),
        "source_path": src_table["path"].to_numpy(),
        "pose_from": bank_names[tgt] if len(tgt) else tgt,
        "target_h": frames[tgt, 0] if len(tgt) else tgt,  # The target pose's frame, read once above.
        "target_w": frames[tgt, 1] if len(tgt) else tgt,
        "seed": seeds,
    })
    unusable = sorted(set(table["person_id"]) - set(ids))
    return requests, len(unusable[shard[0]::shard[1]])


def plan_pairs(pairs: pd.DataFrame, paths: dict[str, str], poses: PoseTable) -> pd.DataFrame:
    """The requests of test pairs, in `plan`'s format: one image per pair (`from` -> `to`) whose two images and
    poses are known, images/<from>___<to>.png, seed 0, with its target's frame (`render(..., out_like="target")`
    makes it at that size)."""
    known = set(poses.names)
    usable = pairs[pairs["from"].isin(paths) & pairs["to"].isin(paths)
                   & pairs["from"].isin(known) & pairs["to"].isin(known)]
    pids, cams = identities(usable["from"])
    target_hw = image_sizes([paths[b] for b in usable["to"]])
    return pd.DataFrame({
        "image": [f"images/{a}___{b}.png" for a, b in zip(usable["from"], usable["to"])],
        "pid": pids, "camid": cams,
        "source": usable["from"].to_numpy(), "source_path": [paths[a] for a in usable["from"]],
        "pose_from": usable["to"].to_numpy(), "target_h": target_hw[:, 0], "target_w": target_hw[:, 1],
        "seed": 0})


def stamp(requests: pd.DataFrame, strategy: str, provenance: dict) -> pd.DataFrame:
    """`requests` with what each manifest row records of how it was made: strategy, checkpoint (the weights file's
    SHA-256), step and version."""
    return requests.assign(strategy=strategy, checkpoint=provenance["sha256"], step=provenance["step"],
                           version=__version__)


def generate_pairs(pairs: pd.DataFrame, paths: dict[str, str], poses: PoseTable, checkpoint: str | os.PathLike,
                   out_dir: str | os.PathLike, dev: torch.device, batch_size: int = 64,
                   progress: bool = True) -> dict:
    """Make the images of test pairs (`plan_pairs`) with `checkpoint`: out_dir/images and out_dir/manifest.csv,
    each image at its target's size (scored at the data set's resolution, as the papers do); resumable, with
    `generate`'s writer (`render`). Returns the checkpoint's provenance (`weights.load_generator`)."""
    model, provenance = load_generator(checkpoint, dev)
    requests = stamp(plan_pairs(pairs, paths, poses), "pairs", provenance)
    render(model, requests, poses, Path(out_dir) / "manifest.csv", dev, batch_size, num_workers=0, progress=progress,
           out_like="target")
    return provenance


class _Requests(Dataset):
    """Decodes sources in DataLoader workers: item = (index, src_img [3, H, W], src_pose, tgt_pose, out_hw, out_pose).

    Both poses are scaled from their own image's frame (the target's: columns target_h, target_w) into the
    model's, as training does; `out_hw` is the size the output is resized to: `out_size` when given, else the
    source's or (`out_like="target"`) the target's size. `out_pose` is the target pose in the output's frame.
    """

    def __init__(self, requests: pd.DataFrame, poses: PoseTable, size: tuple[int, int],
                 out_size: tuple[int, int] | None, out_like: str):
        self.paths = requests["source_path"].to_numpy()
        self.target_hw = requests[["target_h", "target_w"]].to_numpy(dtype=np.int64)
        self.src_pose = poses.lookup(requests["source"])
        self.tgt_pose = poses.lookup(requests["pose_from"])
        self.size, self.out_size, self.out_like = tuple(size), out_size, out_like

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        rgb = load_rgb(self.paths[i])
        source_hw, target_hw = rgb.shape[:2], tuple(self.target_hw[i])
        rgb, src_pose = fit_crop(rgb, self.src_pose[i], self.size)
        tgt_pose = scale_pose(self.tgt_pose[i], target_hw, self.size)
        out_hw = self.out_size or (target_hw if self.out_like == "target" else source_hw)
        out_pose = scale_pose(self.tgt_pose[i], target_hw, out_hw)
        return (i, to_tensor(rgb), torch.from_numpy(src_pose), torch.from_numpy(tgt_pose), torch.tensor(out_hw),
                torch.from_numpy(out_pose))


def to_uint8_sized(images: torch.Tensor, sizes: torch.Tensor) -> list[np.ndarray]:
    """Image i of [N, 3, H, W] in [-1, 1] as [h, w, 3] uint8 at sizes[i] = (h, w); resized (antialiased
    bilinear) and copied to the host once per distinct size."""
    out: list[np.ndarray] = [np.empty(0)] * len(images)
    for hw in torch.unique(sizes, dim=0).tolist():
        index = torch.nonzero((sizes == torch.tensor(hw)).all(1)).squeeze(1)
        group = images[index.to(images.device)]
        if tuple(hw) != tuple(images.shape[-2:]):
            group = torch.nn.functional.interpolate(group, size=tuple(hw), mode="bilinear", align_corners=False,
                                                    antialias=True)
        for j, pixels in zip(index.tolist(), to_uint8(group)):
            out[j] = pixels
    return out


@dataclass
class GenerateResult:
    out_dir: Path
    manifest: Path
    generated: int
    already_done: int
    identities: int
    identities_without_usable_image: int
    seconds: float
    dropped: int = 0             # The shortfall: images missing from N per identity (too few passed --min-pckh).
    candidates: int = 1
    scored_with: str | None = None
    mean_pckh: float | None = None
    score_requested: bool = True
    unscorable: int = 0          # Images kept whose target pose has no head box: not scored, empty pckh.
    score_processes: int = 0     # Scoring processes (0: in this process).

    def summary(self) -> str:
        rate = self.generated / self.seconds if self.seconds > 0 else 0.0
        best = (f" (for each identity the best of {self.candidates} times as many candidates, from any of its "
                f"sources)" if self.candidates > 1 else "")
        if self.scored_with:
            where = f" in {self.score_processes} processes" if self.score_processes else ""
            scored = (f" Scored by pose consistency on the written files with {self.scored_with}{where}: mean "
                      f"PCKh {self.mean_pckh:.3f}." if self.mean_pckh is not None else "")
        else:
            scored = (" Not scored (the offline pose backend is not installed: `make pose`)."
                      if self.score_requested else " Not scored (--no-score).")
        short = (f" Too few candidates of some identities reached --min-pckh: a shortfall of {self.dropped} images."
                 if self.dropped else "")
        headless = (f" {self.unscorable} images have a target pose without a head box: they cannot be scored, so "
                    f"they are kept (--min-pckh too) with an empty pckh." if self.unscorable else "")
        return (f"Generated {self.generated} images{best} for {self.identities} identities in {self.seconds:.1f} s "
                f"({rate:.1f} images/s); {self.already_done} were already done and kept, "
                f"{self.identities_without_usable_image} identities had no usable image.{short}{headless}{scored} "
                f"Manifest: {self.manifest}; contact sheet: {self.out_dir / 'preview.png'}.")


def select(scores: np.ndarray, keep: int, min_pckh: float | None = None) -> np.ndarray:
    """Positions (ascending) of the `keep` of one identity's candidates to keep, from their PCKh.

    The scored candidates that reach `min_pckh` come first, best first (ties to the first), whichever source
    image they come from; then those that cannot be scored (nan: a target pose without a head box, or no
    scorer), in order: they are not known to be worse, so the gate keeps them, after the scored ones that pass.
    Fewer than `keep` only when fewer pass.
    """
    passing = scores >= (-np.inf if min_pckh is None else min_pckh)  # False for nan.
    best = np.flatnonzero(passing)[np.argsort(-scores[passing], kind="stable")]
    return np.sort(np.concatenate([best, np.flatnonzero(np.isnan(scores))])[:keep])


def encode(rgb: np.ndarray, suffix: str, quality: int) -> bytes:
    """The bytes of an output file: PNG for .png, else JPEG at `quality`."""
    buffer = io.BytesIO()
    if suffix == ".png":
        Image.fromarray(rgb).save(buffer, format="PNG")
    else:
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class _Selector:
    """Gathers each identity's candidates (the requests sharing `unit`) across batches; once an identity's are
    all in, keeps `keep` of them (`select`), writes their bytes (temp name + rename) and removes any file of the
    others, then appends their manifest rows, then every candidate's row to the candidates log: an identity is
    done once its log rows land.

    Selection always sees all of an identity's candidates, so it does not depend on batching; shards hold whole
    identities. Runs in one writer thread, batches in order.
    """

    def __init__(self, manifest: Path, unit: str, sizes: pd.Series, keep: int, min_pckh: float | None,
                 scorer: PoseScorer | None, quality: int, encoders: ThreadPoolExecutor):
        self.manifest, self.unit, self.sizes, self.keep, self.min_pckh = manifest, unit, sizes, keep, min_pckh
        self.scorer, self.quality, self.encoders = scorer, quality, encoders
        self.rows, self.files = pd.DataFrame(), []  # Candidates of identities not yet whole, and their bytes.
        self.made = self.short = self.unscorable = 0

    def add(self, rows: pd.DataFrame, pixels: list[np.ndarray], poses: np.ndarray) -> None:
        """Encode a batch, score the bytes that will be written, and finish the identities now whole."""
        suffixes = [os.path.splitext(p)[1] for p in rows["image"]]
        files = list(self.encoders.map(encode, pixels, suffixes, repeat(self.quality)))
        scores = self.scorer.score_encoded(files, poses) if self.scorer else np.full(len(files), np.nan)
        rows = rows.assign(pckh=np.round(scores, 4))
        rows, files = (pd.concat([self.rows, rows]) if len(self.rows) else rows), self.files + files
        units = rows[self.unit]
        whole = (units.map(units.value_counts()) == units.map(self.sizes)).to_numpy()
        self.rows, self.files = rows[~whole], [f for f, w in zip(files, whole) if not w]
        if whole.any():
            self._finish(rows[whole], [f for f, w in zip(files, whole) if w])

    def _finish(self, rows: pd.DataFrame, files: list[bytes]) -> None:
        scores = rows["pckh"].to_numpy(dtype=float)
        kept = np.zeros(len(rows), dtype=bool)
        for at in rows.groupby(self.unit, sort=False).indices.values():
            kept[at[select(scores[at], self.keep, self.min_pckh)]] = True
        out_dir = self.manifest.parent
        list(self.encoders.map(atomic_write_bytes, [out_dir / p for p in rows["image"][kept]],
                               [f for f, k in zip(files, kept) if k]))
        for image in rows["image"][~kept]:  # An earlier run's (other gate, killed midway) would be a stray image.
            (out_dir / image).unlink(missing_ok=True)
        append_manifest(self.manifest, rows[kept], MANIFEST_COLUMNS)
        append_manifest(candidates_path(self.manifest), rows.assign(kept=kept.astype(int)), LOG_COLUMNS)
        self.made += int(kept.sum())
        self.short += rows[self.unit].nunique() * self.keep - int(kept.sum())
        self.unscorable += int((kept & np.isnan(scores)).sum()) if self.scorer else 0


def _resume(requests: pd.DataFrame, unit: str, keep: int, min_pckh: float | None, manifest: Path) -> pd.DataFrame:
    """The requests still to make, after rewriting the manifest and the candidates log to the identities done.

    An identity a previous run finished is done when its log lists exactly the candidates requested now (same
    checkpoint), the current settings select the same ones from their logged scores, and those are in the
    manifest with their images on disk; any other identity is made again, whole.
    """
    def keys(table: pd.DataFrame) -> pd.Series:
        return table["image"].astype(str) + "|" + table["checkpoint"].astype(str)

    position = pd.Series(np.arange(len(requests)), index=keys(requests))
    done = read_manifest(manifest)
    logged = read_manifest(candidates_path(manifest), LOG_COLUMNS, on_disk=False)
    logged = logged[keys(logged).isin(position.index)]  # Rows of another checkpoint or plan are stale.
    logged = logged.iloc[np.argsort(position[keys(logged)].to_numpy(), kind="stable")]  # Candidate order.
    kept = pd.to_numeric(logged["kept"], errors="coerce").to_numpy() == 1
    scores = pd.to_numeric(logged["pckh"], errors="coerce").to_numpy(dtype=float)
    on_disk = keys(logged).isin(set(keys(done))).to_numpy()
    sizes = requests[unit].value_counts()
    finished = [name for name, at in logged.groupby(unit, sort=False).indices.items()
                if len(at) == sizes.get(name, -1) and on_disk[at[kept[at]]].all()
                and np.array_equal(np.flatnonzero(kept[at]), select(scores[at], keep, min_pckh))]
    stays = logged[unit].isin(finished).to_numpy()
    done = done[keys(done).isin(set(keys(logged)[stays & kept]))]
    logged = logged[stays]
    write_manifest(manifest, done, MANIFEST_COLUMNS)
    write_manifest(candidates_path(manifest), logged, LOG_COLUMNS)
    return requests[~requests[unit].isin(finished)].reset_index(drop=True)


class Rendered(NamedTuple):
    made: int
    already: int
    short: int        # Images missing from `keep` per identity: too few candidates passed `min_pckh`.
    unscorable: int   # Kept images whose target pose has no head box.


def contact_sheet(manifest: pd.DataFrame, root: Path, sources: dict[str, str], poses: PoseTable | None = None,
                  ids: int = 6, per_row: int = 8) -> np.ndarray:
    """One row per identity: its first source, a gap, then its generated images, all at the first image's size;
    with `poses`, under each generated image the target pose it was asked for (scaled from the image it came
    from), so a reader sees at a glance whether the person took the pose. [H', W', 3] uint8 (`preview.sheet`)."""
    groups = [group for _, group in manifest.groupby("pid", sort=True)][:ids]
    per_row = min(per_row, max(len(g) for g in groups))
    size = load_rgb(root / groups[0]["image"].iloc[0]).shape[:2]

    def pose_tile(name: str) -> np.ndarray:
        frame = Image.open(sources[name]).size[::-1] if name in sources else size
        return skeleton(poses.lookup([name])[0], size, frame)

    rows = []
    for group in groups:
        group = group.head(per_row)
        rows.append([load_rgb(sources[group["source"].iloc[0]]), *(load_rgb(root / p) for p in group["image"])])
        if poses is not None:
            rows.append([None, *(pose_tile(n) for n in group["pose_from"])])
    return sheet(rows, size, Image.BILINEAR, gap_after=1, group=2 if poses is not None else None)


def render(model: torch.nn.Module, requests: pd.DataFrame, poses: PoseTable, manifest_path: Path,
           dev: torch.device, batch_size: int = 64, num_workers: int = 2,
           jpeg_quality: int = 95, progress: bool = True, out_size: tuple[int, int] | None = None,
           out_like: str = "source", scorer: PoseScorer | None = None, min_pckh: float | None = None,
           keep: int | None = None) -> Rendered:
    """Make the images of `requests` that a previous run did not finish (`_resume`).

    With `keep` = N, the requests sharing a `pid` are one identity's candidates: each is encoded and, with a
    `scorer`, scored by PCKh against its target pose on the bytes that are written; once all of an identity's
    candidates are in, whatever the batches, the N best that reach `min_pckh` are written (`select`). Without
    `keep`, every request is its own image (evaluate's pairs).

    Each output has the size of its source crop (`out_like="source"`) or, for test pairs, of the target it is
    scored against (`out_like="target"`), or `out_size` (H, W) when given. The model's input size and heatmap
    sigma are its config's (`model.cfg`).
    Sources are decoded in DataLoader workers, heatmaps drawn on the device, images encoded by a pool of threads
    (PIL releases the GIL) and scored in the scorer's processes while the model runs the next batches; one writer
    thread keeps the writes in order, an identity's manifest rows only once its images are on disk (.png or .jpg
    by the name).
    """
    size, sigma = model.cfg.image_size, model.cfg.heatmap_sigma
    unit = "pid" if keep else "image"
    todo = _resume(requests, unit, keep or 1, min_pckh, manifest_path)
    already = len(read_manifest(manifest_path))
    mark_main_starter()
    loader = DataLoader(_Requests(todo, poses, size, out_size, out_like), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=dev.type == "cuda", worker_init_fn=die_with_parent)
    use_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    pending: list[Future] = []
    encoders = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))
    sink = _Selector(manifest_path, unit, todo[unit].value_counts(), keep or 1, min_pckh, scorer, jpeg_quality,
                     encoders)
    with encoders, ThreadPoolExecutor(max_workers=1) as writer, torch.inference_mode():
        bar = tqdm(total=len(todo), desc="generate", unit="img", disable=not progress)
        for index, src_img, src_pose, tgt_pose, out_hw, out_pose in loader:
            src_img = src_img.to(dev, non_blocking=True)
            maps = condition(src_pose.to(dev), tgt_pose.to(dev), size, sigma, flow=model.cfg.needs_flow)
            with torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext():
                refined = model(src_img, maps["src_maps"], maps["tgt_maps"], maps.get("flow"))[1].float()
            pixels = to_uint8_sized(refined, out_hw)
            pending.append(writer.submit(sink.add, todo.iloc[index.numpy()], pixels, out_pose.numpy()))
            while len(pending) > 3:  # Bounded: memory stays flat however many images are planned.
                pending.pop(0).result()
            bar.update(len(index))
        for future in pending:
            future.result()
        bar.close()
    return Rendered(sink.made, already, sink.short, sink.unscorable)


def generate(images: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
             poses: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
             cfg: GenerateConfig = GenerateConfig(), shard: tuple[int, int] = (0, 1), device: str = "auto",
             progress: bool = True, workdir: str | os.PathLike | None = None) -> GenerateResult:
    """Generate `cfg.per_id` images for every identity of `images` (this shard's share of them).

    What is left out comes from `workdir`: its newest trained checkpoint, its pose bank, its generated/ folder.
    Reruns skip what is done; the result does not depend on batch size, sharding or scoring processes. Runs of
    POOL_MIN_CANDIDATES or more score in spawned processes by default, so a script that calls this needs the
    usual `if __name__ == "__main__":` guard (or `score_processes=0`).
    """
    start = time.perf_counter()
    checkpoint, poses, out_dir = fill_in("generate", workdir, checkpoint=checkpoint, poses=poses, out_dir=out_dir)
    out_dir = Path(out_dir)
    if cfg.candidates < 1:
        raise InputError(f"--candidates {cfg.candidates}: need at least 1")
    if cfg.score_processes is not None and cfg.score_processes < 0:
        raise InputError(f"--score-processes {cfg.score_processes}: need 0 (score in this process) or more")
    scorer = PoseScorer.offline() if cfg.score else None
    if scorer is None and (cfg.candidates > 1 or cfg.min_pckh is not None):
        raise InputError("--candidates and --min-pckh score images by pose consistency, which needs the offline "
                         "pose backend (`make pose` installs MediaPipe)" + ("" if cfg.score else "; drop --no-score"))
    dev = resolve_device(device)
    model, provenance = load_generator(checkpoint, dev)
    pose_table = read_poses(poses)
    image_set = scan_images(images, layout=cfg.layout, splits=("train",))
    requests, unusable = plan(image_set, pose_table, cfg, shard)
    requests = stamp(requests, cfg.strategy, provenance)
    manifest_path = out_dir / manifest_name(shard)
    if scorer is not None:
        scorer.processes = scoring_processes(cfg.score_processes, len(requests))
    lock = ".lock" if shard[1] == 1 else f".lock.shard-{shard[0]}-of-{shard[1]}"
    with hold(out_dir, lock, "this generate output"), scorer or nullcontext():
        made, already, short, unscorable = render(
            model, requests, pose_table, manifest_path, dev, cfg.batch_size, cfg.num_workers, cfg.jpeg_quality,
            progress, cfg.out_size, scorer=scorer, min_pckh=cfg.min_pckh, keep=cfg.per_id)
    manifest = read_manifest(manifest_path)
    scores = pd.to_numeric(manifest["pckh"], errors="coerce")
    if len(manifest):
        sheet = contact_sheet(manifest, out_dir, image_set.paths, pose_table)
        preview = "preview.png" if shard[1] == 1 else f"preview.shard-{shard[0]}-of-{shard[1]}.png"
        save_png(out_dir / preview, sheet)
    return GenerateResult(out_dir, manifest_path, made, already, requests["pid"].nunique(), unusable,
                          time.perf_counter() - start, short, cfg.candidates, scorer.name if scorer else None,
                          float(scores.mean()) if scores.notna().any() else None, cfg.score, unscorable,
                          scorer.processes if scorer else 0)
