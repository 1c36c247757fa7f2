"""Train a generator on a Market-layout data set, then measure it against copying the source on held-out people.

The one command behind the bundled generator and its model card: build-pairs (training identities, and test
pairs from the held-out identities' own pose file), train from scratch for the recipe's steps, export
`<name>.safetensors` (bf16), evaluate on N test pairs (SSIM, mask-SSIM, PCKh, edge energy and, with
--reid-model, identity retention, each beside copying the source and the real targets), then write the file
again with the model card (command, CPU or GPU, precision, steps, minutes, data, scores) in its metadata. Prints
one JSON line and writes quality_run.json to --out. Rerunning into the same --out resumes training, or skips it
when it is done.

The held-out people are split in two by person id: design choices (A/Bs, stage, sigma) are scored on the first
half (`--split validation`, the default), the model card on the second (`--split report`), which no design
choice has looked at.

The schedule is the recipe's steps, or wall-clock minutes per stage (--rec-minutes and --ref-minutes: each stage
trains until its minutes are spent, across reruns), which is how an equal-time A/B of designs runs: two arms side
by side with --threads 1 each, then `experiments/design_ab.py` puts them in one table. --init-from starts both
generators from a trained one (the recipe may grow its design: `networks.warm_start`).

Usage:
  python experiments/quality_run.py --data ../shared/data/cuhk03-market --recipe small --set train.ref_steps=0 \
      --output-stage coarse --split report --out quality   # the bundled file's command
  cp quality/cuhk03-small.safetensors reid_augment/generators/   # ship it: --checkpoint cuhk03-small
  python experiments/quality_run.py --data data/cuhk03-market --device cuda --set train.rec_steps=20000 ...
  python experiments/quality_run.py --out ab/pose-decoder --threads 1 --rec-minutes 30 --ref-minutes 30 \
      --init-from cuhk03-small --set model.pose_to_decoder=true
  python experiments/quality_run.py --out ab/ref-r1 --rec-minutes 0 --ref-minutes 10 \
      --init-from A/run/checkpoints/generator.safetensors --set loss.r1_gamma=1   # refinement designs, one G_rec
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
from reid_augment.checkpoints import load_checkpoint
from reid_augment.config import PairConfig, load_recipe
from reid_augment.evaluate import evaluate
from reid_augment.pairs import run_build_pairs
from reid_augment.train import train
from reid_augment.weights import export_generator, read_metadata, resolve_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cuhk03-market"))
    parser.add_argument("--recipe", default="small")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--eval-pairs", type=int, default=500, help="Test pairs scored (sampled with seed 0).")
    parser.add_argument("--split", choices=SPLITS, default="validation",
                        help="Which half of the held-out people to score: validation (the first half by person "
                             "id, for design choices) or report (the second, for the model card).")
    parser.add_argument("--reid-model", help="A re-ID checkpoint trained on the data set's real training images "
                                             "(e.g. a reid-benchmark baseline arm): adds identity retention.")
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
                             "coarse image (experiments/stage_ablation.py measures which serves).")
    parser.add_argument("--precision", choices=["auto", "float32", "bf16"], default="auto",
                        help="Training's arithmetic: the recipe's (bf16 autocast where device.fast_bf16 measures it "
                             "faster), float32 (train.amp=float32), or bf16 forced (train.amp=bf16), to measure what "
                             "bf16 does to the losses and scores on a CPU whose probe picks float32.")
    args = parser.parse_args()
    if args.precision != "auto":  # The probe decides per process; a measurement may overrule it.
        args.overrides.append(f"train.amp={args.precision}")
    if args.rec_minutes == 0 and not (args.init_from and args.ref_minutes):
        parser.error("--rec-minutes 0 trains the refinement stage alone: it needs --init-from (whose G_rec it "
                     "refines) and --ref-minutes")
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
    half, persons = split_pairs(pd.read_csv(work / "pairs-test.csv", dtype={"pid": str}), args.split)
    eval_pairs = work / f"pairs-{args.split}.csv"
    half.sample(min(args.eval_pairs, len(half)), random_state=0).to_csv(eval_pairs, index=False)
    report = evaluate(args.data, eval_pairs, args.data / "annotations-test.csv", args.out / f"report-{args.split}",
                      checkpoint=shared, device=str(dev), reid_model=args.reid_model)
    m = report.metrics
    keys = ("ssim", "mask_ssim", "pckh", "edge_energy")
    result = {"data": str(args.data), "recipe": recipe.name, "device": device.describe(dev),
              "steps": [recipe.train.rec_steps, recipe.train.ref_steps], "batch_size": recipe.train.batch_size,
              "output_stage": args.output_stage, "precision": load_checkpoint(checkpoint).get("precision"),
              "train_minutes": round(train_seconds / 60, 1), "checkpoint": str(checkpoint), "generator": str(shared),
              "generator_mib": round(shared.stat().st_size / 2**20, 2), "split": args.split, "persons": persons,
              "eval_pairs": m["num_pairs"], "report": str(args.out / f"report-{args.split}"),
              "model": {k: m.get(k) for k in keys},
              "copy_source": {k: m["baseline"].get(k) for k in keys},
              "real_target": {"pckh": m["real_target"]["pckh"]}}
    if m.get("identity"):
        result["model"]["identity_retention"] = m["identity"]["identity_retention"]
        result["real_target"]["identity_retention"] = m["identity"]["real_target_retention"]
    if args.init_from:  # The donor's training counts: the card gives the total and where it came from.
        donor_path = resolve_generator(args.init_from)
        donor = read_metadata(donor_path) if donor_path.suffix == ".safetensors" else {}  # A checkpoint has no card.
        result["init_from"] = {"generator": args.init_from, "train_minutes": float(donor.get("train_minutes", 0)),
                               "steps": donor.get("steps"), "command": donor.get("command")}
        result["train_minutes_total"] = round(result["train_minutes"] + result["init_from"]["train_minutes"], 1)
    card = {"command": shlex.join(["python", *sys.argv]), "device": result["device"],
            "precision": str(result["precision"]),
            "train_minutes": str(result.get("train_minutes_total", result["train_minutes"])),
            "batch_size": str(recipe.train.batch_size), "steps": f"{recipe.train.rec_steps}+{recipe.train.ref_steps}",
            "output_stage": args.output_stage,
            **({"init_from": json.dumps(result["init_from"])} if args.init_from else {}),
            "train_data": f"{args.data.name}: {args.data / 'bounding_box_train'} (annotations-train.csv)",
            "eval": json.dumps({"pairs": m["num_pairs"], "split": args.split, "persons": persons,
                                "identities": "held out (annotations-test.csv)",
                                "model": result["model"], "copy_source": result["copy_source"],
                                "real_target": result["real_target"]})}
    export_generator(run, shared, bf16=True, extra=card, refine=refine)
    (args.out / "quality_run.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


SPLITS = ("validation", "report")


def split_pairs(pairs: pd.DataFrame, split: str) -> tuple[pd.DataFrame, str]:
    """The test pairs of one half of the held-out people: sorted by person id, the first half is `validation`, the
    rest `report`. Returns the pairs and the half's persons as 'first-last'."""
    persons = sorted(pairs["pid"].unique())
    half = persons[: len(persons) // 2] if split == "validation" else persons[len(persons) // 2:]
    return pairs[pairs["pid"].isin(half)].reset_index(drop=True), f"{half[0]}-{half[-1]}"


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
        if args.rec_minutes > 0:
            spend("rec", args.rec_minutes, [f"train.rec_steps={unbounded}", "train.ref_steps=0"], stage="rec",
                  init_from=args.init_from)
            budget["rec_steps"] = load_checkpoint(latest)["step"]
        else:  # --rec-minutes 0: the refinement stage alone, from step 0, on --init-from's G_rec.
            budget["rec_steps"] = 0
            run.mkdir(parents=True, exist_ok=True)
        budget_path.write_text(json.dumps(budget))
    rec = budget["rec_steps"]
    if args.ref_minutes:
        spend("ref", args.ref_minutes, [f"train.rec_steps={rec}", f"train.ref_steps={unbounded}"],
              init_from=args.init_from)
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
