"""What the refinement stage adds: a generator scored with and without G_ref's residual, on the same held-out pairs.

The coarse image (G_rec alone) and the refined one (coarse + G_ref, Eq. 4) of one trained generator, each scored
by `evaluate` (SSIM, mask-SSIM, pooled PCKh beside copying the source and the real-target ceiling) on the pairs of
a quality run (its work/pairs-validation.csv). Prints one JSON line per stage.

Usage:
  python experiments/stage_ablation.py --generator cuhk03-small --pairs quality/work/pairs-validation.csv --out ablation
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reid_augment.evaluate import evaluate
from reid_augment.weights import load_generator, write_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="cuhk03-small", help="Checkpoint, .safetensors or bundled name.")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cuhk03-market"))
    parser.add_argument("--pairs", type=Path, required=True, help="Test pairs (a quality run's pairs-validation.csv).")
    parser.add_argument("--out", type=Path, default=Path("stage-ablation"))
    args = parser.parse_args()
    model, fields = load_generator(args.generator)
    for stage, refine in (("coarse", False), ("refined", True)):
        model.refine = refine
        path = write_generator(model, args.out / f"{stage}.safetensors", int(fields.get("step", 0)))
        m = evaluate(args.data, args.pairs, args.data / "annotations-test.csv", args.out / stage, checkpoint=path,
                     device="cpu", progress=False).metrics
        print(json.dumps({"stage": stage, "generator": str(args.generator), "pairs": m["num_pairs"],
                          **{k: round(m[k], 3) for k in ("ssim", "mask_ssim", "pckh")},
                          "copy_pckh": round(m["baseline"]["pckh"], 3),
                          "real_target_pckh": round(m["real_target"]["pckh"], 3)}))


if __name__ == "__main__":
    main()
