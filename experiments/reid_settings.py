"""Search for a CPU re-ID setting that is above the floor: the baseline arm alone, one setting per call.

A re-ID comparison at the floor (mAP 3.7% after 8 CPU epochs) cannot show what generated images do. Each call
trains `reid-benchmark`'s baseline arm (the same code: torchreid model, sampler, schedule, evaluation under the
data set's protocol) with one setting, from scratch on the data set's training split, and appends one row to
OUT/settings.md: the setting, its steps, training minutes, and mAP / Rank-1 at every evaluation. Settings are
`ReidBenchmarkConfig` fields given as --set key=value.

Usage (2 CPU threads, cuhk03-market: 6,264 training crops of 643 people; 200 query, 775 gallery):
  python experiments/reid_settings.py --data ../shared/data/cuhk03-market --out rs --name osnet-lr3e-3 \\
      --set model=osnet_x0_25 --set lr=3e-3 --set schedule=cosine --set warmup_steps=200 --set steps=2600 \\
      --set height=128 --set width=64 --set eval_every=650
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from reid_augment.config import from_dict, parse_value
from reid_augment.device import resolve_device
from reid_augment.errors import InputError
from reid_augment.reid_benchmark import ReidBenchmarkConfig, decode_lists, run_arm, split_lists


def parse_sets(pairs: list[str], **defaults) -> ReidBenchmarkConfig:
    """The config from key=value pairs, each typed and checked as the recipe's `--set` values are."""
    data = dict(defaults)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"--set {pair}: expected key=value, e.g. lr=3e-3")
        data[key] = parse_value(value, f"--set {pair}")
    return from_dict(ReidBenchmarkConfig, data, "--set")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        cfg = parse_sets(args.set, device="cpu")
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    dev = resolve_device(cfg.device)
    lists = split_lists(args.data, None, cfg.layout)
    base_per_epoch = len(lists.train) // cfg.batch_size
    tick = time.perf_counter()
    data = decode_lists(lists, cfg.height, cfg.width)
    record = run_arm("baseline", data, cfg, args.seed, args.out / args.name, dev, base_per_epoch, lists.classes)
    minutes = (time.perf_counter() - tick) / 60
    curve = ", ".join(f"{h['step']}: {h['mAP'] * 100:.1f}/{h['rank1'] * 100:.1f}" for h in record["history"])
    row = (f"| {args.name} | {' '.join(args.set)} | {record['steps']} ({record['epochs']:g} ep) | "
           f"{record['train_seconds'] / 60:.1f} | {record['mAP'] * 100:.1f}% | {record['rank1'] * 100:.1f}% | {curve} |")
    table = args.out / "settings.md"
    if not table.is_file():
        table.write_text("| name | settings | steps | train min | mAP | Rank-1 | step: mAP/Rank-1 |\n"
                         "|---|---|---|---|---|---|---|\n")
    with table.open("a") as f:
        f.write(row + "\n")
    print(row)
    print(json.dumps({"wall_minutes": round(minutes, 1), "threads": args.threads, "seed": args.seed}))


if __name__ == "__main__":
    main()
