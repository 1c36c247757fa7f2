"""Does augmenting help? Train one torchreid model with and without the generated images, and compare.

Two arms from the same initialisation, seed, sampler and schedule: `baseline` (the original training images)
and `augmented` (the originals plus the manifest's images, under their sources' identities). Both are
evaluated on the data set's query/gallery with torchreid's rank code: Rank-1/5/10, mAP, and mINP (Ye et
al.'s inverse negative penalty, which torchreid lacks). torchreid's data manager, models, optimiser,
scheduler and training engine do the work; ours are only the data set lists (any layout `export` reads),
the batch sampler that sets the share of generated images per batch, and per-image label smoothing so
generated images can carry softer labels (LSRO, Zheng et al. 2017).

Output: OUT/metrics.json, OUT/report.md, OUT/curves.png; OUT/<arm>/ holds each arm's per-epoch checkpoint
(resumable) and history.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .checkpoint import rng_state, safe_load, set_rng_state
from .errors import InputError
from .export import generated_items
from .fileio import atomic_open, atomic_write_text
from .images import scan_images

ARMS = ("baseline", "augmented")
# Published scale for the report (Market-1501, IDE/ResNet-50 unless said).
ANCHORS = [("CamStyle (Zhong et al. 2018), IDE", "+2.9 mAP on Market-1501 with camera-style generated images"),
           ("LSRO (Zheng et al. 2017)", "uniform labels for GAN images: +1.4 mAP on Market-1501 over the baseline"),
           ("FD-GAN / PN-GAN", "pose-normalised images help most when filtered or used as extra views")]


@dataclass(frozen=True)
class ReidBenchmarkConfig:
    """The shared recipe of both arms."""

    model: str = "resnet50"         # Any torchreid model name.
    epochs: int = 30
    height: int = 256
    width: int = 128
    batch_size: int = 32
    lr: float = 3e-4                # Adam, torchreid's defaults otherwise; step decay x0.1 at 2/3 of the epochs.
    seed: int = 0
    gen_ratio: float | None = None  # Share of generated images in each batch; None: drawn like the originals.
    gen_label_smooth: float = 0.1   # Label smoothing of generated images (1.0 = LSRO's uniform); originals: 0.1.
    pretrained: str | None = None   # None: from scratch; "imagenet": torchreid's download; else a local file.
    workers: int = 2
    device: str = "auto"
    layout: str | None = None


def _torchreid():
    try:
        import torchreid.reid as torchreid
    except ImportError:  # A source install of deep-person-reid.
        import torchreid
    return torchreid


def split_lists(root: str | os.PathLike, manifest: str | os.PathLike | None, layout: str | None = None) -> dict:
    """train (path, label, camid, dsetid; dsetid 1 for generated), query and gallery (path, pid, camid) lists."""
    table = scan_images(root, layout=layout).images
    train = table[table["split"] == "train"]
    labels = {pid: i for i, pid in enumerate(sorted(set(train["person_id"])))}
    items = [(p, labels[pid], max(cam - 1, 0), 0) for p, pid, cam in
             zip(train["path"], train["person_id"], train["camera_id"])]
    if manifest is not None:
        items += [(*item[:3], 1) for item in generated_items(manifest, items)]
    lists = {"train": items}
    pids = {pid: i for i, pid in enumerate(sorted(set(table["person_id"])))}  # One id space for query and gallery.
    for split, key in (("query", "query"), ("test", "gallery")):
        part = table[table["split"] == split]
        if part.empty:
            raise InputError(f"{root}: no {key} images; the benchmark evaluates on the data set's query and gallery")
        lists[key] = [(p, pids[pid], max(cam - 1, 0), 0) for p, pid, cam in
                      zip(part["path"], part["person_id"], part["camera_id"])]
    return lists


def _register(name: str, lists: dict) -> None:
    """A torchreid image data set serving exactly these lists, so its data manager and engine run on them."""
    tr = _torchreid()

    class Lists(tr.data.ImageDataset):
        def __init__(self, root="", **kwargs):
            super().__init__(list(lists["train"]), list(lists["query"]), list(lists["gallery"]), **kwargs)

    getattr(tr.data.datasets, "__image_datasets")[name] = Lists


class MixedBatchSampler(Sampler):
    """Seeded batches: with `ratio`, round(ratio * B) generated and the rest original images in every batch (an
    epoch sees each original once); without, a plain shuffle of everything. Epoch e is drawn from (seed, e)."""

    def __init__(self, generated: np.ndarray, batch_size: int, ratio: float | None, seed: int):
        self.generated, self.batch, self.ratio, self.seed, self.epoch = generated, batch_size, ratio, seed, 0
        self.originals, self.extra = np.flatnonzero(~generated), np.flatnonzero(generated)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.ratio is None or not len(self.extra):
            return len(self.generated) // self.batch
        return len(self.originals) // (self.batch - round(self.ratio * self.batch))

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.ratio is None or not len(self.extra):
            order = rng.permutation(len(self.generated))
            yield from (order[i * self.batch:(i + 1) * self.batch].tolist() for i in range(len(self)))
            return
        n_gen = round(self.ratio * self.batch)
        originals = rng.permutation(self.originals)
        extra = rng.choice(self.extra, size=n_gen * len(self), replace=len(self.extra) < n_gen * len(self))
        for i in range(len(self)):
            batch = np.concatenate([originals[i * (self.batch - n_gen):(i + 1) * (self.batch - n_gen)],
                                    extra[i * n_gen:(i + 1) * n_gen]])
            yield rng.permutation(batch).tolist()


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


def _evaluate(model, datamanager, name: str, dev: torch.device) -> dict:
    tr = _torchreid()
    loaders = datamanager.test_loader[name]
    model.eval()

    def features(loader):
        out, pids, cams = [], [], []
        with torch.no_grad():
            for batch in loader:
                out.append(model(batch["img"].to(dev)).float().cpu())
                pids += batch["pid"].tolist()
                cams += batch["camid"].tolist()
        return torch.cat(out), np.array(pids), np.array(cams)

    qf, qp, qc = features(loaders["query"])
    gf, gp, gc = features(loaders["gallery"])
    distmat = tr.metrics.compute_distance_matrix(qf, gf, "euclidean").numpy()
    # torchreid's CMC needs every query to keep max_rank gallery images after the same-camera removal.
    kept = len(gp) - ((gp[None] == qp[:, None]) & (gc[None] == qc[:, None])).sum(1).max()
    cmc, mean_ap = tr.metrics.evaluate_rank(distmat, qp, gp, qc, gc, max_rank=int(min(50, kept)))
    rank = lambda k: float(cmc[min(k, len(cmc)) - 1])  # noqa: E731 - beyond a tiny gallery: its last rank.
    return {"rank1": rank(1), "rank5": rank(5), "rank10": rank(10), "mAP": float(mean_ap),
            "mINP": minp(distmat, qp, gp, qc, gc)}


def _engine_class():
    tr = _torchreid()

    class Engine(tr.engine.ImageSoftmaxEngine):
        """torchreid's softmax engine with per-image label smoothing (generated images: their own epsilon) and
        bf16 autocast on CUDA; it also keeps the epoch's mean loss."""

        def __init__(self, *args, eps: tuple[float, float], dev: torch.device, **kwargs):
            super().__init__(*args, **kwargs)
            self.eps, self.dev, self.loss_sum, self.loss_count = eps, dev, 0.0, 0

        def forward_backward(self, data):
            imgs, pids = data["img"].to(self.dev, non_blocking=True), data["pid"].to(self.dev)
            eps = torch.where(data["dsetid"].to(self.dev) == 1, self.eps[1], self.eps[0])
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.dev.type == "cuda"):
                outputs = self.model(imgs)
            log_probs = torch.log_softmax(outputs.float(), 1)
            k = log_probs.shape[1]
            smooth = torch.nn.functional.one_hot(pids, k) * (1 - eps[:, None]) + eps[:, None] / k
            loss = -(smooth * log_probs).sum(1).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.loss_sum, self.loss_count = self.loss_sum + loss.item(), self.loss_count + 1
            return {"loss": loss.item()}

    return Engine


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


def run_arm(arm: str, lists: dict, cfg: ReidBenchmarkConfig, out: Path, dev: torch.device,
            progress: bool = True) -> dict:
    """Train and evaluate one arm, resuming from OUT/<arm>/checkpoint.pt; returns its record."""
    from tqdm import tqdm

    tr = _torchreid()
    arm_dir = out / arm
    done = arm_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    arm_dir.mkdir(parents=True, exist_ok=True)
    name = f"reid_augment_{arm}_{os.getpid()}"
    _register(name, lists)
    with contextlib.redirect_stdout(io.StringIO()):  # torchreid prints its data set summary tables.
        manager = tr.data.ImageDataManager(root=str(out), sources=name, height=cfg.height, width=cfg.width,
                                           batch_size_train=cfg.batch_size, batch_size_test=max(cfg.batch_size, 64),
                                           workers=cfg.workers, use_gpu=dev.type == "cuda",
                                           transforms=["random_flip"])
    generated = np.array([item[3] == 1 for item in manager.train_loader.dataset.train])
    sampler = MixedBatchSampler(generated, cfg.batch_size, cfg.gen_ratio, cfg.seed)
    manager.train_loader = DataLoader(manager.train_loader.dataset, batch_sampler=sampler, num_workers=cfg.workers,
                                      pin_memory=dev.type == "cuda")
    torch.manual_seed(cfg.seed)  # The same initial weights in both arms.
    model = tr.models.build_model(cfg.model, num_classes=manager.num_train_pids, loss="softmax",
                                  pretrained=cfg.pretrained == "imagenet", use_gpu=dev.type == "cuda")
    init = _load_pretrained(model, cfg.pretrained)
    model = model.to(dev)
    optimizer = tr.optim.build_optimizer(model, optim="adam", lr=cfg.lr)
    scheduler = tr.optim.build_lr_scheduler(optimizer, lr_scheduler="single_step",
                                            stepsize=max(1, round(cfg.epochs * 2 / 3)))
    engine = _engine_class()(manager, model, optimizer=optimizer, scheduler=scheduler, use_gpu=dev.type == "cuda",
                             eps=(0.1, cfg.gen_label_smooth), dev=dev)
    engine.max_epoch, engine.writer = cfg.epochs, None
    history, start = [], 0
    checkpoint = arm_dir / "checkpoint.pt"
    if checkpoint.is_file():
        state = safe_load(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        history, start = state["history"], state["epoch"]
    tick = time.perf_counter()
    for epoch in tqdm(range(start, cfg.epochs), desc=arm, unit="epoch", initial=start, total=cfg.epochs,
                      disable=not progress):
        engine.epoch, engine.loss_sum, engine.loss_count = epoch, 0.0, 0
        sampler.set_epoch(epoch)
        with contextlib.redirect_stdout(io.StringIO()):
            engine.train(print_freq=10**9)
        history.append({"epoch": epoch + 1, "loss": engine.loss_sum / max(engine.loss_count, 1),
                        **_evaluate(model, manager, name, dev)})
        with atomic_open(checkpoint, "wb") as f:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "rng": rng_state(), "history": history,
                        "epoch": epoch + 1}, f)
    record = {**{k: v for k, v in history[-1].items() if k not in ("epoch", "loss")},
              "train_images": len(generated), "generated_images": int(generated.sum()),
              "identities": manager.num_train_pids, "initialisation": init, "history": history,
              "seconds": round(time.perf_counter() - tick, 1)}
    atomic_write_text(done, json.dumps(record, indent=2))
    return record


@dataclass
class BenchmarkResult:
    out: Path
    arms: dict

    def summary(self) -> str:
        b, a = self.arms["baseline"], self.arms["augmented"]
        return (f"Baseline: mAP {b['mAP']:.1%}, Rank-1 {b['rank1']:.1%} on {b['train_images']} images; augmented: "
                f"mAP {a['mAP']:.1%}, Rank-1 {a['rank1']:.1%} on {a['train_images']} images "
                f"({a['generated_images']} generated): {a['mAP'] - b['mAP']:+.1%} mAP. "
                f"Report: {self.out / 'report.md'}.")


def reid_benchmark(root: str | os.PathLike, manifest: str | os.PathLike, out: str | os.PathLike,
                   cfg: ReidBenchmarkConfig = ReidBenchmarkConfig(), progress: bool = True) -> BenchmarkResult:
    """Train `cfg.model` on ROOT's training split with and without the manifest's images; compare on its test split."""
    from .device import resolve_device

    out = Path(out)
    if cfg.gen_ratio is not None and not 0 < cfg.gen_ratio < 1:
        raise InputError(f"--gen-ratio {cfg.gen_ratio}: a share of each batch, between 0 and 1")
    dev = resolve_device(cfg.device)
    lists = split_lists(root, manifest, cfg.layout)
    arms = {}
    for arm in ARMS:
        arm_lists = lists if arm == "augmented" else {**lists, "train": [i for i in lists["train"] if i[3] == 0]}
        arms[arm] = run_arm(arm, arm_lists, cfg, out, dev, progress)
    metrics = {"arms": arms, "difference": {k: arms["augmented"][k] - arms["baseline"][k]
                                            for k in ("rank1", "rank5", "rank10", "mAP", "mINP")},
               "settings": {**asdict(cfg), "root": str(root), "manifest": str(manifest),
                            "device": str(dev)}}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(out / "report.md", _report(metrics))
    _plot(arms, out / "curves.png")
    return BenchmarkResult(out, arms)


def _report(m: dict) -> str:
    rows = ["| arm | train images (generated) | identities | Rank-1 | Rank-5 | Rank-10 | mAP | mINP |",
            "|---|---|---|---|---|---|---|---|"]
    for arm, r in m["arms"].items():
        rows.append(f"| {arm} | {r['train_images']} ({r['generated_images']}) | {r['identities']} | {r['rank1']:.1%} | "
                    f"{r['rank5']:.1%} | {r['rank10']:.1%} | {r['mAP']:.1%} | {r['mINP']:.1%} |")
    d = m["difference"]
    rows.append(f"| difference | | | {d['rank1']:+.1%} | {d['rank5']:+.1%} | {d['rank10']:+.1%} | {d['mAP']:+.1%} | "
                f"{d['mINP']:+.1%} |")
    s = m["settings"]
    gen = f"{s['gen_ratio']:.0%} of each batch" if s["gen_ratio"] is not None else "drawn like the originals"
    return ("# Re-ID benchmark: with and without the generated images\n\n"
            f"Both arms train torchreid's `{s['model']}` from the same initialisation "
            f"[{m['arms']['baseline']['initialisation']}], seed {s['seed']}, sampler and schedule: {s['epochs']} "
            f"epochs, batch {s['batch_size']}, Adam lr {s['lr']}, {s['height']}x{s['width']}, on {s['device']}. "
            f"Generated images: {gen}, label smoothing {s['gen_label_smooth']} (originals 0.1). Evaluated on "
            f"`{s['root']}`'s query and gallery with torchreid's rank code (Market-1501 protocol); mINP as "
            "Ye et al.\n\n"
            + "\n".join(rows) + "\n\nFor scale, published results:\n\n"
            + "\n".join(f"- {name}: {what}" for name, what in ANCHORS)
            + "\n\nOne seed on one split: differences of a point or two are within run-to-run noise.\n")


def _plot(arms: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for arm, record in arms.items():
        epochs = [h["epoch"] for h in record["history"]]
        left.plot(epochs, [h["loss"] for h in record["history"]], marker="o", label=arm)
        right.plot(epochs, [100 * h["mAP"] for h in record["history"]], marker="o", label=arm)
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    right.set(xlabel="epoch", ylabel="test mAP (%)", title="mAP")
    left.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
