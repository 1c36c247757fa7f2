"""Train a generator on a Market-layout data set, then measure it against copying the source on held-out people.

The prepared run behind the bundled generator and its model card: build-pairs (training identities, and test
pairs from the held-out identities' own pose file), train, export `<name>.safetensors` (bf16), evaluate on N test
pairs (SSIM, mask-SSIM, PCKh, each beside the copy-the-source baseline, and the PCKh of the real targets), then write the file again with the
model card (command, recipe, steps, time, data, scores) in its metadata. Prints one JSON line and writes
quality_run.json to --out. Rerunning into the same --out resumes training, or skips it when it is done.

The schedule is the recipe's steps, or wall-clock minutes per stage (--rec-minutes and --ref-minutes: each stage
trains until its minutes are spent, across reruns), which is how an equal-time A/B of designs runs: two arms side
by side with --threads 1 each, then `benchmarks/design_ab.py` puts them in one table. --init-from starts both
generators from a trained one (the recipe may grow its design: `networks.warm_start`).

Usage:
  python benchmarks/quality_run.py --data ../shared/data/cuhk03-market --recipe small --out quality   # defaults
  cp quality/cuhk03-small.safetensors reid_augment/generators/   # ship it: --checkpoint cuhk03-small
  python benchmarks/quality_run.py --data data/cuhk03-market --device cuda --set train.rec_steps=20000 ...
  python benchmarks/quality_run.py --out ab/pose-decoder --threads 1 --rec-minutes 30 --ref-minutes 30 \
      --init-from cuhk03-small --set model.pose_to_decoder=true
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from reid_augment import device
from reid_augment.config import PairConfig, load_recipe
from reid_augment.evaluate import evaluate
from reid_augment.pairs import run_build_pairs
from reid_augment.train import train
from reid_augment.weights import export_generator, load_checkpoint, read_metadata, resolve_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cuhk03-market"))
    parser.add_argument("--recipe", default="small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--eval-pairs", type=int, default=500, help="Test pairs scored (sampled with seed 0).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("quality"))
    parser.add_argument("--name", help="Name of the generator file (default: <data>-<recipe>, cuhk03 for "
                                       "cuhk03-market).")
    parser.add_argument("--init-from", help="Start from this trained generator (path or bundled name).")
    parser.add_argument("--rec-minutes", type=float, help="Train the reconstruction stage for this many minutes "
                                                          "(instead of the recipe's rec_steps).")
    parser.add_argument("--ref-minutes", type=float, help="Then the refinement stage for this many minutes.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    parser.add_argument("--output-stage", choices=["refined", "coarse"], default="refined",
                        help="What the exported generator renders: G_ref's refined image (the paper's), or G_rec's "
                             "coarse image (benchmarks/stage_ablation.py measures which serves).")
    parser.add_argument("--precision", choices=["auto", "float32", "bf16"], default="auto",
                        help="Training's arithmetic: the recipe's (bf16 autocast where device.fast_bf16 measures it "
                             "faster), float32 (train.amp=float32), or bf16 forced (train.amp=bf16), to measure what "
                             "bf16 does to the losses and scores on a CPU whose probe picks float32.")
    args = parser.parse_args()
    if args.precision != "auto":  # The probe decides per process; a measurement may overrule it.
        args.overrides.append(f"train.amp={args.precision}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = device.resolve_device(args.device)
    work = args.out / "work"
    run_build_pairs(args.data, work, PairConfig(), args.data / "annotations-train.csv",
                    args.data / "annotations-test.csv")
    run = args.out / "run"
    if args.rec_minutes is None:
        recipe = load_recipe(args.recipe, args.overrides)
        checkpoint = train(args.data, recipe, run, work / "pairs-train.csv", work / "poses.csv", device=str(dev),
                           init_from=args.init_from)
    else:
        recipe, checkpoint = _train_for_minutes(args, work, run, str(dev))
    train_seconds = _train_seconds(run, recipe.train.batch_size)
    name = args.name or f"{args.data.name.replace('cuhk03-market', 'cuhk03')}-{args.recipe}"
    refine = args.output_stage == "refined"
    shared = export_generator(run, args.out / f"{name}.safetensors", bf16=True, refine=refine)
    pairs = pd.read_csv(work / "pairs-test.csv")
    pairs.sample(min(args.eval_pairs, len(pairs)), random_state=0).to_csv(work / "pairs-eval.csv", index=False)
    report = evaluate(args.data, work / "pairs-eval.csv", args.data / "annotations-test.csv", args.out / "report",
                      checkpoint=shared, device=str(dev))
    m = report.metrics
    result = {"data": str(args.data), "recipe": recipe.name, "device": torch.cuda.get_device_name(dev)
              if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
              "steps": [recipe.train.rec_steps, recipe.train.ref_steps], "batch_size": recipe.train.batch_size,
              "output_stage": args.output_stage, "bf16": load_checkpoint(checkpoint).get("precision") == "bf16",
              "train_minutes": round(train_seconds / 60, 1), "checkpoint": str(checkpoint), "generator": str(shared),
              "generator_mib": round(shared.stat().st_size / 2**20, 2), "eval_pairs": m["num_pairs"],
              "model": {k: m[k] for k in ("ssim", "mask_ssim", "pckh")},
              "copy_source": {k: m["baseline"][k] for k in ("ssim", "mask_ssim", "pckh")},
              "real_target": {"pckh": m["real_target"]["pckh"]}}
    if args.init_from:  # The donor's training counts: the card gives the total and where it came from.
        donor = read_metadata(resolve_generator(args.init_from))
        result["init_from"] = {"generator": args.init_from, "train_minutes": float(donor.get("train_minutes", 0)),
                               "steps": donor.get("steps"), "command": donor.get("command")}
        result["train_minutes_total"] = round(result["train_minutes"] + result["init_from"]["train_minutes"], 1)
    card = {"command": shlex.join(["python", *sys.argv]), "device": result["device"],
            "train_minutes": str(result.get("train_minutes_total", result["train_minutes"])),
            "batch_size": str(recipe.train.batch_size), "steps": f"{recipe.train.rec_steps}+{recipe.train.ref_steps}",
            "output_stage": args.output_stage,
            **({"init_from": json.dumps(result["init_from"])} if args.init_from else {}),
            "train_data": f"{args.data.name}: {args.data / 'bounding_box_train'} (annotations-train.csv)",
            "eval": json.dumps({"pairs": m["num_pairs"], "identities": "held out (annotations-test.csv)",
                                "model": result["model"], "copy_source": result["copy_source"],
                                "real_target": result["real_target"]})}
    export_generator(run, shared, bf16=True, extra=card, refine=refine)
    (args.out / "quality_run.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


def _train_for_minutes(args: argparse.Namespace, work: Path, run: Path, dev: str):
    """Each stage for its wall-clock minutes, resumable: budget.json keeps the seconds spent and where rec ended.

    Returns the recipe with the steps each stage reached, and the last checkpoint."""
    budget_path = run / "budget.json"
    budget = json.loads(budget_path.read_text()) if budget_path.is_file() else {"rec_seconds": 0.0, "ref_seconds": 0.0}
    unbounded = 10**7  # Steps that the time limit cuts short.

    def spend(part: str, minutes: float, steps: list[str], **kwargs) -> None:
        left = minutes * 60 - budget[f"{part}_seconds"]
        if left <= 0:
            return
        recipe = load_recipe(args.recipe, [*args.overrides, *steps])
        start = time.perf_counter()
        train(args.data, recipe, run, work / "pairs-train.csv", work / "poses.csv", device=dev, time_limit=left,
              progress=False, **kwargs)
        budget[f"{part}_seconds"] += time.perf_counter() - start
        run.mkdir(parents=True, exist_ok=True)
        budget_path.write_text(json.dumps(budget))

    latest = run / "checkpoints" / "latest.pt"
    if "rec_steps" not in budget:
        spend("rec", args.rec_minutes, [f"train.rec_steps={unbounded}", "train.ref_steps=0"], stage="rec",
              init_from=args.init_from)
        budget["rec_steps"] = load_checkpoint(latest)["step"]
        budget_path.write_text(json.dumps(budget))
    rec = budget["rec_steps"]
    if args.ref_minutes:
        spend("ref", args.ref_minutes, [f"train.rec_steps={rec}", f"train.ref_steps={unbounded}"])
    steps = load_checkpoint(latest)["step"]
    recipe = load_recipe(args.recipe, [*args.overrides, f"train.rec_steps={rec}", f"train.ref_steps={steps - rec}"])
    return recipe, latest


def _train_seconds(run: Path, batch_size: int) -> float:
    """Seconds the training loop ran, over all calls (resumed or skipped ones too), from its stats.jsonl."""
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines() if line]
    steps = [0] + [r["step"] for r in records]
    return sum((b - a) * batch_size / r["images_per_s"] for a, b, r in zip(steps, steps[1:], records))


if __name__ == "__main__":
    main()
