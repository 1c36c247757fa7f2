"""Seconds per `reid-benchmark` training step: torchreid's loader (per-item JPEG decoding and transforms in worker
processes) against images decoded once into a uint8 tensor, each in float32 NCHW, channels_last and channels_last
with bf16 autocast.

Real crops (a Market-1501-layout root, e.g. ../shared/data/cuhk03-market) or, without --data, the bundled sample;
osnet_x0_25 from scratch, Adam, the benchmark's loss. Each setting runs --warmup steps untimed, then --steps timed;
the mean per step is printed with the CPU model, the thread count and what `device.fast_bf16` decides.

Usage:
  python benchmarks/bench_reid_step.py --data ../shared/data/cuhk03-market --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import torch

from reid_augment import device
from reid_augment.device import fast_bf16
from reid_augment.reid import fastdata, labels
from reid_augment.reid import model as reid_model
from reid_augment.reid_benchmark import split_lists

SAMPLE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample" / "market"


def _step(model, opt, x, pids, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    loss = labels.soft_cross_entropy(logits, labels.targets("smooth", pids, logits.shape[1], 0.1)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def torchreid_loader(lists, args):
    """Batches as reid-benchmark made them before 0.5: torchreid's data manager, random_flip, worker processes."""
    tr = reid_model.torchreid()

    class Lists(tr.data.ImageDataset):
        def __init__(self, root="", **kwargs):
            super().__init__(list(lists.train), list(lists.query), list(lists.gallery), **kwargs)

    getattr(tr.data.datasets, "__image_datasets")["bench_lists"] = Lists
    with contextlib.redirect_stdout(io.StringIO()):
        manager = tr.data.ImageDataManager(root="", sources="bench_lists", height=args.height, width=args.width,
                                           batch_size_train=args.batch_size, workers=args.workers,
                                           transforms=["random_flip"], train_sampler="RandomSampler")
    while True:
        for batch in manager.train_loader:
            yield batch["img"], batch["pid"]


def tensor_loader(data: torch.Tensor, pids: torch.Tensor, batch_size: int, channels_last: bool):
    step = 0
    while True:
        rows = torch.randint(len(data), (batch_size,))
        yield fastdata.batch(data, rows, fastdata.flips(0, step, batch_size), channels_last), pids[rows]
        step += 1


def time_setting(loader, num_classes: int, channels_last: bool, bf16: bool, args) -> float:
    torch.manual_seed(0)
    model = reid_model.build("osnet_x0_25", num_classes)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for i, (x, pids) in enumerate(loader):
        if i == args.warmup:
            start = time.perf_counter()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _step(model, opt, x, pids, bf16)
        if i == args.warmup + args.steps - 1:
            return (time.perf_counter() - start) / args.steps
    raise RuntimeError("loader ended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(SAMPLE))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="torchreid loader's worker processes (as before).")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lists = split_lists(args.data, None)
    decoded = fastdata.decode([item[0] for item in lists.train], args.height, args.width)
    pids = torch.tensor([lists.train[i][1] for i in decoded.kept])
    k = len(lists.classes)
    bf16_pays = fast_bf16(torch.device("cpu"))
    common = {"bench": "reid_step", "cpu": device.cpu_model(), "threads": args.threads, "batch_size": args.batch_size,
              "size": f"{args.height}x{args.width}", "model": "osnet_x0_25", "data": args.data,
              "train_images": len(decoded.kept), "fast_bf16": bf16_pays}
    settings = [("torchreid loader (before)", "loader", False, False),
                ("decoded once, float32 NCHW", "tensor", False, False),
                ("decoded once, channels_last", "tensor", True, False),
                ("decoded once, channels_last + bf16", "tensor", True, True)]
    for name, source, channels_last, bf16 in settings:
        loader = (torchreid_loader(lists, args) if source == "loader"
                  else tensor_loader(decoded.images, pids, args.batch_size, channels_last))
        seconds = time_setting(loader, k, channels_last, bf16, args)
        print(json.dumps({**common, "setting": name, "seconds_per_step": round(seconds, 4)}), flush=True)


if __name__ == "__main__":
    main()
