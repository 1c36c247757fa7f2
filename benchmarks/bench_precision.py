"""Training step time on this CPU in float32 and bf16 autocast, NCHW and channels_last, for `small` and `market1501`.

What `train` should run on a CPU: each setting is timed on the reconstruction stage's step (G_rec forward, L1,
backward, Adam) at the recipe's own batch (market1501: --market-batch, its step is slow on a CPU), interleaved
round by round so that load from anything else on the machine hits every setting alike; the median per setting.
Also prints what `device.fast_bf16` decides here. Synthetic inputs (random images and heatmaps): the cost of a step
does not depend on the pixels.

Prints a markdown table, and one JSON line per recipe for `run_all.py`.

Usage:
  python benchmarks/bench_precision.py                  # prints a markdown table
  python benchmarks/bench_precision.py --rounds 5 --recipes small
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from reid_augment.config import load_recipe
from reid_augment.device import describe, fast_bf16
from reid_augment.networks import VDG, coarse_image

SETTINGS = (("float32", "NCHW"), ("float32", "channels_last"), ("bf16", "NCHW"), ("bf16", "channels_last"))


def step_timer(recipe_name: str, batch: int):
    """A function (bf16, channels_last) -> seconds of one reconstruction step."""
    cfg = load_recipe(recipe_name).model
    torch.manual_seed(0)
    model = VDG(cfg)
    opt = torch.optim.Adam(model.rec.parameters(), 1e-5)
    h, w = cfg.image_size
    img, maps, tgt = torch.randn(batch, 3, h, w), torch.rand(batch, cfg.num_joints, h, w), torch.randn(batch, 3, h, w)

    def run(bf16: bool, channels_last: bool) -> float:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model.to(memory_format=fmt)
        a, m, t = (x.contiguous(memory_format=fmt) for x in (img, maps, tgt))
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = (coarse_image(model.rec, a, m, m).float() - t).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["small", "market1501"])
    parser.add_argument("--market-batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    print(f"{describe(cpu)}, torch {torch.__version__}; fast_bf16(cpu) = {fast_bf16(cpu)}\n")
    print("| recipe (batch) | " + " | ".join(f"{p} {f}" for p, f in SETTINGS) + " |")
    print("|---|" + "---|" * len(SETTINGS))
    for name in args.recipes:
        batch = load_recipe(name).train.batch_size if name != "market1501" else args.market_batch
        run = step_timer(name, batch)
        for p, f in SETTINGS:  # Warm-up: oneDNN builds its kernels on first use.
            run(p == "bf16", f == "channels_last")
        times: dict[tuple[str, str], list[float]] = {s: [] for s in SETTINGS}
        for _ in range(args.rounds):
            for p, f in SETTINGS:
                times[(p, f)].append(run(p == "bf16", f == "channels_last"))
        base = statistics.median(times[SETTINGS[0]])
        cells = [f"{statistics.median(times[s]):.2f} s ({base / statistics.median(times[s]):.2f}x)" for s in SETTINGS]
        print(f"| {name} ({batch}) | " + " | ".join(cells) + " |")
        print(json.dumps({"bench": "precision", "device": describe(cpu), "recipe": name, "batch_size": batch,
                          "fast_bf16": fast_bf16(cpu), "seconds_per_step": {f"{p} {f}": round(
                              statistics.median(times[(p, f)]), 3) for p, f in SETTINGS}}))


if __name__ == "__main__":
    main()
