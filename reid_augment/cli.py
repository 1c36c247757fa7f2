"""The `reid-augment` command line: one thin click wrapper per pipeline stage."""

from __future__ import annotations

import click

from . import __version__
from .errors import ReidAugmentError
from .layouts import open_data_set
from .workdir import DEFAULT_ROOT as DEFAULT_WORKDIR, WorkDir


EXIT_IO = 74  # sysexits' EX_IOERR: a path could not be read or written (missing, not a folder, full, read-only).


class _IOFailure(click.ClickException):
    exit_code = EXIT_IO


class _Group(click.Group):
    """Turns user mistakes (ReidAugmentError) into a one-line `Error: ...` and exit code 1, and an OSError on a
    path (missing, not a folder, no space, read-only) into `Error: PATH: cause` and exit code 74. An OSError that
    names no path and is not a full disk is a bug, and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        import errno

        try:
            return super().invoke(ctx)
        except ReidAugmentError as err:  # One line, whatever the message holds.
            raise click.ClickException(" ".join(str(err).split())) from None
        except OSError as err:
            if err.filename is None and err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            where = f"{err.filename}: " if err.filename is not None else ""
            raise _IOFailure(f"{where}{err.strerror or err}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reid-augment")
def cli() -> None:
    """Enlarge a person re-ID training set with pose-guided generation (VDG).

    \b
    Pipeline: estimate-poses -> build-pairs -> train -> generate -> evaluate.
    """


_layout_option = click.option(
    "--layout", type=click.Choice(["market1501", "msmt17", "flat", "by-person"]), default=None,
    help="The data set's layout (default: detected). market1501 also covers CUHK03-NP and DukeMTMC-reID.")


def _size(_ctx, _param, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
        if h > 0 and w > 0:
            return h, w
    except ValueError:
        pass
    raise click.BadParameter(f"{value!r}: expected HxW, e.g. 128x64")


def _device(_ctx, _param, value: str) -> str:
    """A device string torch knows (auto, cpu, cuda, cuda:N, ...), checked before any work starts."""
    if value != "auto":
        from .device import resolve_device

        try:
            resolve_device(value)
        except ReidAugmentError as err:
            raise click.BadParameter(str(err).removeprefix(f"--device {value!r}: ")) from None
    return value


def _joint_list(_ctx, _param, value: str) -> tuple[str, ...]:
    from .keypoints import joint_index

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    try:
        for name in names:
            joint_index(name)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    return names


@cli.command("estimate-poses")
@click.argument("images", type=click.Path(), metavar="IMAGES")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help=f"Pose CSV to write (default: {WorkDir(DEFAULT_WORKDIR).poses}).")
@click.option("--backend", type=click.Choice(["mmpose", "mediapipe"]), default="mmpose", show_default=True,
              help="mmpose (RTMPose-m, needs its checkpoint) or mediapipe (offline, bundled model).")
@click.option("--pose-config", metavar="CFG", help="mmpose config: a path, or one inside mmpose's configs.")
@click.option("--pose-checkpoint", metavar="PATH_OR_URL", help="mmpose checkpoint (default: the official RTMPose-m).")
@click.option("--device", default="auto", show_default=True, callback=_device)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--score-thr", type=click.FloatRange(0, 1), help="Joints below it are -1 (mmpose 0.3, mediapipe 0.5).")
@_layout_option
def estimate_poses_cmd(images, output, backend, pose_config, pose_checkpoint, device, batch_size, score_thr,
                       layout) -> None:
    """Estimate 18-joint poses of the images of IMAGES and write a Def-GAN annotation CSV.

    Reruns skip images already in the file. A sidecar FILE.scores.json keeps the per-joint scores.

    \b
    Examples:
      reid-augment estimate-poses Market-1501/bounding_box_train -o work/poses.csv
      reid-augment estimate-poses reid_augment/sample/cuhk03 --backend mediapipe -o work/poses.csv
    """
    from .estimate import MMPOSE_CHECKPOINT, estimate_poses

    result = estimate_poses(open_data_set(images, layout), output or WorkDir(DEFAULT_WORKDIR).poses, backend,
                            batch_size=batch_size, score_thr=score_thr, pose_config=pose_config,
                            pose_checkpoint=pose_checkpoint or MMPOSE_CHECKPOINT, device=device)
    for name, reason in result.skipped:
        click.echo(f"warning: {name}: {reason}; skipped", err=True)
    click.echo(result.summary())


@cli.command("build-pairs")
@click.argument("images", type=click.Path(), metavar="IMAGES")
@click.option("--poses", type=click.Path(), metavar="FILE", help="Pose CSV (Def-GAN format); estimated when absent.")
@click.option("-o", "--workdir", default=DEFAULT_WORKDIR, show_default=True, type=click.Path(file_okay=False),
              metavar="WORKDIR", help="Where poses.csv and the pair files go.")
@click.option("--test-poses", type=click.Path(), metavar="FILE", help="Pose CSV of a separate test split.")
@click.option("--test-ids", type=click.IntRange(min=0), default=0, show_default=True,
              help="Identities held out for test when --test-poses is not given.")
@click.option("--num-test-pairs", type=click.IntRange(min=0), default=12000, show_default=True)
@click.option("--min-joints", type=click.IntRange(0, 18), default=0, show_default=True,
              help="Keep images with at least this many joints.")
@click.option("--require-joints", default="Rsho,Lsho,Rhip,Lhip", show_default=True, callback=_joint_list,
              help="Comma-separated joints an image must have ('' for none).")
@click.option("--cross-camera", is_flag=True, help="Only pair images from different cameras.")
@click.option("--max-pairs-per-id", type=click.IntRange(min=0), default=0, show_default=True,
              help="Cap on training pairs per identity (0: no cap).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=4, show_default=True, help="Image-decoding threads.")
@click.option("--pose-backend", type=click.Choice(["mmpose", "mediapipe"]), default="mmpose", show_default=True,
              help="Backend used to estimate poses when --poses is not given.")
@_layout_option
def build_pairs_cmd(images, poses, workdir, test_poses, test_ids, num_test_pairs, min_joints, require_joints,
                    cross_camera, max_pairs_per_id, seed, jobs, pose_backend, layout) -> None:
    """Filter pose-less images of IMAGES and write same-identity pairs to WORKDIR.

    IMAGES is a Market-1501, CUHK03-NP, DukeMTMC-reID or MSMT17 root, a flat folder of such names, or
    <root>/<person_id>/<image>; its training split is paired.

    \b
    Examples:
      reid-augment build-pairs Market-1501/ --poses market-annotation-train.csv \\
          --test-poses market-annotation-test.csv -o work/
      reid-augment build-pairs my_ids/ --test-ids 20 --cross-camera -o work/
    """
    from .config import PairConfig
    from .pairs import run_build_pairs, summarize

    cfg = PairConfig(require_joints=require_joints, min_joints=min_joints, cross_camera=cross_camera,
                     max_pairs_per_id=max_pairs_per_id, test_ids=test_ids, num_test_pairs=num_test_pairs,
                     seed=seed)
    pair_set = run_build_pairs(images, workdir, cfg, poses, test_poses, n_jobs=jobs, pose_backend=pose_backend,
                               layout=layout)
    for warning in pair_set.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(summarize(pair_set, workdir))


@cli.command("train")
@click.argument("images", type=click.Path(), metavar="IMAGES")
@click.option("-w", "--workdir", default=DEFAULT_WORKDIR, show_default=True, type=click.Path(file_okay=False),
              metavar="WORKDIR", help="Work dir of build-pairs (pairs-train.csv, poses.csv).")
@click.option("--recipe", default="market1501", show_default=True, metavar="NAME_OR_YAML",
              help="A recipe name (market1501, deepfashion, tiny) or a YAML file.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a recipe value, e.g. --set train.batch_size=8 (repeatable).")
@click.option("-o", "--run-dir", type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="Run dir (default: WORKDIR/runs/<recipe name>).")
@click.option("--stage", type=click.Choice(["rec", "ref", "all"]), default="all", show_default=True)
@click.option("--pairs", type=click.Path(), metavar="FILE", help="Pairs CSV (default: WORKDIR/pairs-train.csv).")
@click.option("--poses", type=click.Path(), metavar="FILE", help="Pose CSV (default: WORKDIR/poses.csv).")
@click.option("--resume", is_flag=True, help="Insist on continuing from RUN_DIR/checkpoints/latest.pt.")
@click.option("--force", is_flag=True, help="Resume even if the recipe or world size differs from the checkpoint's.")
@click.option("--tensorboard", is_flag=True, help="Also log scalars and sample grids to RUN_DIR/tensorboard.")
@click.option("--time-limit", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Stop with a checkpoint after this many seconds of training (e.g. a scheduler's limit); "
                   "rerun to resume.")
@click.option("--device", default="auto", show_default=True, callback=_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--dry-run", is_flag=True, help="Print the resolved recipe and exit.")
@_layout_option
def train_cmd(images, workdir, recipe, overrides, run_dir, stage, pairs, poses, resume, force, tensorboard,
              time_limit, device, dry_run, layout) -> None:
    """Train VDG on the pairs of WORKDIR: reconstruction stage, then refinement stage.

    Rerunning into the same run dir continues where it stopped. On several GPUs, launch with
    torchrun: `torchrun --nproc_per_node 4 -m reid_augment.cli train ...`; the recipe's batch size is the
    global batch, split evenly across the processes.

    \b
    Examples:
      reid-augment train Market-1501/ -w work/ --recipe market1501
      reid-augment train reid_augment/sample/cuhk03 -w work/ --recipe tiny --device cpu
    """
    from .config import dump_recipe, load_recipe
    from .train import train

    resolved = load_recipe(recipe, overrides)
    if dry_run:
        click.echo(dump_recipe(resolved), nl=False)
        return
    trained = train(open_data_set(images, layout, "train"), resolved, run_dir, pairs, poses, stage=stage,
                    device=device, resume=resume, force=force, tensorboard=tensorboard, time_limit=time_limit,
                    workdir=workdir)
    if trained.summary():  # Under torchrun, rank 0's only.
        click.echo(trained.summary())


@cli.command("generate")
@click.argument("images", type=click.Path(), metavar="IMAGES")
@click.option("--per-id", type=click.IntRange(min=1), required=True, metavar="N", help="New images per identity.")
@click.option("-w", "--workdir", default=DEFAULT_WORKDIR, show_default=True, type=click.Path(file_okay=False),
              metavar="WORKDIR", help="Work dir with poses.csv (the pose bank) and runs/.")
@click.option("--checkpoint", type=click.Path(), metavar="CKPT",
              help="Checkpoint .pt, generator .safetensors, or a bundled generator's name (cuhk03-small) "
                   "(default: the newest WORKDIR/runs/*/checkpoints/latest.pt).")
@click.option("-o", "--out", type=click.Path(file_okay=False), metavar="OUT", help="Default: WORKDIR/generated.")
@click.option("--strategy", type=click.Choice(["random", "kmeans", "novel"]), default="random", show_default=True)
@click.option("--kmeans-k", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--shard", default="0/1", show_default=True, metavar="I/N|auto",
              help="Do the I-th of N shares of identities; auto: the share of this Slurm array task, srun task or "
                   "torchrun process.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Decoding workers.")
@click.option("--poses", type=click.Path(), metavar="FILE", help="Pose CSV (default: WORKDIR/poses.csv).")
@click.option("--out-size", callback=_size, metavar="HxW",
              help="Size of every generated image (default: the size of the source crop it augments).")
@click.option("--candidates", type=click.IntRange(min=1), default=1, show_default=True, metavar="M",
              help="Make N x M candidates per identity (other sources and target poses) and keep the N whose pose "
                   "is best (PCKh of the written file).")
@click.option("--min-pckh", type=click.FloatRange(0, 1), metavar="X",
              help="Keep only candidates with a PCKh of at least X: N per identity when enough pass, else a "
                   "shortfall (counted). Images whose target pose has no head box cannot be scored: kept, with an "
                   "empty pckh, and counted.")
@click.option("--no-score", is_flag=True, help="Do not score images by pose consistency (faster on a GPU).")
@click.option("--score-processes", type=click.IntRange(min=0), metavar="P",
              help="Processes that score images, each with its own MediaPipe (default: one per core, none for "
                   "runs under 256 candidates; 0: in the main process).")
@_layout_option
@click.option("--device", default="auto", show_default=True, callback=_device)
def generate_cmd(images, per_id, workdir, checkpoint, out, strategy, kmeans_k, seed, shard, batch_size, workers,
                 poses, out_size, candidates, min_pckh, no_score, score_processes, layout, device) -> None:
    """Generate N new images of every identity of IMAGES in new poses, with a manifest.

    \b
    Examples:
      reid-augment generate Market-1501/ --per-id 10 -w work/
      reid-augment generate Market-1501/ --per-id 10 -w work/ --shard 0/4 --device cuda:0
      reid-augment generate Market-1501/ --per-id 10 -w work/ --checkpoint cuhk03-small
    """
    from .config import GenerateConfig
    from .generate import generate
    from .shards import resolve_shard

    cfg = GenerateConfig(per_id=per_id, strategy=strategy, kmeans_k=kmeans_k, seed=seed, batch_size=batch_size,
                         num_workers=workers, out_size=out_size, layout=layout, candidates=candidates,
                         min_pckh=min_pckh, score=not no_score, score_processes=score_processes)
    share, how = resolve_shard(shard)
    if how:
        click.echo(how, err=True)
    result = generate(open_data_set(images, layout, "train"), checkpoint, poses, out, cfg, share, device,
                      workdir=workdir)
    click.echo(result.summary())


@cli.command("warp")
@click.argument("images", type=click.Path(), metavar="IMAGES")
@click.option("--per-id", type=click.IntRange(min=1), required=True, metavar="N", help="New images per identity.")
@click.option("--poses", required=True, type=click.Path(dir_okay=False), metavar="FILE", help="Pose CSV of IMAGES.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), metavar="OUT")
@click.option("--strategy", type=click.Choice(["random", "kmeans", "novel"]), default="random", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--shard", default="0/1", show_default=True, metavar="I/N", help="Do the I-th of N shares of identities.")
@_layout_option
def warp_cmd(images, per_id, poses, out, strategy, seed, shard, layout) -> None:
    """Generate N images of every identity of IMAGES by moving its body parts to new poses (per-part affine
    warps of the source crop, Def-GAN's part transforms; no model, no training), with generate's manifest."""
    from .config import GenerateConfig
    from .shards import parse_shard
    from .warpgen import warp_images

    cfg = GenerateConfig(per_id=per_id, strategy=strategy, seed=seed, layout=layout)
    click.echo(warp_images(images, poses, out, cfg, parse_shard(shard)).summary())


@cli.command("merge")
@click.argument("outs", nargs=-1, required=True, type=click.Path(file_okay=False), metavar="OUT...")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Merged manifest (default: the first OUT's manifest.csv).")
def merge_cmd(outs, output) -> None:
    """Join the manifests of sharded `generate` runs into one manifest.csv."""
    from .manifest import merge

    click.echo(merge(list(outs), output).summary())


@cli.command("export")
@click.argument("out", type=click.Path(), metavar="GENERATED")
@click.option("--root", "--market-root", "root", required=True, type=click.Path(), metavar="ROOT",
              help="The original data set root (Market-1501, CUHK03-NP, DukeMTMC-reID, MSMT17, flat or <pid>/<image>).")
@click.option("-o", "--output", "new_root", required=True, type=click.Path(file_okay=False), metavar="NEW_ROOT")
@click.option("--copy", is_flag=True, help="Copy files instead of symlinking them.")
@click.option("--out-size", callback=_size, metavar="HxW",
              help="Resize generated images to HxW (default: each to its source crop's size).")
@_layout_option
def export_cmd(out, root, new_root, copy, out_size, layout) -> None:
    """Make NEW_ROOT, in ROOT's own layout, whose training split also holds the generated images of GENERATED.

    Query and gallery stay as they are, so the data set's stock loader (torchreid, fast-reid) trains on the
    augmented set as is. For MSMT17 the images go into train/<pid>/ and their lines into list_train.txt.

    \b
    Examples:
      reid-augment export work/generated --root Market-1501-v15.09.15 -o reid-data/market1501/Market-1501-v15.09.15
      reid-augment export work/generated --root MSMT17_V1 -o reid-data/msmt17/MSMT17_V1
    """
    from .export import export

    click.echo(export(out, root, new_root, copy, out_size, layout).summary())


@cli.command("export-generator")
@click.argument("source", type=click.Path(), metavar="RUN_OR_CKPT")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="The .safetensors file to write.")
@click.option("--bf16", is_flag=True, help="Store the weights in bfloat16 (half the size; widened on load).")
def export_generator_cmd(source, output, bf16) -> None:
    """Write the generator of a run dir or checkpoint as a .safetensors file to share.

    The file holds both generators' weights, the model config and provenance, and no code: anyone can load
    it safely with `generate --checkpoint FILE`.

    \b
    Examples:
      reid-augment export-generator work/runs/market1501 -o market1501-vdg.safetensors
    """
    from .weights import export_generator

    click.echo(export_generator(source, output, bf16).summary())


@cli.command("convert-checkpoint")
@click.argument("old", type=click.Path(), metavar="OLD")
@click.argument("new", type=click.Path(dir_okay=False), metavar="NEW")
@click.option("--trust", is_flag=True, help="Confirm that you trust OLD: converting unpickles it, which can run code.")
def convert_checkpoint_cmd(old, new, trust) -> None:
    """Rewrite a format-1 checkpoint (reid-augment 0.1) as format 2, which loads without unpickling code."""
    from .checkpoints import convert_checkpoint

    click.echo(convert_checkpoint(old, new, trust).summary())


@cli.command("evaluate")
@click.argument("images", type=click.Path(), metavar="IMAGES")
@click.option("-w", "--workdir", default=DEFAULT_WORKDIR, show_default=True, type=click.Path(file_okay=False),
              metavar="WORKDIR")
@click.option("--checkpoint", type=click.Path(), metavar="CKPT",
              help="Generate the test pairs with this checkpoint (.pt), generator (.safetensors) or bundled "
                   "generator (cuhk03-small).")
@click.option("--generated", type=click.Path(), metavar="DIR",
              help="Score an existing folder instead: our manifest, or PATN-style <from>___<to> names.")
@click.option("--pairs", type=click.Path(), metavar="FILE", help="Test pairs (default: WORKDIR/pairs-test.csv).")
@click.option("--poses", type=click.Path(), metavar="FILE",
              help="Target poses (default: WORKDIR/poses-test.csv, else WORKDIR/poses.csv).")
@click.option("-o", "--report-dir", type=click.Path(file_okay=False), metavar="REPORT_DIR",
              help="Default: WORKDIR/report.")
@click.option("--inception-weights", type=click.Path(), metavar="PATH",
              help="torch-fidelity's Inception weights file; without it IS, mask-IS and FID are skipped.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--no-pckh", is_flag=True, help="Skip PCKh (pose estimation of every image runs on the CPU).")
@click.option("--reid-model", type=click.Path(dir_okay=False), metavar="CKPT",
              help="A re-ID model trained on IMAGES' real training images (e.g. a reid-benchmark baseline arm's "
                   "checkpoint.pt): adds identity retention, the generated images' mAP as queries against IMAGES' "
                   "gallery over their sources'.")
@click.option("--reid-arch", metavar="NAME", help="torchreid architecture of --reid-model, when it does not say.")
@_layout_option
@click.option("--device", default="auto", show_default=True, callback=_device)
def evaluate_cmd(images, workdir, checkpoint, generated, pairs, poses, report_dir, inception_weights, batch_size,
                 no_pckh, reid_model, reid_arch, layout, device) -> None:
    """Score generated test pairs with SSIM, mask-SSIM, IS, mask-IS (and FID, LPIPS) as the papers do.

    \b
    Examples:
      reid-augment evaluate Market-1501/ -w work/ --checkpoint work/runs/market1501/checkpoints/latest.pt
      reid-augment evaluate Market-1501/ -w work/ --generated other_method_outputs/
    """
    from .evaluate import evaluate

    report = evaluate(open_data_set(images, layout), pairs, poses, report_dir, checkpoint=checkpoint,
                      generated=generated, inception_weights=inception_weights, batch_size=batch_size,
                      device=device, pckh=not no_pckh, reid_model=reid_model, reid_arch=reid_arch, workdir=workdir)
    click.echo(report.summary())


def _seed_list(_ctx, _param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: comma-separated integers, e.g. 0,1,2") from None


@cli.command("reid-benchmark")
@click.argument("root", type=click.Path(), metavar="ROOT")
@click.option("--manifest", required=True, type=click.Path(), metavar="MANIFEST",
              help="The generate manifest (or its folder) whose images the augmented arm adds.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), metavar="OUT")
@click.option("--model", default="resnet50", show_default=True, help="Any torchreid model name.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Training length in baseline epochs (passes over ROOT's training images); both arms take that "
                   "many steps.")
@click.option("--steps", type=click.IntRange(min=1), help="Training length in optimizer steps per arm, instead.")
@click.option("--match-epochs", is_flag=True,
              help="The older comparison: each arm --epochs passes over its own training set (the augmented arm "
                   "then takes more steps).")
@click.option("--eval-every", type=click.IntRange(min=1), metavar="STEPS",
              help="Steps between evaluations and checkpoints (default: one baseline epoch).")
@click.option("--height", type=click.IntRange(min=16), default=256, show_default=True)
@click.option("--width", type=click.IntRange(min=16), default=128, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--schedule", type=click.Choice(["step", "cosine", "constant"]), default="step", show_default=True,
              help="Learning rate per step: step (x0.1 at 2/3 of the steps), cosine (to 0), constant.")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Linear learning-rate warm-up over the first steps.")
@click.option("--seeds", "--seed", "seeds", default="0", show_default=True, callback=_seed_list, metavar="S[,S...]",
              help="One run of each arm per seed, e.g. 0,1,2: the report gives mean ± std and the paired difference.")
@click.option("--gen-ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="R",
              help="Share of generated images in every batch (default: drawn like the originals).")
@click.option("--gen-labels", type=click.Choice(["onehot", "smooth", "uniform", "teacher"]), default="smooth",
              show_default=True, help="Targets of generated images: their source one-hot, smoothed by EPS, uniform "
                                      "(LSRO), or the teacher's soft labels (DG-Net; needs --teacher).")
@click.option("--gen-label-smooth", type=click.FloatRange(0, 1), default=0.1, show_default=True, metavar="EPS",
              help="EPS of --gen-labels smooth (generated images only); originals keep 0.1.")
@click.option("--gen-from", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True, metavar="SHARE",
              help="Ramp-in: no generated image before this share of the steps.")
@click.option("--teacher", metavar="baseline|CKPT",
              help="Re-ID model trained on the real images, for --gen-labels teacher and --id-gate: 'baseline' (the "
                   "seed's baseline arm) or a checkpoint (a reid-benchmark arm's checkpoint.pt).")
@click.option("--id-gate", type=click.FloatRange(-1, 1), metavar="MARGIN",
              help="Train only on generated images whose source person the teacher ranks first, by at least MARGIN "
                   "in probability (0: top-1).")
@click.option("--real-per-id", type=click.IntRange(min=1), metavar="K",
              help="Low-data regime: keep K real training images per identity (seeded by --subset-seed, recorded).")
@click.option("--persons", metavar="FIRST-LAST", help="Train on these persons only, e.g. 322-643.")
@click.option("--subset-seed", type=int, default=0, show_default=True, help="Which K real images stay.")
@click.option("--pretrained", metavar="PATH|imagenet",
              help="ImageNet weights: a local file, or 'imagenet' for torchreid's download (default: from scratch).")
@_layout_option
@click.option("--device", default="auto", show_default=True, callback=_device)
@click.option("--force", is_flag=True, help="Delete the arms in OUT and start over (needed after changing settings).")
@click.option("--baseline-from", type=click.Path(file_okay=False), metavar="OUT2",
              help="Copy the finished baseline arms of another run's OUT trained with the same settings (only the "
                   "manifest differs), to compare several manifests against one baseline.")
def reid_benchmark_cmd(root, manifest, out, model, epochs, steps, match_epochs, eval_every, height, width, batch_size,
                       lr, schedule, warmup_steps, seeds, gen_ratio, gen_labels, gen_label_smooth, gen_from, teacher,
                       id_gate, real_per_id, persons, subset_seed, pretrained, layout, device, force,
                       baseline_from) -> None:
    """Train one torchreid model with and without the generated images of MANIFEST, and compare them on ROOT.

    Per seed, both arms start from the same weights and take the same number of optimizer steps under the same
    learning-rate schedule; both are evaluated on ROOT's query and gallery under the data set's protocol
    (Market-1501: distractors kept, junk dropped, as torchreid) with Rank-1/5/10, mAP and mINP. Writes
    OUT/metrics.json, OUT/report.md and OUT/curves.png; a rerun resumes each arm where it stopped, and refuses
    arms trained with other settings unless --force.

    \b
    Examples:
      reid-augment reid-benchmark Market-1501-v15.09.15 --manifest work/generated -o bench --device cuda
      reid-augment reid-benchmark data/ --manifest work/generated -o bench --seeds 0,1,2 --gen-ratio 0.25
      reid-augment reid-benchmark data/ --manifest work/generated -o bench --model osnet_x0_25 --height 128 \\
          --width 64 --steps 2000 --schedule cosine --eval-every 500 --device cpu
    """
    from .reid.regime import parse_persons
    from .reid_benchmark import ReidBenchmarkConfig, reid_benchmark

    cfg = ReidBenchmarkConfig(model=model, epochs=epochs, steps=steps, match_epochs=match_epochs, eval_every=eval_every,
                              height=height, width=width, batch_size=batch_size, lr=lr, schedule=schedule,
                              warmup_steps=warmup_steps, seeds=seeds, gen_ratio=gen_ratio, gen_labels=gen_labels,
                              gen_label_smooth=gen_label_smooth, gen_from=gen_from, teacher=teacher, id_gate=id_gate,
                              real_per_id=real_per_id, persons=parse_persons(persons), subset_seed=subset_seed,
                              pretrained=pretrained, device=device, layout=layout)
    click.echo(reid_benchmark(root, manifest, out, cfg, force=force, baseline_from=baseline_from).summary())


@cli.command("subset")
@click.argument("root", type=click.Path(), metavar="ROOT")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), metavar="DIR")
@click.option("--persons", metavar="FIRST-LAST", help="Keep these persons only, e.g. 1-321.")
@click.option("--real-per-id", type=click.IntRange(min=1), metavar="K", help="Keep K images per identity.")
@click.option("--subset-seed", type=int, default=0, show_default=True, help="Which K images stay.")
@click.option("--poses", type=click.Path(dir_okay=False), metavar="FILE", help="Also write DIR/annotations.csv: its "
                                                                             "rows of the kept images.")
def subset_cmd(root, out, persons, real_per_id, subset_seed, poses) -> None:
    """Write DIR, a Market-1501-layout data set of symlinks: the training images of ROOT that the regime keeps
    (the same ones `reid-benchmark --persons --real-per-id --subset-seed` keeps), and ROOT's query and gallery.

    \b
    The low-data protocol: a generator trained on other persons, fed only the kept images:
      reid-augment subset data/ -o gen-people --persons 1-321 --poses data/annotations-train.csv
      reid-augment subset data/ -o k2 --persons 322-643 --real-per-id 2 --poses data/annotations-train.csv
    """
    from .reid.regime import Regime, parse_persons, select_folder

    selection = select_folder(root, out, Regime(parse_persons(persons), real_per_id, subset_seed), poses)
    click.echo(selection.summary())


@cli.command("filter")
@click.argument("manifest", type=click.Path(), metavar="MANIFEST")
@click.option("--reid-model", required=True, type=click.Path(dir_okay=False), metavar="CKPT",
              help="A re-ID model trained on ROOT's real training images (e.g. a reid-benchmark baseline arm's "
                   "checkpoint.pt).")
@click.option("--reid-arch", metavar="NAME", help="torchreid architecture of CKPT, when CKPT does not say it.")
@click.option("--root", required=True, type=click.Path(), metavar="ROOT", help="The data set the images came from.")
@click.option("-o", "--output", required=True, type=click.Path(), metavar="OUT",
              help="The new manifest (a .csv path, or a folder for OUT/manifest.csv).")
@click.option("--margin", type=click.FloatRange(-1, 1), default=0.0, show_default=True,
              help="Keep an image when its source's probability leads every other identity's by this much "
                   "(0: the source is the most probable).")
@click.option("--device", default="auto", show_default=True, callback=_device)
@_layout_option
def filter_cmd(manifest, reid_model, reid_arch, root, output, margin, device, layout) -> None:
    """The identity gate: keep the generated images of MANIFEST in which a re-ID model still finds their source
    person; write a new manifest with each image's score (id_prob, id_margin)."""
    from .reid.gate import identity_filter

    click.echo(identity_filter(manifest, reid_model, root, output, margin, reid_arch, layout, device).summary())


@cli.command("preview")
@click.argument("images", type=click.Path(), metavar="IMAGES")
@click.option("-w", "--workdir", default=DEFAULT_WORKDIR, show_default=True, type=click.Path(file_okay=False),
              metavar="WORKDIR")
@click.option("--pairs", type=click.Path(), metavar="FILE", help="Default: WORKDIR/pairs-train.csv.")
@click.option("--poses", type=click.Path(), metavar="FILE", help="Default: WORKDIR/poses.csv.")
@click.option("-n", "--count", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="PNG", help="Default: WORKDIR/pairs-preview.png.")
@_layout_option
def preview_cmd(images, workdir, pairs, poses, count, seed, output, layout) -> None:
    """Draw a few pairs with their pose skeletons, to check poses and pairs before training."""
    from .pairs import preview_pairs

    click.echo(preview_pairs(open_data_set(images, layout), pairs, poses, output, count, seed, workdir).summary())


@cli.command("demo")
@click.option("-o", "--out", default="reid-augment-demo", show_default=True, type=click.Path(file_okay=False),
              metavar="DIR")
def demo_cmd(out) -> None:
    """Run the whole pipeline on the bundled sample on the CPU (a few minutes)."""
    from .demo import run_demo

    run_demo(out, say=click.echo)


def main() -> None:
    cli(prog_name="reid-augment")


if __name__ == "__main__":
    main()
