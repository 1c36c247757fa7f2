"""Does augmenting help? Train one torchreid model with and without the generated images, and compare.

Two arms per seed, from the same initial weights, with the same number of optimizer steps and the same
learning-rate schedule: `baseline` (the original training images) and `augmented` (the originals plus the
manifest's images, under their sources' identities). `match_epochs` gives the older comparison, where each arm
makes the same number of passes over its own set (the augmented arm then takes more steps). Both are evaluated on
the data set's query and gallery with torchreid's rank code under its protocol (Market-1501: the 0000 distractors
stay in the gallery, only the -1 junk is dropped): Rank-1/5/10, mAP, and mINP (Ye et al.'s inverse negative
penalty, which torchreid lacks). Over several seeds the report gives mean and standard deviation per arm and the
paired difference with its Student t interval (`reid.stats`). torchreid's models, optimiser and rank code do the
work; ours are the data set lists (any layout `export` reads, under a `reid.regime`), the images decoded once
(`reid.fastdata`), the batch sampler that sets the share of generated images per batch and their ramp-in, the
per-step learning rate, and the generated images' targets (`reid.labels`: smoothing, LSRO's uniform, a teacher's
soft labels) and identity gate.

Output: OUT/metrics.json, OUT/report.md, OUT/curves.png; OUT/settings.json (what a rerun must match to reuse
arms); OUT/seed-<s>/<arm>/ holds each arm's checkpoint (resumable) and result.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from .checkpoints import atomic_torch_save, rng_state, safe_load, set_rng_state
from .errors import InputError
from .fileio import atomic_open, atomic_write_text
from .images import scan_images
from .layouts import Layout
from .manifest import generated_items, read_generated
from .reid import fastdata, labels
from .reid import model as reid_model
from .reid.labels import LABELS
from .reid.stats import describe, paired_interval
from .reid.regime import Regime, select

ARMS = ("baseline", "augmented")
METRICS = ("rank1", "rank5", "rank10", "mAP", "mINP")
SCHEDULES = ("step", "cosine", "constant")
# Published figures for scale, as their sources state them (full-size ResNet-50 from ImageNet, not a small run).
ANCHORS = [("CamStyle (Zhong et al. 2018), IDE/ResNet-50 on Market-1501",
            "65.8 -> 68.7 mAP and 85.6 -> 88.1 Rank-1 with camera-style images (github.com/zhunzhong07/CamStyle)"),
           ("LSRO (Zheng et al. 2017), ResNet-50 on Market-1501",
            "+4.37 Rank-1 over its baseline with DCGAN images under uniform labels (the paper's abstract)")]
# The evaluation protocol of each data set, as torchreid 0.2.5's data set classes build query and gallery.
_MARKET_RULE = "junk boxes (person -1) dropped, the 0000 distractors kept in the gallery"
PROTOCOLS = {
    "Market-1501": f"torchreid's Market1501: {_MARKET_RULE}",
    "DukeMTMC-reID": "torchreid's DukeMTMCreID: every query and gallery image (its distractor identities included)",
    "CUHK03 (Market-1501 layout)": f"as torchreid's Market1501 reads this layout: {_MARKET_RULE}",
    "Market-1501 layout": f"as torchreid's Market1501 reads this layout: {_MARKET_RULE}",
    "MSMT17": "torchreid's MSMT17: query and gallery as list_query.txt and list_gallery.txt say; list_val.txt is "
              "not trained on",
}
_SAME_CAMERA = "per query, gallery images of its own person and camera are left out (torchreid's evaluate_rank)"
# Settings that change only the augmented arm: runs that differ in these alone share their baselines.
AUGMENTED_ONLY = ("manifest", "generated_images", "gen_ratio", "gen_labels", "gen_label_smooth", "gen_from", "teacher",
                  "id_gate")
Callback = Callable[[int, str, int, torch.nn.Module], None]


@dataclass(frozen=True)
class ReidBenchmarkConfig:
    """The shared recipe of both arms; a rerun reuses finished arms only under the same recipe (seeds aside)."""

    model: str = "resnet50"         # Any torchreid model name.
    epochs: int = 30                # Length in baseline epochs (passes over the original training images).
    steps: int | None = None        # Optimizer steps per arm, instead of `epochs`.
    match_epochs: bool = False      # Older comparison: each arm `epochs` passes over its own set (steps differ).
    eval_every: int | None = None   # Steps between evaluations and checkpoints; None: one epoch of the baseline
                                    # (with match_epochs: of the arm itself).
    height: int = 256
    width: int = 128
    batch_size: int = 32
    lr: float = 3e-4                # Adam, torchreid's defaults otherwise.
    schedule: str = "step"          # Per step: "step" (x0.1 at 2/3 of the steps), "cosine" (to 0), "constant".
    warmup_steps: int = 0           # Linear warm-up over the first steps.
    seeds: tuple[int, ...] = (0,)   # One run of each arm per seed.
    gen_ratio: float | None = None  # Share of generated images in each batch; None: drawn like the originals.
    gen_labels: str = "smooth"      # Targets of generated images: onehot, smooth (EPS), uniform (LSRO), teacher.
    gen_label_smooth: float = 0.1   # EPS of "smooth" (originals: 0.1 always).
    gen_from: float = 0.0           # Ramp-in: no generated image before this share of the steps.
    teacher: str | None = None      # Re-ID model for "teacher" labels and the identity gate: "baseline" (the
                                    # seed's baseline arm) or a checkpoint trained on the real images.
    id_gate: float | None = None    # Keep a generated image only if the teacher's probability of its source
                                    # beats every other identity's by at least this margin (0: source is top-1).
    real_per_id: int | None = None  # Low-data regime: K real training images per identity (seeded, recorded).
    persons: tuple[int, int] | None = None  # Train on these persons only (FIRST, LAST), e.g. (322, 643).
    subset_seed: int = 0            # Which K images stay (the same for every seed and arm).
    pretrained: str | None = None   # None: from scratch; "imagenet": torchreid's download; else a local file.
    device: str = "auto"
    layout: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if self.persons is not None:
            object.__setattr__(self, "persons", tuple(self.persons))
        _check(self)

    @property
    def regime(self) -> Regime:
        return Regime(self.persons, self.real_per_id, self.subset_seed)


def _check(cfg: ReidBenchmarkConfig) -> None:
    """Settings that cannot run fail here, in one line, before any arm trains."""
    least = {"--batch-size": (cfg.batch_size, 2), "--epochs": (cfg.epochs, 1), "--steps": (cfg.steps, 1),
             "--eval-every": (cfg.eval_every, 1), "--warmup-steps": (cfg.warmup_steps, 0)}
    for flag, (value, low) in least.items():
        if value is not None and value < low:
            raise InputError(f"{flag} {value}: at least {low}")
    if cfg.steps is not None and cfg.match_epochs:
        raise InputError("--steps and --match-epochs both set the training length; give one")
    if cfg.gen_labels not in LABELS:
        raise InputError(f"--gen-labels {cfg.gen_labels!r}: one of {', '.join(LABELS)}")
    if cfg.teacher is None and (cfg.gen_labels == "teacher" or cfg.id_gate is not None):
        raise InputError("--gen-labels teacher and --id-gate need a re-ID model: --teacher baseline (the seed's "
                         "baseline arm) or --teacher CKPT")
    if not 0 <= cfg.gen_from < 1:
        raise InputError(f"--gen-from {cfg.gen_from}: a share of the steps, from 0 up to (not including) 1")
    if cfg.id_gate is not None and not -1 <= cfg.id_gate <= 1:
        raise InputError(f"--id-gate {cfg.id_gate}: a probability margin between -1 and 1 (0: the source is top-1)")
    cfg.regime  # Checks --persons and --real-per-id.
    if cfg.schedule not in SCHEDULES:
        raise InputError(f"--schedule {cfg.schedule!r}: one of {', '.join(SCHEDULES)}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds) or min(cfg.seeds) < 0:
        raise InputError(f"--seeds {','.join(map(str, cfg.seeds))}: distinct integers >= 0, e.g. 0,1,2")
    if cfg.gen_ratio is not None:
        b = cfg.batch_size
        if not 0 < cfg.gen_ratio < 1:
            raise InputError(f"--gen-ratio {cfg.gen_ratio}: a share of each batch, between 0 and 1")
        n_gen = round(cfg.gen_ratio * b)
        if not 1 <= n_gen <= b - 1:
            kind = "generated" if n_gen < 1 else "original"
            raise InputError(f"--gen-ratio {cfg.gen_ratio}: {n_gen} of {b} images per batch would be generated, "
                             f"which leaves no {kind} image; at --batch-size {b} use {1 / b:.3g} to {(b - 1) / b:.3g}")


@dataclass
class Splits:
    """torchreid's lists: train (path, label, camid, dsetid; dsetid 1 for generated), query and gallery (path,
    pid, camid, 0), and the data set and protocol they follow."""

    train: list[tuple]
    query: list[tuple]
    gallery: list[tuple]
    dataset: str = ""
    protocol: str = ""
    classes: list[str] = field(default_factory=list)  # Person id of each training label, in label order.
    selection: str = ""   # What the regime kept (empty: the whole training split).


def dataset_name(layout: Layout) -> str:
    """Which data set a root holds, for the report: the layout's kind, or its folder names."""
    if layout.kind == "msmt17":
        return "MSMT17"
    names = f"{layout.root.parent.name}/{layout.root.name}".lower()
    for key, name in (("duke", "DukeMTMC-reID"), ("cuhk03", "CUHK03 (Market-1501 layout)"),
                      ("market", "Market-1501")):
        if key in names:
            return name
    return "Market-1501 layout"


def split_lists(root: str | os.PathLike, manifest: str | os.PathLike | None, layout: str | None = None,
                regime: Regime = Regime()) -> Splits:
    """The benchmark's lists under torchreid's protocol for the data set: in the Market-1501 layout only junk
    (person -1) is dropped and the 0000 distractors stay in the gallery; MSMT17 keeps what its lists hold. The
    training split keeps what `regime` selects; generated images must come from kept images (no leak)."""
    # Training and test splits are read apart: names need be unique only within each (MSMT17's both start at 0000).
    found, tested = (scan_images(root, include_distractors=True, layout=layout, splits=splits)
                     for splits in (("train",), ("query", "test")))
    table = pd.concat([found.images, tested.images], ignore_index=True)
    table = table[table["person_id"] != "-1"]  # torchreid's Market1501 skips pid -1 everywhere.
    train = table[table["split"] == "train"]
    selected = ""
    if not regime.full:
        selection = select(list(train["name"]), list(train["person_id"]), regime)
        train, selected = train[selection.keep], selection.summary()
    classes = sorted(set(train["person_id"]))
    labels = {pid: i for i, pid in enumerate(classes)}
    items = [(p, labels[pid], max(cam - 1, 0), 0) for p, pid, cam in
             zip(train["path"], train["person_id"], train["camera_id"])]
    if manifest is not None:
        items += [(*item[:3], 1) for item in _generated(manifest, items, found.images, regime)]
    pids = {pid: i for i, pid in enumerate(sorted(set(table["person_id"])))}  # One id space for query and gallery.
    tests = {}
    for split, key in (("query", "query"), ("test", "gallery")):
        part = table[table["split"] == split]
        if part.empty:
            raise InputError(f"{root}: no {key} images; the benchmark evaluates on the data set's query and gallery")
        tests[key] = [(p, pids[pid], max(cam - 1, 0), 0) for p, pid, cam in
                      zip(part["path"], part["person_id"], part["camera_id"])]
    name = dataset_name(found.layout)
    return Splits(items, tests["query"], tests["gallery"], name, PROTOCOLS[name], classes, selected)


def _generated(manifest, kept: list[tuple], every: pd.DataFrame, regime: Regime) -> list[tuple]:
    """The manifest's items; under a regime, a generated image whose source the regime dropped is refused: its
    generator saw an image the re-ID model must not (see the README's low-data protocol)."""
    items = generated_items(manifest, kept)
    if not regime.full:
        sources = read_generated(manifest)[1]["source"].map(os.path.basename)
        dropped = set(every["name"]) - {os.path.basename(item[0]) for item in kept}
        leaked = int(sources.isin(dropped).sum())
        if leaked:
            raise InputError(f"{manifest}: {leaked} generated images come from real images that {regime.describe()} "
                             f"leaves out; generate from the kept images only (`reid-augment subset`)")
    return items


class MixedBatchSampler(Sampler):
    """Seeded batches as one stream of passes: with `ratio`, round(ratio * B) generated and the rest original
    images in every batch (a pass sees each original once); without, a plain shuffle of everything per pass.
    Pass p is drawn from (seed, p), and `set_steps(start, stop)` serves the stream's batches start..stop-1, so an
    arm resumed at any step sees the batches an uninterrupted one would."""

    def __init__(self, generated: np.ndarray, batch_size: int, ratio: float | None, seed: int):
        self.batch, self.seed = batch_size, seed
        self.originals, self.extra = np.flatnonzero(~generated), np.flatnonzero(generated)
        self.n_gen = round(ratio * batch_size) if ratio is not None and len(self.extra) else 0
        pool = len(self.originals) if self.n_gen else len(generated)
        self.per_pass = pool // (batch_size - self.n_gen)  # Batches per pass: the arm's epoch, in steps.
        if self.per_pass < 1:
            raise InputError(f"{pool} training images: fewer than one batch of {batch_size - self.n_gen}; "
                             f"lower --batch-size")
        self.start, self.stop, self._cache = 0, self.per_pass, (-1, [])
        self.ramp = 0  # Steps before it hold originals only (the generated stream's ramp-in).

    def set_steps(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def _pass(self, p: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, p])
        if not self.n_gen:
            order = rng.permutation(len(self.originals) + len(self.extra))
            return [order[i * self.batch:(i + 1) * self.batch].tolist() for i in range(self.per_pass)]
        k, n = self.batch - self.n_gen, self.n_gen
        originals = rng.permutation(self.originals)
        extra = rng.choice(self.extra, size=n * self.per_pass, replace=len(self.extra) < n * self.per_pass)
        return [rng.permutation(np.concatenate([originals[i * k:(i + 1) * k], extra[i * n:(i + 1) * n]])).tolist()
                for i in range(self.per_pass)]

    def _originals(self, step: int) -> list[int]:
        """Batch `step` of a stream of passes over the originals alone: what the ramp-in serves."""
        per_pass = len(self.originals) // self.batch
        p, i = divmod(step, per_pass)
        order = np.random.default_rng([self.seed, p, 1]).permutation(self.originals)
        return order[i * self.batch:(i + 1) * self.batch].tolist()

    def __iter__(self):
        for step in range(self.start, self.stop):
            if step < self.ramp:
                yield self._originals(step)
                continue
            p, i = divmod(step, self.per_pass)
            if self._cache[0] != p:
                self._cache = (p, self._pass(p))
            yield self._cache[1][i]


def lr_factor(schedule: str, step: int, total: int, warmup: int = 0) -> float:
    """The learning rate of optimizer step `step` (from 0) of `total`, as a share of --lr: a function of the step
    alone, so arms with equal steps share the schedule."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "step":
        return 0.1 if step >= round(total * 2 / 3) else 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return 1.0


def plan_steps(cfg: ReidBenchmarkConfig, per_epoch: int, base_per_epoch: int) -> tuple[int, int]:
    """(total steps, steps between evaluations) of an arm whose epoch is `per_epoch` steps; the baseline's is
    `base_per_epoch`. By default every arm takes the baseline's steps; with match_epochs, its own epochs."""
    if cfg.match_epochs:
        return cfg.epochs * per_epoch, cfg.eval_every or per_epoch
    return cfg.steps or cfg.epochs * base_per_epoch, cfg.eval_every or base_per_epoch


def minp(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids) -> float:
    """mean Inverse Negative Penalty (Ye et al. 2021) under the Market-1501 protocol (same person and camera
    gallery images are left out): INP = matches / (rank of the hardest match)."""
    order = np.argsort(distmat, axis=1, kind="stable")
    values = []
    for i in range(len(q_pids)):
        keep = ~((g_pids[order[i]] == q_pids[i]) & (g_camids[order[i]] == q_camids[i]))
        hits = (g_pids[order[i]] == q_pids[i])[keep]
        if hits.any():
            values.append(hits.sum() / (np.flatnonzero(hits)[-1] + 1))
    return float(np.mean(values)) if values else float("nan")


@dataclass
class Decoded:
    """Every image of the run decoded once: the training items (generated included) and the test lists."""

    train: torch.Tensor       # (N, 3, H, W) uint8, in Splits.train order (unreadable images left out).
    labels: torch.Tensor      # (N,) training label.
    generated: np.ndarray     # (N,) bool.
    query: torch.Tensor
    gallery: torch.Tensor
    q_pids: np.ndarray
    q_cams: np.ndarray
    g_pids: np.ndarray
    g_cams: np.ndarray

    def subset(self, rows: np.ndarray) -> "Decoded":
        return replace(self, train=self.train[rows], labels=self.labels[rows], generated=self.generated[rows])


def decode_lists(lists: Splits, height: int, width: int, progress: bool = True) -> Decoded:
    """Decode the run's images once; unreadable ones are reported and left out (an empty test split is fatal)."""
    train = fastdata.decode([item[0] for item in lists.train], height, width, progress, "decode train")
    tests = {}
    for key, items in (("query", lists.query), ("gallery", lists.gallery)):
        d = fastdata.decode([item[0] for item in items], height, width, progress, f"decode {key}")
        if not len(d.kept):
            raise InputError(f"no readable {key} image (first: {d.skipped[0][0]}: {d.skipped[0][1]})")
        tests[key] = (d, np.array([items[i][1] for i in d.kept]), np.array([items[i][2] for i in d.kept]))
    for path, reason in train.skipped + tests["query"][0].skipped + tests["gallery"][0].skipped:
        print(f"warning: {path}: {reason}; skipped")
    kept = [lists.train[i] for i in train.kept]
    return Decoded(train.images, torch.tensor([item[1] for item in kept], dtype=torch.long),
                   np.array([item[3] == 1 for item in kept], dtype=bool),
                   tests["query"][0].images, tests["gallery"][0].images, tests["query"][1], tests["query"][2],
                   tests["gallery"][1], tests["gallery"][2])


@dataclass(frozen=True)
class Precision:
    """How the arm computes on its device: channels_last memory format and bf16 autocast where it pays."""

    channels_last: bool
    bf16: bool

    @classmethod
    def of(cls, dev: torch.device) -> "Precision":
        from .device import fast_bf16

        return cls(channels_last=True, bf16=fast_bf16(dev))

    def autocast(self, dev: torch.device):
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16)

    def describe(self) -> str:
        return f"{'bf16 autocast' if self.bf16 else 'float32'}{', channels_last' if self.channels_last else ''}"


def _evaluate(model, data: Decoded, dev: torch.device, precision: Precision) -> dict:
    tr = reid_model.torchreid()
    model.eval()

    def features(images):
        out = []
        with torch.no_grad(), precision.autocast(dev):
            for start in range(0, len(images), 128):
                part = images[start:start + 128]
                x = fastdata.batch(part, torch.arange(len(part)), channels_last=precision.channels_last)
                out.append(model(x.to(dev)).float().cpu())
        return torch.cat(out)

    qf, gf = features(data.query), features(data.gallery)
    qp, qc, gp, gc = data.q_pids, data.q_cams, data.g_pids, data.g_cams
    distmat = tr.metrics.compute_distance_matrix(qf, gf, "euclidean").numpy()
    # torchreid's CMC needs every query to keep max_rank gallery images after the same-camera removal.
    kept = len(gp) - ((gp[None] == qp[:, None]) & (gc[None] == qc[:, None])).sum(1).max()
    cmc, mean_ap = tr.metrics.evaluate_rank(distmat, qp, gp, qc, gc, max_rank=int(min(50, kept)))
    rank = lambda k: float(cmc[min(k, len(cmc)) - 1])  # noqa: E731 - beyond a tiny gallery: its last rank.
    model.train()
    return {"rank1": rank(1), "rank5": rank(5), "rank10": rank(10), "mAP": float(mean_ap),
            "mINP": minp(distmat, qp, gp, qc, gc)}


def _load_pretrained(model, pretrained: str | None) -> str:
    """Load ImageNet weights from a local file (tensors only, no code); returns what the report says."""
    if pretrained is None:
        return "from scratch (no --pretrained)"
    if pretrained == "imagenet":
        return "ImageNet (torchreid's download)"
    state = safe_load(Path(pretrained), what="weights file")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    matched = {k.removeprefix("module."): v for k, v in state.items()
               if k.removeprefix("module.") in own and own[k.removeprefix("module.")].shape == v.shape}
    if not matched:
        raise InputError(f"{pretrained}: no weight in it fits the model's layers")
    model.load_state_dict(matched, strict=False)
    return f"ImageNet from {pretrained} ({len(matched)}/{len(own)} tensors)"


def initial_model(cfg: ReidBenchmarkConfig, num_classes: int, seed: int, dev: torch.device):
    """The seed's initial weights, the same in both arms (they share the identities): (model, what the report
    says about its initialisation)."""
    torch.manual_seed(seed)
    try:
        model = reid_model.build(cfg.model, num_classes, pretrained=cfg.pretrained == "imagenet",
                                 use_gpu=dev.type == "cuda")
    except (OSError, RuntimeError) as err:  # The ImageNet download, offline or refused.
        if cfg.pretrained != "imagenet":
            raise
        raise InputError(f"--pretrained imagenet: torchreid could not download the ImageNet weights "
                         f"({type(err).__name__}: {err}); download them elsewhere and give the file's path") from None
    init = _load_pretrained(model, cfg.pretrained)
    return model.to(dev), init


@dataclass
class GeneratedTargets:
    """What the generated images of an arm are taught: their label kind and, for "teacher", each one's row of
    the teacher's probabilities (aligned with the arm's training rows; originals' rows unused)."""

    kind: str
    eps: float
    teacher: torch.Tensor | None = None


def run_arm(arm: str, data: Decoded, cfg: ReidBenchmarkConfig, seed: int, arm_dir: Path, dev: torch.device,
            base_per_epoch: int, classes: list[str], progress: bool = True, callback: Callback | None = None,
            targets: GeneratedTargets | None = None, note: dict | None = None) -> dict:
    """Train and evaluate one arm of one seed on `data`'s training rows, resuming from arm_dir/checkpoint.pt;
    returns its record.

    `callback(seed, arm, step, model)` runs when training starts (step 0, or the step resumed from) and after
    each checkpoint; whatever it raises stops the run with that checkpoint kept.
    """
    from tqdm import tqdm

    done = arm_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    arm_dir.mkdir(parents=True, exist_ok=True)
    targets = targets or GeneratedTargets(cfg.gen_labels if cfg.gen_labels != "teacher" else "smooth",
                                          cfg.gen_label_smooth)
    sampler = MixedBatchSampler(data.generated, cfg.batch_size, cfg.gen_ratio, seed)
    total, every = plan_steps(cfg, sampler.per_pass, base_per_epoch)
    sampler.ramp = round(cfg.gen_from * total)
    model, init = initial_model(cfg, len(classes), seed, dev)
    precision = Precision.of(dev)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = reid_model.torchreid().optim.build_optimizer(model, optim="adam", lr=cfg.lr)
    factor = functools.partial(lr_factor, cfg.schedule, total=total, warmup=cfg.warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    stops = [*range(every, total, every), total]
    state = {"history": [], "step": 0, "train_seconds": 0.0, "eval_seconds": 0.0}
    checkpoint = arm_dir / "checkpoint.pt"
    if checkpoint.is_file():
        saved = safe_load(checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        set_rng_state(saved["rng"])
        state = {k: saved[k] for k in state}
    if callback is not None:
        callback(seed, arm, state["step"], model)
    step_fn = functools.partial(_step, model, optimizer, schedule, data, len(classes), targets, seed, dev, precision)
    bar = tqdm(total=total, initial=state["step"], desc=f"{arm} (seed {seed})", unit="step", disable=not progress)
    for stop in stops:
        if stop <= state["step"]:
            continue
        _train_round(step_fn, sampler, state, stop, cfg.lr * factor(stop - 1),
                     functools.partial(_evaluate, model, data, dev, precision), bar)
        atomic_torch_save({**reid_model.checkpoint_record(model, cfg.model, classes, (cfg.height, cfg.width)),
                           "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "rng": rng_state(),
                           **state}, checkpoint)
        if callback is not None:
            callback(seed, arm, stop, model)
    bar.close()
    record = {**{k: v for k, v in state["history"][-1].items() if k in METRICS},
              "steps": total, "steps_per_epoch": sampler.per_pass, "epochs": round(total / sampler.per_pass, 3),
              "train_images": len(data.generated), "generated_images": int(data.generated.sum()),
              "identities": len(classes), "initialisation": init, "precision": precision.describe(),
              "gen_labels": targets.kind, **(note or {}),
              "train_seconds": round(state["train_seconds"], 1), "eval_seconds": round(state["eval_seconds"], 1),
              "seconds_per_step": round(state["train_seconds"] / total, 4), "history": state["history"]}
    atomic_write_text(done, json.dumps(record, indent=2))
    return record


def _step(model, optimizer, schedule, data: Decoded, num_classes: int, targets: GeneratedTargets, seed: int,
          dev: torch.device, precision: Precision, step: int, rows: list[int]) -> float:
    """One optimizer step on the training rows `rows`: originals learn their label smoothed by 0.1, generated
    images the arm's targets; the loss is the batch's mean cross-entropy to them."""
    rows = torch.as_tensor(rows)
    x = fastdata.batch(data.train, rows, fastdata.flips(seed, step, len(rows)), precision.channels_last).to(dev)
    with precision.autocast(dev):
        logits = model(x)
    pids, gen = data.labels[rows], torch.from_numpy(data.generated[rows.numpy()])
    target = labels.targets("smooth", pids, num_classes, 0.1)
    if gen.any():
        teacher = targets.teacher[rows[gen]] if targets.teacher is not None else None
        target[gen] = labels.targets(targets.kind, pids[gen], num_classes, targets.eps, teacher)
    loss = labels.soft_cross_entropy(logits, target.to(dev)).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.item()


def _train_round(step_fn, sampler: MixedBatchSampler, state: dict, stop: int, lr: float, evaluate, bar) -> None:
    """Steps state["step"]..stop-1, then one evaluation; the history entry and clocks go into `state`."""
    sampler.set_steps(state["step"], stop)
    losses = []
    tick = time.perf_counter()
    for step, rows in zip(range(state["step"], stop), sampler):
        losses.append(step_fn(step, rows))
        bar.update(1)
    tock = time.perf_counter()
    metrics = evaluate()
    state["train_seconds"] += tock - tick
    state["eval_seconds"] += time.perf_counter() - tock
    state["history"].append({"step": stop, "epoch": round(stop / sampler.per_pass, 3), "lr": lr,
                             "loss": float(np.mean(losses)), **metrics})
    state["step"] = stop


def _settings(root, manifest, cfg: ReidBenchmarkConfig, dev: torch.device, lists: Splits) -> dict:
    """What decides an arm's result, as JSON: finished arms are reused only under the same (seeds only pick which
    runs there are)."""
    ignored = ("seeds", "device") + (("epochs",) if cfg.steps is not None else ())  # --steps overrides --epochs.
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ignored}
    generated = sum(item[3] for item in lists.train)
    data = {"root": str(Path(root).resolve()), "manifest": str(Path(manifest).resolve()), "device": dev.type,
            "train_images": len(lists.train) - generated, "generated_images": generated,
            "num_query": len(lists.query), "num_gallery": len(lists.gallery)}
    return json.loads(json.dumps({**recipe, **data}))


def _differences(old: dict, new: dict) -> str:
    return ", ".join(f"{k} {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}"
                     for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k))


def _claim(out: Path, settings: dict, force: bool) -> None:
    """Make OUT's arms this run's: refuse arms trained under other settings, or remove them with `force`."""
    path = out / "settings.json"
    arm_dirs = sorted(p for p in out.glob("seed-*") if p.is_dir() and re.fullmatch(r"seed-\d+", p.name))
    if force:
        for folder in arm_dirs:
            shutil.rmtree(folder)
        for name in ("metrics.json", "report.md", "curves.png"):
            (out / name).unlink(missing_ok=True)
    elif path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: unreadable ({err}); rerun with --force to start over") from None
        diffs = _differences(old, settings)
        if diffs:
            raise InputError(f"{path}: the arms there were trained with other settings ({diffs}); rerun with "
                             f"--force to start over, or choose another -o")
    elif arm_dirs:
        raise InputError(f"{out}: holds arms ({arm_dirs[0].name}/) but no settings.json to check them against; "
                         f"rerun with --force to start over")
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def reuse_baselines(source: str | os.PathLike, out: Path, settings: dict, seeds: tuple[int, ...]) -> list[int]:
    """Copy the finished baseline arms of another benchmark folder into OUT, where they are not yet: the baseline
    never sees the manifest, so comparing several manifests or ways of using them needs it trained once. Refuses a
    folder whose settings differ in anything but those (AUGMENTED_ONLY). Returns the seeds copied."""
    source = Path(source)
    try:
        theirs = json.loads((source / "settings.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{source / 'settings.json'}: cannot reuse its baselines ({err})") from None
    own = AUGMENTED_ONLY
    diffs = _differences({k: v for k, v in theirs.items() if k not in own},
                         {k: v for k, v in settings.items() if k not in own})
    if diffs:
        raise InputError(f"{source}: its baselines were trained with other settings ({diffs})")
    copied = []
    for seed in seeds:
        arm, mine = source / f"seed-{seed}" / "baseline", out / f"seed-{seed}" / "baseline"
        if (arm / "result.json").is_file() and not (mine / "result.json").is_file():
            shutil.rmtree(mine, ignore_errors=True)
            shutil.copytree(arm, mine)
            copied.append(seed)
    return copied


def _stats(values: list[float]) -> dict:
    """Mean and sample standard deviation (n - 1; None for one value)."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def aggregate(runs: dict[int, dict[str, dict]]) -> dict:
    """Over seeds: each arm's mean and standard deviation, and the paired difference (augmented minus baseline
    within each seed, then its mean and standard deviation), which cancels what a seed does to both arms."""
    first = next(iter(runs.values()))
    keep = ("train_images", "generated_images", "identities", "steps", "epochs", "initialisation")
    arms = {arm: {**{k: first[arm][k] for k in keep}, **{k: _stats([r[arm][k] for r in runs.values()])
                                                         for k in METRICS}} for arm in ARMS}
    per_seed = {str(seed): {k: r["augmented"][k] - r["baseline"][k] for k in METRICS} for seed, r in runs.items()}
    difference = {k: _stats([d[k] for d in per_seed.values()]) for k in METRICS}
    interval = {k: paired_interval([d[k] for d in per_seed.values()]) for k in METRICS}
    return {"arms": arms, "difference": {**difference, "per_seed": per_seed, "interval": interval}}


def _pm(stat: dict, sign: str = "") -> str:
    """A statistic in percent (points for a difference): 12.3% ± 0.4, or 12.3% for one seed."""
    value = f"{stat['mean'] * 100:{sign}.1f}" + ("" if sign else "%")
    return value if stat["std"] is None else f"{value} ± {stat['std'] * 100:.1f}"


@dataclass
class BenchmarkResult:
    out: Path
    runs: dict       # seed -> arm -> record
    metrics: dict    # What metrics.json holds.

    def summary(self) -> str:
        m = self.metrics
        b, a, d = m["arms"]["baseline"], m["arms"]["augmented"], m["difference"]
        seeds = len(m["seeds"])
        return (f"mAP: baseline {_pm(b['mAP'])}, augmented {_pm(a['mAP'])} ({a['generated_images']} generated "
                f"images; {b['steps']} and {a['steps']} steps); paired difference "
                f"{describe(d['interval']['mAP'])} mAP points, Rank-1 {_pm(d['rank1'], '+')}, over {seeds} seed{'s' * (seeds > 1)} on {m['dataset']}. "
                f"Report: {self.out / 'report.md'}.")


def reid_benchmark(root: str | os.PathLike, manifest: str | os.PathLike, out: str | os.PathLike,
                   cfg: ReidBenchmarkConfig = ReidBenchmarkConfig(), progress: bool = True, force: bool = False,
                   callback: Callback | None = None, baseline_from: str | os.PathLike | None = None) -> BenchmarkResult:
    """Train `cfg.model` on ROOT's training split with and without the manifest's images, once per seed; compare on
    its query and gallery. Finished arms in OUT are reused when the settings match; `force` starts over;
    `baseline_from` copies the finished baseline arms of another OUT trained with the same settings (see
    `reuse_baselines`).

    Raises:
        InputError: the data, the settings, or OUT's arms (trained with other settings) do not allow the run.
    """
    from .device import resolve_device

    out = Path(out)
    dev = resolve_device(cfg.device)
    reid_model.check_name(cfg.model)  # An unknown model name fails here, in one line, before any decoding.
    lists = split_lists(root, manifest, cfg.layout, cfg.regime)
    originals = sum(item[3] == 0 for item in lists.train)
    base_per_epoch = originals // cfg.batch_size
    if base_per_epoch < 1:
        raise InputError(f"{root}: {originals} training images, fewer than one batch of {cfg.batch_size}")
    teacher = None if cfg.teacher in (None, "baseline") else _judge(cfg.teacher, lists.classes, dev)  # One for all.
    settings = _settings(root, manifest, cfg, dev, lists)
    _claim(out, settings, force)
    reused = reuse_baselines(baseline_from, out, settings, cfg.seeds) if baseline_from is not None else []
    data = decode_lists(lists, cfg.height, cfg.width, progress)
    base_rows = np.flatnonzero(~data.generated)
    runs = {}
    for seed in cfg.seeds:
        seed_dir = out / f"seed-{seed}"
        base = run_arm("baseline", data.subset(base_rows), cfg, seed, seed_dir / "baseline", dev, base_per_epoch,
                       lists.classes, progress, callback)
        rows, targets, note = np.arange(len(data.generated)), None, None
        if cfg.teacher and not (seed_dir / "augmented" / "result.json").is_file():
            judge = teacher or _judge(seed_dir / "baseline" / "checkpoint.pt", lists.classes, dev)
            rows, targets, note = _augmented_rows(data, cfg, judge)
        aug = run_arm("augmented", data.subset(rows), cfg, seed, seed_dir / "augmented", dev, base_per_epoch,
                      lists.classes, progress, callback, targets, note)
        runs[seed] = {"baseline": base, "augmented": aug}
    metrics = {"dataset": lists.dataset, "selection": lists.selection, "protocol": f"{lists.protocol}; {_SAME_CAMERA}",
               "num_query": len(lists.query), "num_gallery": len(lists.gallery), "seeds": list(cfg.seeds),
               "baselines_from": {"folder": str(Path(baseline_from).resolve()), "seeds": reused} if reused else None,
               **aggregate(runs), "runs": {str(seed): arms for seed, arms in runs.items()},
               "settings": {**settings, "seeds": list(cfg.seeds), "device": str(dev)}}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(out / "report.md", _report(metrics))
    _plot(runs, out / "curves.png")
    return BenchmarkResult(out, runs, metrics)


def _judge(checkpoint: str | os.PathLike, classes: list[str], dev: torch.device) -> reid_model.ReidModel:
    """The teacher and gate: --teacher CKPT for every seed, or a seed's baseline arm (its checkpoint.pt)."""
    return reid_model.load(checkpoint, classes=classes, device=dev)


def _augmented_rows(data: Decoded, cfg: ReidBenchmarkConfig, judge) -> tuple[np.ndarray, GeneratedTargets, dict]:
    """The augmented arm's training rows (originals plus the generated images the identity gate keeps), what its
    generated images are taught, and what the record says about both. `judge` is the re-ID model trained on
    real images alone that gives the teacher labels and the gate's verdicts."""
    rows, kind = np.arange(len(data.generated)), cfg.gen_labels
    gen = np.flatnonzero(data.generated)
    _, probs = judge.predict(data.train[gen])
    teacher = torch.zeros((len(rows), probs.shape[1]))
    teacher[gen] = probs
    own, margin = reid_model.source_scores(probs, data.labels[gen].numpy())
    note = {"teacher_source_prob": round(float(own.mean()), 4), "teacher_top1": round(float((margin > 0).mean()), 4)}
    if cfg.id_gate is not None:
        passed = margin > 0 if cfg.id_gate == 0 else margin >= cfg.id_gate
        rows = np.concatenate([np.flatnonzero(~data.generated), gen[passed]])
        note["gated_out"] = int((~passed).sum())
    targets = GeneratedTargets(kind, cfg.gen_label_smooth, teacher if kind == "teacher" else None)
    keep = torch.from_numpy(rows)
    if targets.teacher is not None:
        targets = replace(targets, teacher=targets.teacher[keep])
    return rows, targets, note


def _report(m: dict) -> str:
    rows = ["| arm | train images (generated) | identities | steps (epochs) | Rank-1 | Rank-5 | Rank-10 | mAP | mINP |",
            "|---|---|---|---|---|---|---|---|---|"]
    for arm, r in m["arms"].items():
        rows.append(f"| {arm} | {r['train_images']} ({r['generated_images']}) | {r['identities']} | {r['steps']} "
                    f"({r['epochs']:g}) | " + " | ".join(_pm(r[k]) for k in METRICS) + " |")
    rows.append("| difference | | | | " + " | ".join(_pm(m["difference"][k], "+") for k in METRICS) + " |")
    s, seeds, base = m["settings"], m["seeds"], m["arms"]["baseline"]
    gen = f"{s['gen_ratio']:.0%} of each batch" if s["gen_ratio"] is not None else "drawn like the originals"
    length = ("each make the same number of passes over their own training set (epoch-matched: the steps differ, "
              "and with them the step where the learning rate changes)" if s["match_epochs"] else
              "take the same number of optimizer steps with the same learning rate at each step")
    warmup = f", {s['warmup_steps']} warm-up steps" if s["warmup_steps"] else ""
    ramp = f", from {s['gen_from']:.0%} of the steps on" if s.get("gen_from") else ""
    text = ("# Re-ID benchmark: with and without the generated images\n\n"
            f"Both arms train torchreid's `{s['model']}` from the same initial weights per seed "
            f"[{base['initialisation']}] and {length} (Adam, lr "
            f"{s['lr']}, `{s['schedule']}` schedule{warmup}); batch {s['batch_size']}, {s['height']}x{s['width']}, "
            f"on {s['device']} ({m['arms']['augmented'].get('precision', 'float32')}); "
            f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}. Real training images: "
            f"{m.get('selection') or 'the whole training split'}. Generated images: {gen}"
            f"{ramp}; {_labels(s)}"
            f"{_gate(s)} (originals: label smoothing 0.1).\n\n"
            f"Evaluated on `{s['root']}` ({m['num_query']} query and {m['num_gallery']} gallery images) under the "
            f"{m['dataset']} protocol: {m['protocol']}. Rank-k and mAP from torchreid's rank code; mINP as Ye et al."
            "\n\n" + "\n".join(rows) + "\n\n")
    if m.get("baselines_from"):
        text += (f"The baseline arms of seeds {', '.join(map(str, m['baselines_from']['seeds']))} were trained in "
                 f"`{m['baselines_from']['folder']}` under the same settings (--baseline-from).\n\n")
    if len(seeds) > 1:
        ci = m["difference"]["interval"]
        text += (f"Each figure: mean ± standard deviation (n - 1) over {len(seeds)} seeds, in percent; the difference "
                 "is augmented minus baseline within each seed, then averaged (percentage points). Paired "
                 "difference with its 95% Student t interval over the seeds and the smallest difference this run "
                 f"could detect (80% power): mAP {describe(ci['mAP'])}, Rank-1 {describe(ci['rank1'])}.\n\n"
                 "| seed | baseline mAP | augmented mAP | difference |\n|---|---|---|---|\n"
                 + "".join(f"| {seed} | {r['baseline']['mAP']:.1%} | {r['augmented']['mAP']:.1%} | "
                           f"{(r['augmented']['mAP'] - r['baseline']['mAP']) * 100:+.1f} |\n"
                           for seed, r in m["runs"].items()) + "\n")
    else:
        text += ("One seed is an anecdote: differences of a point or two are within run-to-run noise; "
                 "`--seeds 0,1,2` gives their spread.\n\n")
    return text + ("For scale, published results (full-size ResNet-50 from ImageNet, not comparable with a small "
                   "run):\n\n" + "\n".join(f"- {name}: {what}" for name, what in ANCHORS)
                   + "\n")


def _labels(s: dict) -> str:
    kind = s.get("gen_labels", "smooth")
    teacher = "the seed's baseline arm" if s.get("teacher") == "baseline" else f"`{s.get('teacher')}`"
    return {"onehot": "one-hot labels", "smooth": f"label smoothing {s['gen_label_smooth']}",
            "uniform": "uniform labels (LSRO)",
            "teacher": f"soft labels from {teacher} (flip-averaged softmax, DG-Net)"}[kind]


def _gate(s: dict) -> str:
    if s.get("id_gate") is None:
        return ""
    teacher = "the seed's baseline arm" if s.get("teacher") == "baseline" else f"`{s.get('teacher')}`"
    return (f"; identity gate: kept where {teacher} gives the source person a probability margin over every "
            f"other of at least {s['id_gate']}" if s["id_gate"] != 0 else
            f"; identity gate: kept where {teacher} ranks the source person first")


def _plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for colour, arm in zip(("C0", "C1"), ARMS):
        for i, arms in enumerate(runs.values()):
            steps = [h["step"] for h in arms[arm]["history"]]
            label = arm if i == 0 else None
            left.plot(steps, [h["loss"] for h in arms[arm]["history"]], marker="o", color=colour, label=label)
            right.plot(steps, [100 * h["mAP"] for h in arms[arm]["history"]], marker="o", color=colour, label=label)
    left.set(xlabel="optimizer step", ylabel="training loss", title="loss")
    right.set(xlabel="optimizer step", ylabel="test mAP (%)", title=f"mAP ({len(runs)} seed(s))")
    left.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
