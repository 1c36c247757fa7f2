"""Stage 3: train VDG, reconstruction stage (L1) then refinement stage (GAN + L_img), resumable.

Run dir: recipe.yaml (resolved), stats.jsonl (losses), samples/step-XXXXXXX.png, checkpoints/latest.pt and a
snapshot checkpoints/step-XXXXXXX.pt at the end of each stage. Multi-GPU: launch with torchrun (DDP, see
runtime.py); rank 0 alone writes.

On CUDA a training step does not wait for the GPU: the host syncs only at log, sample and checkpoint intervals.
REID_AUGMENT_SYNC_DEBUG=error (or warn) makes any other sync inside a step raise (or warn), from a stage's second
step on (its first one sets up kernels and wrappers): `torch.cuda.set_sync_debug_mode` around the steps.
"""

from __future__ import annotations

import json
import os
import sys
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from .checkpoints import load_checkpoint, model_config_of, rng_state, save_checkpoint, set_rng_state
from .config import ModelConfig, Recipe, TrainConfig, dump_recipe, recipe_to_dict
from .device import autocast as make_autocast
from .device import choose_precision
from .device import resolve_device
from .data import StepSampler, TrainingData, load_training_data, resolve_pairs, to_uint8
from .errors import InputError, TrainingError
from .fileio import atomic_write_text, save_png
from .images import scan_images
from .keypoints import condition
from .locks import hold
from .losses import discriminator_loss, generator_adversarial_loss, identity_loss, image_loss, l1
from .networks import VDG, Discriminator, coarse_image, ref_source, refined_image, warm_start, zero_output
from .pairs import read_pair_file
from .preview import sheet, skeleton
from .poses import read_poses
from .runtime import (Dist, WaitClock, all_reduce, any_rank, barrier, init_distributed, rank_zeros, sync_debug,
                      wrap)
from .weights import load_generator, write_generator
from .workdir import WorkDir, fill_in

STAGES = ("rec", "ref", "all")


def _sample_grid(model: VDG, batch: dict, size: tuple[int, int]) -> np.ndarray:
    """Rows of: source | target pose skeleton | coarse | refined | target; [rows * H, 5 * W, 3] uint8."""
    with torch.no_grad():
        coarse, refined = model(batch["src_img"], batch["src_maps"], batch["tgt_maps"], batch.get("flow"))
    skeletons = [skeleton(p, size) for p in batch["tgt_pose"].cpu().numpy()]
    columns = [to_uint8(batch["src_img"]), skeletons, to_uint8(coarse), to_uint8(refined), to_uint8(batch["tgt_img"])]
    return sheet(zip(*columns))


def prepare_batch(batch: dict, cfg: ModelConfig, channels_last: bool, masks: bool = True) -> dict:
    """The batch phase: a batch of `TrainingData.batch` with its pose conditioning (`keypoints.condition`: the
    heatmaps and, for the refinement stage (`masks`), the target body masks of its masked losses) drawn on its
    device, as the step functions take it; the part flow where G_rec's deformable skips need it, or G_ref's warped
    source in the refinement stage."""
    flow = cfg.deform_skips or (cfg.needs_flow and masks)  # G_ref's warped source: the refinement stage's alone.
    batch.update(condition(batch["src_pose"], batch["tgt_pose"], cfg.image_size, cfg.heatmap_sigma, masks, flow))
    if channels_last:
        for key in ("src_img", "tgt_img", "src_maps", "tgt_maps", "tgt_mask"):
            if key in batch:
                batch[key] = batch[key].contiguous(memory_format=torch.channels_last)
    return batch


def _truncate_stats(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so the log matches the weights."""
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        atomic_write_text(path, "".join(ln + "\n" for ln in lines))


CPU_STEPS_NOTE = 2000  # More steps than this on a CPU: say so before they start (the bundled file's 3,200 took 37 min).

# Settings that change what a run computes; the others (logging, compile, ref_steps) may change on resume,
# and rec_steps as `_stage_diff` allows.
_RUN_DEFINING_TRAIN = ("batch_size", "lr", "beta1", "beta2", "flip", "seed", "amp")
# And those that change the refinement stage alone, which a finished reconstruction stage may branch into (as the
# loss settings may): an A/B of refinement designs shares one G_rec.
_REFINEMENT_TRAIN = ("ref_zero_init",)


def resume_diff(state: dict, recipe: Recipe, world: int) -> list[str]:
    """How resuming `state` with `recipe` on `world` processes would change the run: 'what: old -> new' lines."""
    old = state.get("recipe") or {}
    new = recipe_to_dict(recipe)
    before = {**old.get("train", {})}
    if isinstance(before.get("amp"), bool):  # Checkpoints before 0.4 stored amp as true/false.
        before["amp"] = "auto" if before["amp"] else "float32"
    diffs = [f"train.{k}: {before.get(k)} -> {new['train'][k]}" for k in _RUN_DEFINING_TRAIN
             if before.get(k) != new["train"][k]]
    diffs += _stage_diff(state.get("step", 0), old.get("train", {}).get("rec_steps"), new["train"]["rec_steps"])
    if state.get("step", 0) > _rec_steps_of(state):  # Only the refinement stage uses these.
        default = recipe_to_dict(Recipe())  # A field an older checkpoint lacks had its default then.
        was = {**default["loss"], **old.get("loss", {})}
        diffs += [f"loss.{k}: {v} -> {new['loss'][k]}" for k, v in was.items() if new["loss"].get(k) != v]
        was = {**default["train"], **before}
        diffs += [f"train.{k}: {was[k]} -> {new['train'][k]}" for k in _REFINEMENT_TRAIN if was[k] != new["train"][k]]
    if state.get("world_size", 1) != world:
        diffs.append(f"world size: {state.get('world_size', 1)} -> {world}")
    return diffs


# Model fields that only the refinement stage reads: a finished reconstruction stage may resume into another value.
# They leave G_rec's and G_ref's weights as they are; disc_pose reshapes D, which has not trained yet, so a resume
# that changes it starts D afresh from the seed (`_resume`).
_REFINEMENT_MODEL = ("ref_input", "disc_pose")


def model_diff(old: ModelConfig, new: ModelConfig, refining: bool = True) -> list[str]:
    """Where two model designs differ: 'model.field: old -> new' lines; before the refinement stage
    (`refining` False) without the fields it alone reads."""
    return [f"model.{f.name}: {getattr(old, f.name)} -> {getattr(new, f.name)}" for f in fields(ModelConfig)
            if getattr(old, f.name) != getattr(new, f.name) and (refining or f.name not in _REFINEMENT_MODEL)]


def _rec_steps_of(state: dict) -> int:
    """The reconstruction stage's length a checkpoint was trained with."""
    return (state.get("recipe") or {}).get("train", {}).get("rec_steps") or 0


def _stage_diff(step: int, old_rec: int | None, new_rec: int) -> list[str]:
    """A reconstruction-stage checkpoint may move the stage's end, not below its step (that extends a run, or ends
    the stage where a time limit stopped it); a refinement-stage one may not (a larger rec_steps would train the
    reconstruction stage again, a smaller one shift the refinement steps)."""
    if old_rec is None or old_rec == new_rec:
        return []
    if step > old_rec:
        return [f"train.rec_steps: {old_rec} -> {new_rec} (the checkpoint is in the refinement stage, step {step})"]
    if new_rec < step:
        return [f"train.rec_steps: {old_rec} -> {new_rec} (below the checkpoint's step {step})"]
    return []


# The GAN phases (STYLE.md): each step is a function of the modules, the optimiser and the batch.

def reconstruction_step(rec: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, autocast) -> dict:
    """G_rec on L1 (Eq. 2)."""
    with autocast():
        coarse = coarse_image(rec, batch["src_img"], batch["src_maps"], batch["tgt_maps"],
                             batch.get("flow"))
        loss = l1(coarse.float(), batch["tgt_img"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"rec_l1": loss.detach()}


def discriminator_step(disc: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, refined: torch.Tensor,
                       autocast, r1_gamma: float = 0.0, pose: bool = False) -> dict:
    """D on real (I_a, I_b) against fake (I_a, refined) (Eq. 5); `refined` is detached. With `r1_gamma`, plus the
    R1 penalty on the real pairs (gamma / 2 * |d D / d I_b|^2), which keeps D from out-running G_ref. With `pose`
    (`ModelConfig.disc_pose`), D sees the target heatmaps, and each real target under the next pair's pose is a
    fake too: D must check the pose, not only the texture."""
    real = batch["tgt_img"].detach().requires_grad_(r1_gamma > 0)
    maps = batch["tgt_maps"] if pose else None
    with autocast():
        real_logits = disc(batch["src_img"], real, maps).float()
        fake_logits = disc(batch["src_img"], refined.detach(), maps).float()
        mismatch = None
        if pose and len(real) > 1:
            mismatch = disc(batch["src_img"], batch["tgt_img"], maps.roll(1, dims=0)).float()
        loss = discriminator_loss(real_logits, fake_logits, mismatch)
    out = {"d": loss.detach()}
    if r1_gamma > 0:
        grad, = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        r1 = grad.float().square().sum(dim=(1, 2, 3)).mean()
        loss = loss + r1_gamma / 2 * r1
        out["r1"] = r1.detach()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return out


def generator_step(disc: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, refined: torch.Tensor,
                   loss_cfg, autocast, pose: bool = False, judge=None) -> dict:
    """G_ref on the non-saturating adversarial term plus lambda * L_img (Eq. 6, 7, 8); with `pose`, D judges
    the refined image under the target heatmaps; with `judge` (a `reid.model.ReidModel`), plus
    `loss_cfg.identity_weight` times the identity term (`losses.identity_loss`).

    `disc` is the bare module with its parameters frozen: the gradient flows through it into G_ref, and D's own
    gradients are neither computed nor all-reduced.
    """
    disc.requires_grad_(False)
    try:
        with autocast():
            adv = generator_adversarial_loss(disc(batch["src_img"], refined, batch["tgt_maps"] if pose else None)
                                             .float())
            if judge is not None:
                with torch.no_grad():
                    real_features = judge.embed(batch["tgt_img"])
                identity = identity_loss(judge.embed(refined), real_features)
        img = image_loss(refined.float(), batch["tgt_img"], batch["tgt_mask"], loss_cfg)
        loss = adv + loss_cfg.lambda_img * img
        if judge is not None:
            loss = loss + loss_cfg.identity_weight * identity
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    finally:
        disc.requires_grad_(True)
    out = {"g_adv": adv.detach(), "g_img": img.detach(), "g": loss.detach()}
    if judge is not None:
        out["g_id"] = identity.detach()
    return out


# `train` is a sequence of phases, each a function of the run's shared state (`_Run`): set-up (`_set_up`: the
# arguments, the data tables, the checkpoint to resume, the seed, `_build_models`), resume (`_resume`), the run dir
# (`_open_run_dir`), the data (`_load_data`) and the networks to train (`_ready_networks`), then the steps (`_loop`):
# per step a batch (`prepare_batch`) and one stage's step (`reconstruction_step`, or `_refinement_step`: a D step
# and a G step), then at intervals the checks (`_check`), logging (`_log`), samples (`_sample`) and checkpoints
# (`_checkpoint`); last the summary (`_finish`).


@dataclass
class _Models:
    """A run's modules and optimisers: VDG (both stages), the discriminator, an Adam for each part."""

    model: VDG
    disc: Discriminator
    opt_rec: torch.optim.Optimizer
    opt_ref: torch.optim.Optimizer
    opt_disc: torch.optim.Optimizer


@dataclass
class _Run:
    """What the phases of one `train` call share."""

    recipe: Recipe                 # With the model config that trains: a resumed checkpoint's.
    run_dir: Path
    dev: torch.device
    ctx: Dist
    stage: str
    tables: tuple                  # (pairs, poses, image paths), checked against each other.
    state: dict | None             # The checkpoint resumed from.
    autocast: Callable
    nets: _Models
    step: int = 0
    origin: str = ""               # The donor a run started from, kept across resumes.
    precision: str = "float32"     # What the steps compute in ("bf16" or "float32"), stored in every checkpoint.
    judge: Any = None              # The identity term's frozen re-ID model (`reid.model.ReidModel`), when asked for.
    dataset: str = ""
    writer: Any = None             # TensorBoard's, when asked for (rank 0).
    data: TrainingData | None = None
    stream: Iterator | None = None  # (pair, flip) items of this process's batches from `step` on.
    fixed: dict | None = None      # The sample grids' batch.
    rec_net: torch.nn.Module | None = None  # The modules as the steps call them (compiled on CUDA on request)...
    ref_net: torch.nn.Module | None = None
    disc_net: torch.nn.Module | None = None
    rec_train: torch.nn.Module | None = None  # ...and as the stage in training wraps them (DDP).
    ref_train: torch.nn.Module | None = None
    disc_train: torch.nn.Module | None = None
    nonfinite: torch.Tensor | None = None  # 1 once a loss was not finite, on the device.
    sums: dict = field(default_factory=dict)  # Loss sums since the last log line, on the device.
    wait: WaitClock | None = None
    last_log: int = 0
    tick: float = 0.0
    bar: Any = None

    @property
    def latest(self) -> Path:
        return self.run_dir / "checkpoints" / "latest.pt"

    @property
    def stats(self) -> Path:
        return self.run_dir / "stats.jsonl"

    @property
    def per_rank(self) -> int:
        """This process's share of the global batch."""
        return self.recipe.train.batch_size // self.ctx.world

    @property
    def end(self) -> int:
        """The step this call stops at."""
        tc = self.recipe.train
        return tc.rec_steps if self.stage == "rec" else tc.rec_steps + tc.ref_steps


def train(images: str | os.PathLike, recipe: Recipe, run_dir: str | os.PathLike | None = None,
          pairs: str | os.PathLike | None = None, poses: str | os.PathLike | None = None, stage: str = "all",
          device: str = "auto", resume: bool = False, progress: bool = True, force: bool = False,
          tensorboard: bool = False, time_limit: float | None = None, init_from: str | os.PathLike | None = None,
          checkpoints: bool = True, workdir: str | os.PathLike | None = None) -> Trained:
    """Train VDG on the pairs of `pairs`; returns what was trained (`Trained`: path-like, the last checkpoint).
    What is left out comes from `workdir`: its training pairs, its poses, and the run dir runs/<recipe name>.

    Rerunning into the same `run_dir` continues from `checkpoints/latest.pt` exactly where it stopped
    (same batches, same RNG state); `resume=True` insists that such a checkpoint exists. A resume whose recipe
    (or world size) would change the run is refused unless `force`.

    `recipe.train.batch_size` is the global batch: under torchrun each of the world's processes takes an equal
    share of it, so the learning rate means the same on one GPU or eight.

    Args:
        images: the image folder the pair and pose files name.
        recipe: model, loss and loop settings (the model config of a resumed checkpoint wins).
        stage: 'rec' (reconstruction only), 'ref' (refinement, needs a finished 'rec'), or 'all'.
        tensorboard: also write the logged scalars and sample grids as TensorBoard events (run_dir/tensorboard).
        time_limit: seconds of training after which the loop stops at a step boundary and checkpoints (a
            scheduler's wall-clock limit, or an equal-time A/B); rerunning resumes from there. Under torchrun the
            processes agree on it at log and checkpoint intervals: they stop together, up to log_every steps late.
        init_from: a trained generator (checkpoint, .safetensors or a bundled name) whose G_rec and G_ref start a
            new run (see `networks.warm_start`: the recipe's model may add input channels to the donor's design);
            the discriminator and the optimisers start afresh. Ignored when resuming.
        checkpoints: False writes no checkpoint and no generator file, not even at the end (for benchmarks: a
            market1501 model's full checkpoints are GBs); the path returned then names nothing.
    """
    if run_dir is None and workdir is not None:
        run_dir = WorkDir(workdir).run(recipe.name)
    run_dir, pairs, poses = fill_in("train", workdir, run_dir=run_dir, pairs=pairs, poses=poses)
    run = _set_up(images, recipe, Path(run_dir), pairs, poses, stage, device, resume, force)
    # Checked input, nothing written yet: from here one process (rank 0 under torchrun) holds the run dir.
    with hold(run_dir, what="this run dir") if run.ctx.main else nullcontext():
        _resume(run, init_from)
        if run.step >= run.end:
            return _trained(run)
        _announce_cpu_run(run)
        _open_run_dir(run, images, tensorboard)
        _load_data(run, progress)
        _ready_networks(run)
        _loop(run, progress, time_limit, checkpoints)
        _finish(run)
        return _trained(run)


@dataclass(frozen=True)
class Trained:
    """What `train` made: the last checkpoint (this object is path-like to it, so it goes wherever a checkpoint
    path is taken), the run dir, and the recipe and stage; `summary()` is empty on every process but rank 0, so
    torchrun prints one."""

    checkpoint: Path
    run_dir: Path
    recipe: str
    stage: str
    main: bool = True

    def __fspath__(self) -> str:
        return str(self.checkpoint)

    def __str__(self) -> str:
        return str(self.checkpoint)

    def summary(self) -> str:
        if not self.main:
            return ""
        stages = "stages" if self.stage == "all" else "stage"
        return (f"Trained '{self.recipe}' ({self.stage} {stages}) into {self.run_dir}: losses in stats.jsonl, "
                f"sample grids in samples/, checkpoint {self.checkpoint}.")


def _trained(run: _Run) -> Trained:
    return Trained(run.latest, run.run_dir, run.recipe.name, run.stage, run.ctx.main)


def _set_up(images, recipe: Recipe, run_dir: Path, pairs, poses, stage: str, device: str, resume: bool,
            force: bool) -> _Run:
    """Set-up: the arguments, the data tables (every pair's images and poses must exist before the first step),
    the checkpoint to resume (its model config fixes the architecture), the seed, the models and optimisers."""
    if stage not in STAGES:
        raise InputError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    latest = run_dir / "checkpoints" / "latest.pt"
    if resume and not latest.is_file():
        raise InputError(f"{latest}: nothing to resume from")
    dev = resolve_device(device)
    ctx = init_distributed(dev)
    tc = recipe.train
    if tc.batch_size % ctx.world:
        raise InputError(f"train.batch_size {tc.batch_size} is the global batch: it must divide evenly across the "
                         f"{ctx.world} processes (e.g. {tc.batch_size // ctx.world * ctx.world or ctx.world})")
    if recipe.loss.r1_gamma > 0 and (ctx.world > 1 or tc.compile):  # Neither takes the gradient of a gradient.
        raise InputError(f"loss.r1_gamma={recipe.loss.r1_gamma}: the R1 penalty trains on one process without "
                         f"train.compile (here {ctx.world} process(es), compile {tc.compile}); set it to 0")
    tables = _read_tables(images, pairs, poses)
    state = load_checkpoint(latest) if latest.is_file() else None
    if state and not force:
        diffs = resume_diff(state, recipe, ctx.world)
        if diffs:
            raise InputError(f"{latest}: resuming would change the run ({'; '.join(diffs)}); use the checkpoint's "
                             f"settings, a new run dir, or --force")
    if state:
        design = model_diff(model_config_of(state), recipe.model, refining=state["step"] > _rec_steps_of(state))
        if design:  # Not even --force: the weights would not fit, or the recipe's design would be ignored.
            raise InputError(f"{latest}: the checkpoint's model is not the recipe's ({'; '.join(design)}); resume "
                             f"with the recipe it was trained with, or start a new run dir (--init-from {latest} "
                             f"grows a design)")
    # Before the seed: the one-off CPU probe builds a layer (draws numbers). A resume keeps the recorded precision.
    precision, note = choose_precision(dev, tc.amp, (state or {}).get("precision"))
    precision = "bf16" if rank_zeros(precision == "bf16", dev, ctx) else "float32"  # One choice for all processes.
    if note and ctx.main:
        print(f"note: {note}", file=sys.stderr)
    autocast = make_autocast(dev, precision)
    judge = None
    if recipe.loss.identity_weight > 0 and stage != "rec":  # The identity term's re-ID model, frozen.
        from .reid.model import load as load_reid

        try:
            judge = load_reid(recipe.loss.identity_model, device=dev)
        except InputError as e:  # Say which setting named the file.
            raise InputError(f"loss.identity_model: {e}") from None
    # Every generator a step could draw from starts from the seed, so a run is a function of its recipe, in the
    # first call of a process or a later one, and a checkpoint's RNG state (all three) continues it exactly.
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    return _Run(recipe, run_dir, dev, ctx, stage, tables, state, autocast, _build_models(recipe.model, tc, dev),
                precision=precision, judge=judge)


def _announce_cpu_run(run: _Run) -> None:
    """A long run on a CPU is said before it starts, once (rank 0)."""
    tc = run.recipe.train
    if run.ctx.main and run.dev.type == "cpu" and tc.rec_steps + tc.ref_steps > CPU_STEPS_NOTE:
        print(f"note: no GPU, training on the CPU. The '{run.recipe.name}' recipe's {tc.rec_steps + tc.ref_steps} "
              f"steps can take hours to days here (the progress bar shows the ETA; the README's model card gives "
              f"this CPU's figures). Try --recipe tiny, or a CUDA machine.", file=sys.stderr)


def _read_tables(images, pairs, poses) -> tuple:
    """The pair table, the pose table and the training images' paths by name, checked against each other."""
    pair_table = read_pair_file(pairs)
    if pair_table.empty:
        raise InputError(f"{pairs}: no pairs to train on")
    pose_table = read_poses(poses)
    paths = scan_images(images, splits=("train",)).paths  # Pairs are of training images.
    resolve_pairs(pair_table, pose_table, paths, str(pairs))
    return pair_table, pose_table, paths


def _build_models(cfg: ModelConfig, tc: TrainConfig, dev: torch.device) -> _Models:
    """Fresh modules (drawn from torch's generator) in the loop's memory format, and their optimisers."""
    model = VDG(cfg).to(dev)
    disc = Discriminator(cfg.disc_channels, cfg.disc_levels, cfg.image_size,
                         cfg.num_joints if cfg.disc_pose else 0).to(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # Fixed shapes: let cuDNN pick the fastest kernels once.
    # oneDNN's and cuDNN's fast convolution kernels want NHWC: 1.5x on the CPU in float32 (RESULTS.md).
    if tc.channels_last:
        model, disc = model.to(memory_format=torch.channels_last), disc.to(memory_format=torch.channels_last)
    betas = (tc.beta1, tc.beta2)
    return _Models(model, disc, torch.optim.Adam(model.rec.parameters(), tc.lr, betas=betas),
                   torch.optim.Adam(model.ref.parameters(), tc.lr, betas=betas),
                   torch.optim.Adam(disc.parameters(), tc.lr, betas=betas))


def _resume(run: _Run, init_from) -> None:
    """Resume: the checkpoint's weights, optimiser states, RNG state and step; or a new run's warm start."""
    nets, state, tc = run.nets, run.state, run.recipe.train
    run.origin = (state or {}).get("init_from", "")
    if state:
        nets.model.rec.load_state_dict(state["rec"])
        nets.model.ref.load_state_dict(state["ref"])
        nets.opt_rec.load_state_dict(state["opt_rec"])
        nets.opt_ref.load_state_dict(state["opt_ref"])
        if model_config_of(state).disc_pose == run.recipe.model.disc_pose:  # Else an untrained D of another shape.
            nets.disc.load_state_dict(state["disc"])
            nets.opt_disc.load_state_dict(state["opt_disc"])
        set_rng_state(state["rng"])
        run.step = state["step"]
    elif init_from is not None:
        run.origin = _warm_start(nets.model, init_from)
    if run.stage == "ref" and run.step < tc.rec_steps:
        raise InputError(f"--stage ref needs a finished reconstruction stage ({tc.rec_steps} steps); "
                         f"{run.run_dir} is at step {run.step}: run --stage rec first")


def _open_run_dir(run: _Run, images, tensorboard: bool) -> None:
    """The run dir (rank 0): its folders, the resolved recipe, the log cut back to the step resumed from."""
    run.dataset = Path(images).resolve().name
    if run.ctx.main:
        (run.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run.run_dir / "samples").mkdir(exist_ok=True)
        atomic_write_text(run.run_dir / "recipe.yaml", dump_recipe(run.recipe))
        _truncate_stats(run.stats, run.step)
    run.writer = _tensorboard_writer(run.run_dir) if tensorboard and run.ctx.main else None


def _load_data(run: _Run, progress: bool) -> None:
    """The training images decoded once onto the device, this process's batch stream from the step resumed from,
    and the sample grids' fixed batch."""
    tc, cfg, ctx, dev = run.recipe.train, run.recipe.model, run.ctx, run.dev
    data = load_training_data(*run.tables, cfg.image_size, progress and ctx.main).to(dev)
    if data.skipped and ctx.main:
        tqdm.write(f"warning: {len(data.skipped)} unreadable images and their pairs left out "
                   f"(first: {data.skipped[0][0]}: {data.skipped[0][1]})")
    run.data = data
    run.stream = iter(StepSampler(len(data), run.per_rank, tc.seed, tc.flip, run.step, ctx.rank, ctx.world))
    shown = min(4, len(data))
    run.fixed = prepare_batch(data.batch(torch.arange(shown), torch.zeros(shown, dtype=torch.bool), dev), cfg,
                              tc.channels_last)


def _ready_networks(run: _Run) -> None:
    """The modules as the steps call them: compiled on CUDA when the recipe asks; G_rec wrapped for DDP when the
    run is in the reconstruction stage (the refinement stage wraps G_ref and D on its first step)."""
    model, disc, tc = run.nets.model, run.nets.disc, run.recipe.train
    run.rec_net, run.ref_net, run.disc_net = model.rec, model.ref, disc
    if run.dev.type == "cuda" and tc.compile:
        run.rec_net, run.ref_net, run.disc_net = (torch.compile(run.rec_net), torch.compile(run.ref_net),
                                                  torch.compile(run.disc_net))
    run.rec_train = wrap(run.rec_net, run.dev, run.ctx) if run.step < tc.rec_steps else None


def _loop(run: _Run, progress: bool, time_limit: float | None, checkpoints: bool) -> None:
    """The steps up to `run.end`: per step a batch and one stage's step, then at intervals the checks, a log line,
    a sample grid and a checkpoint; a time limit stops the loop at a step boundary, with a checkpoint."""
    tc, ctx = run.recipe.train, run.ctx
    run.nonfinite, run.sums = torch.zeros((), device=run.dev), {}
    run.wait, run.last_log, first = WaitClock(run.dev), run.step, run.step
    sync_mode = os.environ.get("REID_AUGMENT_SYNC_DEBUG") if run.dev.type == "cuda" else None
    run.bar = tqdm(total=run.end, initial=run.step, desc="train", unit="step", disable=not (progress and ctx.main),
                   dynamic_ncols=True)
    run.tick = began = time.perf_counter()
    while run.step < run.end:
        with sync_debug(sync_mode if run.step not in (first, tc.rec_steps) else None):
            with run.wait:
                batch = _next_batch(run)
            if run.step < tc.rec_steps:
                losses = reconstruction_step(run.rec_train, run.nets.opt_rec, batch, run.autocast)
            else:
                losses = _refinement_step(run, batch)
            for key, value in losses.items():
                run.nonfinite = torch.maximum(run.nonfinite, (~torch.isfinite(value)).float())
                run.sums[key] = run.sums.get(key, 0.0) + value
        run.step += 1
        run.bar.update(1)
        stage_done = run.step in (tc.rec_steps, run.end)
        out_of_time = _check(run, stage_done, time_limit is not None and time.perf_counter() - began > time_limit)
        if (run.step % tc.log_every == 0 or stage_done) and run.sums:
            _log(run)
        run.nets.model.refine = run.step > tc.rec_steps  # A reconstruction-stage model shows its coarse image.
        if ctx.main and (run.step % tc.sample_every == 0 or stage_done):
            _sample(run)
        if ctx.main and checkpoints and (run.step % tc.checkpoint_every == 0 or stage_done):
            _checkpoint(run, stage_done)
        if out_of_time:
            if ctx.main and checkpoints and run.step % tc.checkpoint_every and not stage_done:
                _save(run, run.latest)
            break


def _next_batch(run: _Run) -> dict:
    """This process's next batch, conditioned; with the target body masks from the refinement stage on."""
    items = [next(run.stream) for _ in range(run.per_rank)]
    index = torch.tensor([i for i, _ in items])
    flips = torch.tensor([f for _, f in items])
    tc = run.recipe.train
    return prepare_batch(run.data.batch(index, flips, run.dev), run.recipe.model, tc.channels_last,
                         masks=run.step >= tc.rec_steps)


def _refinement_step(run: _Run, batch: dict) -> dict:
    """One refinement-stage step: G_ref refines the frozen G_rec's coarse image, then a D step and a G step."""
    if run.ref_train is None:
        # Freeze G_rec; train G_ref and D from here on. D's BatchNorm buffers stay per process
        # (broadcast_buffers=False): D is always in train mode, so its running statistics are never
        # used, and broadcasting them between its two forward calls breaks the backward on torch >= 2.6.
        run.nets.model.rec.requires_grad_(False).eval()
        run.rec_train = None
        run.ref_train = wrap(run.ref_net, run.dev, run.ctx)
        run.disc_train = wrap(run.disc_net, run.dev, run.ctx, broadcast_buffers=False)
        if run.step == run.recipe.train.rec_steps and run.recipe.train.ref_zero_init:
            zero_output(run.nets.model.ref)  # The stage's first step, not a resume: every process zeroes alike.
    with run.autocast():
        with torch.no_grad():
            coarse = coarse_image(run.rec_net, batch["src_img"], batch["src_maps"], batch["tgt_maps"],
                                  batch.get("flow"))
        source = ref_source(run.recipe.model, batch["src_img"], batch.get("flow"))
        refined = refined_image(run.ref_train, source, coarse, batch["tgt_maps"])
    pose = run.recipe.model.disc_pose
    losses = discriminator_step(run.disc_train, run.nets.opt_disc, batch, refined, run.autocast,
                                run.recipe.loss.r1_gamma, pose)
    losses.update(generator_step(run.disc_net, run.nets.opt_ref, batch, refined, run.recipe.loss, run.autocast,
                                 pose, run.judge))
    return losses


def _check(run: _Run, stage_done: bool, out_of_time: bool) -> bool:
    """Whether to stop for time; a non-finite loss on any process stops the run.

    The host waits for the GPU only here: at intervals, or when a single process is out of time (processes agree
    on the time at intervals only, so that all stop at the same step). One flag for all processes: every rank
    stops together, with the same message.
    """
    tc = run.recipe.train
    if not (run.step % tc.log_every == 0 or stage_done or run.step % tc.checkpoint_every == 0
            or (out_of_time and run.ctx.world == 1)):
        return False
    bad, out_of_time = any_rank(run.nonfinite, out_of_time, run.ctx)
    if bad:
        raise TrainingError(f"a loss became non-finite before step {run.step}; stopped. The last good "
                            f"checkpoint is kept: {run.latest} (try a lower train.lr)")
    return out_of_time


def _log(run: _Run) -> None:
    """A line of stats.jsonl (and TensorBoard scalars): the mean losses over all processes since the last line,
    throughput, the share of time spent making batches and, on CUDA, the peak memory since the last line."""
    tc, dev, ctx = run.recipe.train, run.dev, run.ctx
    count, run.last_log = run.step - run.last_log, run.step
    keys = sorted(run.sums)
    total = all_reduce(torch.stack([torch.as_tensor(run.sums[k], device=dev) for k in keys]), ctx) / ctx.world
    means = {k: round(float(v) / count, 6) for k, v in zip(keys, total.tolist())}
    elapsed, run.tick = time.perf_counter() - run.tick, time.perf_counter()
    record = {"step": run.step, "stage": "rec" if run.step <= tc.rec_steps else "ref", **means,
              "images_per_s": round(count * tc.batch_size / elapsed, 2),
              "data_wait": round(run.wait.take() / elapsed, 3)}
    if dev.type == "cuda":  # Since the last line, so that a stage's lines give its own peak.
        record["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
        torch.cuda.reset_peak_memory_stats(dev)
    run.sums = {}
    run.bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})
    if ctx.main:
        with open(run.stats, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if run.writer is not None:
            for key, value in record.items():
                if key not in ("step", "stage"):
                    run.writer.add_scalar(key, value, run.step)


def _sample(run: _Run) -> None:
    """A sample grid of the fixed batch: samples/step-XXXXXXX.png (and TensorBoard)."""
    grid = _sample_grid(run.nets.model, run.fixed, run.recipe.model.image_size)
    save_png(run.run_dir / "samples" / f"step-{run.step:07d}.png", grid)
    if run.writer is not None:
        run.writer.add_image("samples", grid, run.step, dataformats="HWC")


def _checkpoint(run: _Run, stage_done: bool) -> None:
    """checkpoints/latest.pt; at the end of a stage also a step-XXXXXXX.pt snapshot and the generator file."""
    _save(run, run.latest)
    if stage_done:
        _save(run, run.run_dir / "checkpoints" / f"step-{run.step:07d}.pt")
        write_generator(run.nets.model, run.run_dir / "checkpoints" / "generator.safetensors", run.step,
                        run.recipe.name, run.dataset)


def _save(run: _Run, path: Path) -> None:
    nets, step = run.nets, run.step
    save_checkpoint(path, model_config=run.recipe.model, recipe=recipe_to_dict(run.recipe), dataset=run.dataset,
                    world_size=run.ctx.world, step=step, stage="rec" if step <= run.recipe.train.rec_steps else "ref",
                    rec=nets.model.rec.state_dict(), ref=nets.model.ref.state_dict(), disc=nets.disc.state_dict(),
                    opt_rec=nets.opt_rec.state_dict(), opt_ref=nets.opt_ref.state_dict(),
                    opt_disc=nets.opt_disc.state_dict(), rng=rng_state(), init_from=run.origin,
                    precision=run.precision)


def _finish(run: _Run) -> None:
    """The progress bar and TensorBoard closed, the processes met."""
    run.bar.close()
    if run.writer is not None:
        run.writer.close()
    barrier(run.ctx)


def _warm_start(model: VDG, init_from: str | os.PathLike) -> str:
    """Load a donor generator into `model` (both stages); returns the donor's provenance for the checkpoint."""
    donor, fields = load_generator(init_from)
    try:
        for part in ("rec", "ref"):
            warm_start(getattr(model, part), getattr(donor, part).state_dict())
    except ValueError as err:
        raise InputError(f"{init_from}: cannot start this recipe's model from it ({err})") from None
    return f"{init_from} (step {fields.get('step')})"


def _tensorboard_writer(run_dir: Path):
    """A SummaryWriter into run_dir/tensorboard; stats.jsonl stays the record."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(str(run_dir / "tensorboard"))
