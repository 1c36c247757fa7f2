"""Run every benchmark and rewrite the table in benchmarks/RESULTS.md and README.md (device, torch, figures, ratios).

Usage: python benchmarks/run_all.py [--device auto]
Each benchmark prints JSON lines; this script collects them and replaces the part of each file between the
markers, keeping the text around it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

import torch

from reid_augment.device import describe, resolve_device

HERE = Path(__file__).resolve().parent
TABLE_FILES = (HERE / "RESULTS.md", HERE.parent / "README.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def run(script: str, *args: str) -> list[dict]:
    done = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def row(record: dict) -> str:
    b = record["bench"]
    if b == "build_pairs":
        return (f"| build-pairs in memory ({record['scale']}, {record['images']:,} images) | "
                f"{record['pairs_per_s']:,} pairs/s | {record['pairs']:,} pairs in {record['seconds']} s |")
    if b == "build_pairs_cli":
        return (f"| build-pairs whole stage ({record['images']:,} images, image check included) | "
                f"{record['images_per_s']:,} images/s | {record['pairs']:,} pairs in {record['seconds']} s; "
                f"{record['input']} |")
    if b == "estimate_poses":
        if "skipped" in record:
            return f"| estimate-poses ({record['backend']}) | skipped | {record['skipped']} |"
        return f"| estimate-poses ({record['backend']}, {record['device']}) | {record['images_per_s']} images/s | {record['images']} images |"
    if b == "train":
        return (f"| train {record['stage']} stage ({record['recipe']}, batch {record['batch_size']}, {record['device']}) | "
                f"{record['images_per_s']} images/s | data wait {record['data_wait_share']:.1%} of step time |")
    if b == "generate":
        scored = "PCKh scoring on (the default)" if record.get("scored") else "--no-score"
        return (f"| generate end to end ({record['recipe']}, batch {record['batch_size']}, {scored}, {record['device']}) | "
                f"{record['end_to_end_images_per_s']} images/s | bare forward {record['bare_forward_images_per_s']} "
                f"images/s; ratio {record['ratio']:.0%} |")
    if b == "generate_memory":
        peaks = ", ".join(f"{record['images'][n]} images: {mib} MiB" for n, mib in record["peak_rss_mib"].items())
        return f"| generate peak memory ({record['recipe']}, {record['device']}) | {peaks} | whole process, fresh each |"
    if b == "body_masks":
        return (f"| body masks batched on the device ({record['device']}, {record['poses']} real poses) | "
                f"{record['batched_masks_per_s']:,} masks/s (Def-GAN-exact: {record['exact_masks_per_s']:,}) | "
                f"IoU with the exact mask: pooled {record['iou_pooled']}, mean {record['iou_mean']}, "
                f"min {record['iou_min']} |")
    if b == "metrics_ssim":
        what = "SSIM, mask-SSIM and PCKh" if record.get("pckh") else "SSIM and mask-SSIM"
        return (f"| evaluate {what}, model and copy baseline ({record['device']}) | {record['pairs_per_s']} pairs/s | "
                f"{record['pairs']} pairs |")
    if b == "precision":
        steps = record["seconds_per_step"]
        base = steps["float32 NCHW"]
        cells = ", ".join(f"{k} {v:.2f} s ({base / v:.2f}x)" for k, v in steps.items())
        return (f"| train rec step by precision and layout ({record['recipe']}, batch {record['batch_size']}, "
                f"synthetic) | {cells} | device.fast_bf16 picks {'bf16' if record['fast_bf16'] else 'float32'} |")
    if b == "scoring":
        if "skipped" in record:
            return f"| generate's PCKh scoring | skipped | {record['skipped']} |"
        return (f"| generate's PCKh scoring, {record['processes']} processes (MediaPipe, JPEG bytes) | "
                f"{record['images_per_s']} images/s | first pass (start-up) {record['first_pass_s']} s; "
                f"{record['images']} images |")
    return f"| {b} | {record} | |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    dev = ["--device", args.device]
    cuda = torch.cuda.is_available() and args.device != "cpu"
    # The paper-size model runs at about one image per second on a small CPU: keep the CPU runs short.
    market_train = ["--batch-size", "16", "--steps", "20"] if cuda else ["--batch-size", "4", "--steps", "2"]
    market_generate = ["--batch-size", "64", "--per-id", "32"] if cuda else ["--batch-size", "16", "--per-id", "4"]
    records = (run("bench_pairs.py") + run("bench_estimate.py", *dev)
               + run("bench_train.py", "--recipe", "tiny", "--batch-size", "8", "--steps", "20", *dev)
               + run("bench_train.py", "--recipe", "market1501", *market_train, *dev)
               + run("bench_precision.py", "--recipes", "small", "--rounds", "3")
               + run("bench_generate.py", *market_generate, *dev)
               + run("bench_generate.py", *market_generate, "--score", *dev)
               + run("bench_generate.py", "--memory") + run("bench_scoring.py", "--processes", "1,2")
               + run("bench_metrics.py") + run("bench_masks.py", *dev))
    device = describe(resolve_device(args.device))
    table = "\n".join([BEGIN, f"Run {date.today()} on {device}, torch {torch.__version__}, Python "
                       f"{platform.python_version()}.", "", "| benchmark | figure | detail |", "|---|---|---|",
                       *map(row, records), END])
    for path in TABLE_FILES:
        head, _, rest = path.read_text().partition(BEGIN)
        _, _, tail = rest.partition(END)
        path.write_text(head + table + tail)
    print(table)


if __name__ == "__main__":
    main()
