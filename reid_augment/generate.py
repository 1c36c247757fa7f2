"""Stage 4: generate N new images per identity with a trained VDG, plus a manifest and a contact sheet.

Output: OUT/images/ (Market-1501 names that keep the source's person and camera, e.g.
0002_c1s1_000451_03_vdg07.jpg), OUT/manifest.csv (one row per image, appended only once its image is on
disk) and OUT/preview.png. Shards write manifest.shard-I-of-N.csv; `merge` joins them.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from contextlib import nullcontext
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import __version__
from .checkpoint import load_generator, model_config_of
from .config import GenerateConfig
from .data import fit_crop, scale_pose, to_tensor, to_uint8
from .errors import InputError
from .fileio import atomic_open, save_png
from .images import ImageSet, image_sizes, load_rgb, scan_images
from .keypoints import to_heatmaps, valid_pose_mask
from .pckh import PoseScorer
from .posebank import STRATEGIES, farthest_order, kmeans_centres, nearest_of_others, normalise
from .poses import PoseTable, read_poses

MANIFEST_COLUMNS = ["image", "pid", "camid", "source", "pose_from", "strategy", "seed", "checkpoint", "step",
                    "version", "pckh"]


def image_seed(seed: int, person_id: str, k: int, candidate: int = 0) -> int:
    """The seed of candidate c of image k of a person: independent of batch size, sharding, N and M
    (candidate 0 is the image made without --candidates)."""
    words = [seed, zlib.crc32(person_id.encode()), k] + ([candidate] if candidate else [])
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 0 <= i < n."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise InputError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def output_name(source: str, k: int) -> str:
    """0002_c1s1_000451_03.jpg, 7 -> 0002_c1s1_000451_03_vdg07.jpg; person/a.png -> person/a_vdg07.jpg.

    The source's person and camera stay in front, so Market-1501 parsers (torchreid, fast-reid) read a
    generated image as another image of the same person from the same camera.
    """
    return f"{os.path.splitext(source)[0]}_vdg{k:02d}.jpg"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan(images: ImageSet, poses: PoseTable, cfg: GenerateConfig,
         shard: tuple[int, int] = (0, 1)) -> tuple[pd.DataFrame, int]:
    """Decide every image to make: source, target pose, seed and output name, without touching pixels.

    Sources are the identity's usable images (valid pose) in name order, rotating; targets come from the
    bank of valid poses of the other identities, whatever the strategy (M candidates per image in a row with
    `cfg.candidates`). Returns the plan and the number of identities that have no usable image.
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
    plan_rows = []  # (pid, k, source row, target row, seed), M candidates per image in a row
    for code in range(shard[0], len(ids), shard[1]):
        pid = ids[code]
        own = np.flatnonzero(codes == code)
        others = np.flatnonzero(codes != code)
        if len(others) == 0:
            raise InputError(f"the pose bank has no pose of another identity than {pid}")
        if cfg.strategy == "novel":
            ranked = others[farthest_order(bank[others], bank[own])]
        for k, c in ((k, c) for k in range(cfg.per_id) for c in range(cfg.candidates)):
            seed = image_seed(cfg.seed, pid, k, c)
            rng = np.random.default_rng(seed)
            if cfg.strategy == "random":
                target = others[rng.integers(len(others))]
            elif cfg.strategy == "kmeans":
                best, runner_up = medoids[(k + rng.integers(len(medoids))) % len(medoids)]
                target = best if codes[best] != code else runner_up
            else:
                target = ranked[(k + c * cfg.per_id) % len(ranked)]
            plan_rows.append((pid, k, own[k % len(own)], target, seed))
    pids, ks, src, tgt, seeds = (np.array(c) for c in zip(*plan_rows)) if plan_rows else [np.array([], int)] * 5
    src_table = sources.iloc[src]
    requests = pd.DataFrame({
        "image": [f"images/{output_name(n, k)}" for n, k in zip(src_table["name"], ks)],
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
    dropped: int = 0             # Images whose best candidate fell below --min-pckh: the shortfall.
    candidates: int = 1
    scored_with: str | None = None
    mean_pckh: float | None = None
    score_requested: bool = True

    def summary(self) -> str:
        rate = self.generated / self.seconds if self.seconds > 0 else 0.0
        best = f" (the best of {self.candidates} candidates each)" if self.candidates > 1 else ""
        if self.scored_with:
            scored = (f" Scored by pose consistency with {self.scored_with}: mean PCKh {self.mean_pckh:.3f}."
                      if self.mean_pckh is not None else "")
        else:
            scored = (" Not scored (the offline pose backend is not installed: `make pose`)."
                      if self.score_requested else " Not scored (--no-score).")
        short = (f" {self.dropped} images fell below --min-pckh and were dropped: a shortfall of {self.dropped}."
                 if self.dropped else "")
        return (f"Generated {self.generated} images{best} for {self.identities} identities in {self.seconds:.1f} s "
                f"({rate:.1f} images/s); {self.already_done} were already done and kept, "
                f"{self.identities_without_usable_image} identities had no usable image.{short}{scored} "
                f"Manifest: {self.manifest}; contact sheet: {self.out_dir / 'preview.png'}.")


def read_manifest(path: Path) -> pd.DataFrame:
    """Rows of a manifest whose image exists; a torn last line (a killed run) is dropped."""
    if not path.is_file():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    from io import StringIO

    table = pd.read_csv(StringIO(text), dtype={"pid": str}, keep_default_na=False) if text else pd.DataFrame(
        columns=MANIFEST_COLUMNS)
    for column in MANIFEST_COLUMNS:  # Manifests of older versions lack the newer columns.
        if column not in table:
            table[column] = ""
    exists = np.array([(path.parent / p).is_file() for p in table["image"]], dtype=bool)
    return table[exists].reset_index(drop=True)


def select(rows: pd.DataFrame, pixels: list[np.ndarray], poses: np.ndarray, scorer: PoseScorer | None,
           min_pckh: float | None) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Score each candidate (PCKh of its estimated pose against its target pose), keep the best of each image's
    candidates (rows sharing an `image`; ties to the first), and drop those below `min_pckh`."""
    rows = rows.reset_index(drop=True)
    if scorer is None:
        return rows.assign(pckh=np.nan), pixels
    rows = rows.assign(pckh=np.round(scorer.score(pixels, poses), 4))
    ranked = rows.assign(order=np.nan_to_num(rows["pckh"].to_numpy(), nan=-1.0), at=np.arange(len(rows)))
    best = ranked.sort_values(["order", "at"], ascending=[False, True], kind="stable").drop_duplicates("image")
    if min_pckh is not None:
        best = best[best["order"] >= min_pckh]
    best = best.sort_values("at")
    return rows.loc[best["at"]], [pixels[i] for i in best["at"]]


def _encode(path: Path, rgb: np.ndarray, quality: int) -> None:
    with atomic_open(path, "wb") as f:
        if path.suffix == ".png":
            Image.fromarray(rgb).save(f, format="PNG")
        else:
            Image.fromarray(rgb).save(f, format="JPEG", quality=quality)


def _write_batch(encoders: ThreadPoolExecutor, out_dir: Path, manifest: Path, rows: pd.DataFrame,
                 pixels: list[np.ndarray], poses: np.ndarray, scorer: PoseScorer | None, min_pckh: float | None,
                 quality: int) -> int:
    """Score and select the batch's candidates, encode the kept images in the encoder pool (temp name + rename),
    then append their manifest rows. Returns how many images were dropped under `min_pckh`."""
    images = rows["image"].nunique()
    rows, pixels = select(rows, pixels, poses, scorer, min_pckh)
    list(encoders.map(lambda item: _encode(out_dir / item[0], item[1], quality), zip(rows["image"], pixels)))
    with open(manifest, "a", encoding="utf-8", newline="") as f:
        rows[MANIFEST_COLUMNS].to_csv(f, header=False, index=False, lineterminator="\n")
        f.flush()
        os.fsync(f.fileno())
    return images - len(rows)


def contact_sheet(manifest: pd.DataFrame, root: Path, sources: dict[str, str], ids: int = 6,
                  per_row: int = 8) -> np.ndarray:
    """One row per identity: its first source, a gap, then its generated images, all at the first image's size;
    [H', W', 3] uint8."""
    rows = []
    groups = list(manifest.groupby("pid", sort=True))[:ids]
    per_row = min(per_row, max(len(g) for _, g in groups))
    h, w = load_rgb(root / groups[0][1]["image"].iloc[0]).shape[:2]

    def tile(path) -> np.ndarray:
        rgb = load_rgb(path)
        return rgb if rgb.shape[:2] == (h, w) else np.array(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))

    for _, group in groups:
        tiles = [tile(root / p) for p in group["image"][:per_row]]
        gap = np.full((h, 4, 3), 255, np.uint8)
        pad = [np.zeros((h, w, 3), np.uint8)] * (per_row - len(tiles))
        rows.append(np.concatenate([tile(sources[group["source"].iloc[0]]), gap, *tiles, *pad], axis=1))
    return np.concatenate(rows, axis=0)


def render(model: torch.nn.Module, requests: pd.DataFrame, poses: PoseTable, manifest_path: Path,
           size: tuple[int, int], sigma: float, dev: torch.device, batch_size: int = 64, num_workers: int = 2,
           jpeg_quality: int = 95, progress: bool = True, out_size: tuple[int, int] | None = None,
           out_like: str = "source", scorer: PoseScorer | None = None,
           min_pckh: float | None = None) -> tuple[int, int, int]:
    """Make the images of `requests` that `manifest_path` does not list yet.

    Requests sharing an `image` are candidates for it (contiguous, each batch holds whole groups): with a
    `scorer`, each is scored by PCKh against its target pose and the best is kept, if it reaches `min_pckh`.

    Each output has the size of its source crop (`out_like="source"`) or, in evaluate, of the target it is
    scored against (`out_like="target"`), or `out_size` (H, W) when given.
    Sources are decoded in DataLoader workers, heatmaps drawn on the device, and images encoded by a pool of
    threads (PIL releases the GIL) while the model runs the next batches: one writer thread keeps the manifest
    appends in order, each batch's rows only once its images are on disk (.png or .jpg by the name).
    Returns (images made now, already done, dropped under min_pckh).
    """
    out_dir = manifest_path.parent
    done = read_manifest(manifest_path)
    # A row made by another checkpoint is stale: its image is made again.
    current = done["image"].astype(str) + "|" + done["checkpoint"].astype(str)
    done = done[current.isin(set(requests["image"].astype(str) + "|" + requests["checkpoint"].astype(str)))]
    with atomic_open(manifest_path, "w", encoding="utf-8", newline="") as f:
        done.to_csv(f, index=False, lineterminator="\n", columns=MANIFEST_COLUMNS)
    todo = requests[~requests["image"].isin(set(done["image"]))].reset_index(drop=True)
    group = int(requests["image"].value_counts().max()) if len(requests) else 1
    batch_size = -(-batch_size // group) * group  # Whole groups of candidates per batch.
    loader = DataLoader(_Requests(todo, poses, size, out_size, out_like), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=dev.type == "cuda")
    use_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    pending: list[Future] = []
    dropped = 0
    encoders = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))
    with encoders, ThreadPoolExecutor(max_workers=1) as writer, torch.inference_mode():
        bar = tqdm(total=len(todo), desc="generate", unit="img", disable=not progress)
        for index, src_img, src_pose, tgt_pose, out_hw, out_pose in loader:
            src_img = src_img.to(dev, non_blocking=True)
            src_maps = to_heatmaps(src_pose.to(dev), size, sigma)
            tgt_maps = to_heatmaps(tgt_pose.to(dev), size, sigma)
            with torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext():
                refined = model(src_img, src_maps, tgt_maps)[1].float()
            pixels = to_uint8_sized(refined, out_hw)
            rows = todo.iloc[index.numpy()]
            pending.append(writer.submit(_write_batch, encoders, out_dir, manifest_path, rows, pixels,
                                         out_pose.numpy(), scorer, min_pckh, jpeg_quality))
            while len(pending) > 3:  # Bounded: memory stays flat however many images are planned.
                dropped += pending.pop(0).result()
            bar.update(len(index))
        for future in pending:
            dropped += future.result()
        bar.close()
    images = todo["image"].nunique()
    return images - dropped, requests["image"].nunique() - images, dropped


def load_for_inference(checkpoint: str | os.PathLike, device: str) -> tuple[torch.nn.Module, dict, torch.device]:
    """The generator of a checkpoint (or a bundled generator's name) on its device, with its fields for the manifest."""
    from .device import resolve_device
    from .pretrained import resolve_generator

    dev = resolve_device(device)
    checkpoint = resolve_generator(checkpoint)
    model, state = load_generator(checkpoint, map_location="cpu")
    cfg = model_config_of(state)
    return model.to(dev), {"checkpoint": file_sha256(checkpoint), "step": int(state["step"]), "version": __version__,
                           "size": cfg.image_size, "sigma": cfg.heatmap_sigma}, dev


def generate(images: str | os.PathLike, checkpoint: str | os.PathLike, poses: str | os.PathLike,
             out_dir: str | os.PathLike, cfg: GenerateConfig = GenerateConfig(), shard: tuple[int, int] = (0, 1),
             device: str = "auto", progress: bool = True) -> GenerateResult:
    """Generate `cfg.per_id` images for every identity of `images` (this shard's share of them).

    Reruns skip what is done; the result does not depend on batch size or sharding.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if cfg.candidates < 1:
        raise InputError(f"--candidates {cfg.candidates}: need at least 1")
    scorer = PoseScorer.offline() if cfg.score else None
    if scorer is None and (cfg.candidates > 1 or cfg.min_pckh is not None):
        raise InputError("--candidates and --min-pckh score images by pose consistency, which needs the offline "
                         "pose backend (`make pose` installs MediaPipe)" + ("" if cfg.score else "; drop --no-score"))
    model, info, dev = load_for_inference(checkpoint, device)
    pose_table = read_poses(poses)
    image_set = scan_images(images, layout=cfg.layout)
    requests, unusable = plan(image_set, pose_table, cfg, shard)
    requests["strategy"], requests["checkpoint"], requests["step"], requests["version"] = (
        cfg.strategy, info["checkpoint"], info["step"], info["version"])
    name = "manifest.csv" if shard[1] == 1 else f"manifest.shard-{shard[0]}-of-{shard[1]}.csv"
    manifest_path = out_dir / name
    made, already, dropped = render(model, requests, pose_table, manifest_path, info["size"], info["sigma"], dev,
                                    cfg.batch_size, cfg.num_workers, cfg.jpeg_quality, progress, cfg.out_size,
                                    scorer=scorer, min_pckh=cfg.min_pckh)
    manifest = read_manifest(manifest_path)
    scores = pd.to_numeric(manifest["pckh"], errors="coerce")
    if len(manifest):
        sheet = contact_sheet(manifest, out_dir, dict(zip(image_set.images["name"], image_set.images["path"])))
        preview = "preview.png" if shard[1] == 1 else f"preview.shard-{shard[0]}-of-{shard[1]}.png"
        save_png(out_dir / preview, sheet)
    return GenerateResult(out_dir, manifest_path, made, already, requests["pid"].nunique(), unusable,
                          time.perf_counter() - start, dropped, cfg.candidates, scorer.name if scorer else None,
                          float(scores.mean()) if scores.notna().any() else None, cfg.score)


def merge(out_dirs: list[str | os.PathLike], output: str | os.PathLike | None = None) -> Path:
    """Join the manifests of shard runs into one manifest.csv (image paths made relative to it)."""
    if not out_dirs:
        raise InputError("merge needs at least one output folder")
    output = Path(output) if output else Path(out_dirs[0]) / "manifest.csv"
    parts = []
    for folder in map(Path, out_dirs):
        files = sorted(p for p in folder.glob("manifest*.csv") if p.resolve() != output.resolve())
        if not files:
            raise InputError(f"{folder}: no manifest*.csv to merge")
        for path in files:
            table = read_manifest(path)
            table["image"] = [os.path.relpath(path.parent / p, output.parent) for p in table["image"]]
            parts.append(table)
    merged = pd.concat(parts, ignore_index=True).drop_duplicates("image").sort_values(["pid", "image"])
    with atomic_open(output, "w", encoding="utf-8", newline="") as f:
        merged.to_csv(f, index=False, lineterminator="\n", columns=MANIFEST_COLUMNS)
    return output
