"""The whole pipeline on the bundled sample, on a CPU, in a few minutes: what `reid-augment demo` runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .config import GenerateConfig, PairConfig, load_recipe
from .workdir import WorkDir

SAMPLE = Path(__file__).resolve().parent / "sample" / "cuhk03"
HELD_OUT = SAMPLE.parent / "cuhk03-test"  # People the bundled generator never saw in training.
BUNDLED = "cuhk03-small"


def run_demo(out_dir: str | os.PathLike, say: Callable[[str], None] = print, train_steps: tuple[int, int] | None = None,
             progress: bool = True) -> dict[str, Path]:
    """Estimate poses, build pairs, train the tiny recipe; then, with the bundled generator, generate 2 images per
    identity of held-out people and evaluate it on their pairs beside copying the source.

    The short training run shows training; the images and scores come from `cuhk03-small`, which a few CPU minutes
    cannot match. Poses come from the offline MediaPipe backend when it is installed, else from the sample's
    annotation file. Returns the paths of the artefacts.
    """
    from .estimate import estimate_poses
    from .evaluate import evaluate
    from .generate import generate
    from .images import identities
    from .pairs import run_build_pairs, summarize
    from .train import train

    out = Path(out_dir)
    work = WorkDir(out / "work")
    poses = work.poses
    say(f"[1/5] Poses of the {len(list(SAMPLE.glob('*.jpg')))} bundled CUHK03 crops (research use only).")
    try:
        import mediapipe  # noqa: F401

        say(estimate_poses(SAMPLE, poses, "mediapipe", progress=progress).summary())
    except ImportError:
        say("mediapipe is not installed (`make pose` installs it): using the sample's annotation file instead.")
        poses = SAMPLE / "annotations.csv"
    say("[2/5] Pairs.")
    pair_set = run_build_pairs(SAMPLE, work.root, PairConfig(test_ids=2), poses)
    say(summarize(pair_set, work.root))
    recipe = load_recipe("tiny", [f"train.rec_steps={train_steps[0]}", f"train.ref_steps={train_steps[1]}"]
                         if train_steps else [])
    say(f"[3/5] Training the tiny recipe on the CPU ({recipe.train.rec_steps} + {recipe.train.ref_steps} steps).")
    trained = train(SAMPLE, recipe, device="cpu", progress=progress, workdir=work.root)  # Into runs/tiny.
    say(trained.summary())
    held_out = HELD_OUT / "annotations.csv"
    people = len(set(identities([p.name for p in HELD_OUT.glob("*.jpg")])[0]))
    say(f"[4/5] Generating 4 new images of each of {people} people the bundled generator `{BUNDLED}` never saw, in "
        f"4 of 8 canonical poses (the tiny run above is far from its quality).")
    result = generate(HELD_OUT, BUNDLED, held_out, out / "generated",
                      GenerateConfig(per_id=4, strategy="kmeans", num_workers=0), device="cpu", progress=progress)
    say(result.summary())
    say(f"[5/5] Evaluating `{BUNDLED}` on their pairs, beside copying the source.")
    held_out_work = WorkDir(work.root / "held-out")  # The held-out people's own pairs.
    run_build_pairs(HELD_OUT, held_out_work.root, PairConfig(num_test_pairs=40), held_out, held_out)
    report = evaluate(HELD_OUT, held_out_work.test_pairs, held_out, out / "report", checkpoint=BUNDLED,
                      device="cpu", progress=progress)
    say(report.summary())
    paths = {"contact_sheet": out / "generated" / "preview.png", "manifest": result.manifest,
             "checkpoint": trained.checkpoint, "metrics": report.metrics_path}
    say(f"Done. Contact sheet: {paths['contact_sheet']}. Manifest: {paths['manifest']}. "
        f"Metrics: {paths['metrics']}.")
    return paths
