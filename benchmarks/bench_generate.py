"""End-to-end `generate` images/s against the bare generator forward pass, same model, batch and device.

Usage: python benchmarks/bench_generate.py [--recipe market1501] [--batch-size 32] [--per-id 8] [--device auto]
Prints one JSON line. The goal: end-to-end >= 80% of the bare forward rate. With --memory it instead prints the
peak memory of whole `generate` processes (tiny model) at growing N, which should stay flat.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from reid_augment.checkpoints import save_checkpoint
from reid_augment.config import GenerateConfig, load_recipe
from reid_augment.generate import generate
from reid_augment.networks import VDG
from reid_augment.device import describe, resolve_device

SAMPLE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample" / "cuhk03"


def bare_forward_rate(model: VDG, size: tuple[int, int], batch: int, dev: torch.device, batches: int) -> float:
    src = torch.rand(batch, 3, *size, device=dev) * 2 - 1
    maps = torch.rand(batch, 18, *size, device=dev)
    use_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
        model(src, maps, maps)  # Warm-up.
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            model(src, maps, maps)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return batch * batches / (time.perf_counter() - start)


_PEAK = """
import resource, sys, torch
from reid_augment.checkpoints import save_checkpoint
from reid_augment.config import GenerateConfig, load_recipe
from reid_augment.generate import generate
from reid_augment.networks import VDG
cfg = load_recipe("tiny").model
model = VDG(cfg)
save_checkpoint(sys.argv[2] + "/m.pt", model_config=cfg, step=0, rec=model.rec.state_dict(), ref=model.ref.state_dict())
generate(sys.argv[1], sys.argv[2] + "/m.pt", sys.argv[1] + "/annotations.csv", sys.argv[2] + "/out",
         GenerateConfig(per_id=int(sys.argv[3]), batch_size=32, num_workers=0, score=False), device="cpu", progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory(per_ids: list[int]) -> None:
    """Peak RSS (MiB) of a fresh process generating N images per identity, for each N."""
    peaks = {}
    for n in per_ids:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", _PEAK, str(SAMPLE), tmp, str(n)], capture_output=True,
                                 text=True, check=True)
            peaks[n] = round(int(out.stdout.split()[-1]) / 1024, 1)
    print(json.dumps({"bench": "generate_memory", "device": "cpu", "recipe": "tiny", "images": {n: 12 * n for n in per_ids},
                      "peak_rss_mib": peaks}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="market1501")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--per-id", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory", action="store_true", help="Peak memory at growing N instead of speed.")
    parser.add_argument("--score", action="store_true", help="Score every image by PCKh, as generate does by default "
                                                              "(needs the offline pose backend).")
    args = parser.parse_args()
    if args.memory:
        peak_memory([4, 32, 128])
        return
    dev = resolve_device(args.device)
    cfg = load_recipe(args.recipe).model
    torch.manual_seed(0)
    model = VDG(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.pt"
        save_checkpoint(ckpt, model_config=cfg, step=0, rec=model.rec.state_dict(), ref=model.ref.state_dict())
        images = 12 * args.per_id
        bare = bare_forward_rate(model.to(dev), cfg.image_size, args.batch_size, dev,
                                 batches=max(1, images // args.batch_size))
        # A first, short run warms the caches; the timed run starts from an empty folder.
        generate(SAMPLE, ckpt, SAMPLE / "annotations.csv", Path(tmp) / "warm",
                 GenerateConfig(per_id=1, batch_size=args.batch_size, num_workers=args.workers, score=False), device=str(dev),
                 progress=False)
        start = time.perf_counter()
        result = generate(SAMPLE, ckpt, SAMPLE / "annotations.csv", Path(tmp) / "out",
                          GenerateConfig(per_id=args.per_id, batch_size=args.batch_size, num_workers=args.workers,
                                         score=args.score),
                          device=str(dev), progress=False)
        end_to_end = result.generated / (time.perf_counter() - start)
    print(json.dumps({"bench": "generate", "device": describe(dev), "torch": torch.__version__, "recipe": args.recipe,
                      "batch_size": args.batch_size, "images": result.generated,
                      "scored": result.scored_with is not None,
                      "end_to_end_images_per_s": round(end_to_end, 2), "bare_forward_images_per_s": round(bare, 2),
                      "ratio": round(end_to_end / bare, 3)}))


if __name__ == "__main__":
    main()
