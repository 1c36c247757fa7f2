"""Stage 3: train VDG, reconstruction stage (L1) then refinement stage (GAN + L_img), resumable.

Run dir: recipe.yaml (resolved), stats.jsonl (losses), samples/step-XXXXXXX.png, checkpoints/latest.pt and a
snapshot checkpoints/step-XXXXXXX.pt at the end of each stage. Multi-GPU: launch with torchrun (DDP);
rank 0 alone writes.

On CUDA a training step does not wait for the GPU: the host syncs only at log, sample and checkpoint intervals.
REID_AUGMENT_SYNC_DEBUG=error (or warn) makes any other sync inside a step raise (or warn), from a stage's second
step on (its first one sets up kernels and wrappers): `torch.cuda.set_sync_debug_mode` around the steps.
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .checkpoint import load_checkpoint, model_config_of, rng_state, save_checkpoint, set_rng_state
from .config import ModelConfig, Recipe, dump_recipe, recipe_to_dict
from .device import autocast as make_autocast
from .device import resolve_device  # noqa: F401  (also imported from here by older code)
from .data import StepSampler, load_training_data, resolve_pairs, to_uint8
from .errors import InputError, TrainingError
from .fileio import atomic_write_text, save_png
from .generator_file import write_generator
from .images import scan_images
from .keypoints import body_masks, draw_skeleton, to_heatmaps
from .losses import discriminator_loss, generator_adversarial_loss, image_loss, l1
from .networks import VDG, Discriminator, coarse_image, refined_image, warm_start
from .pairs import read_pair_file
from .preview import grid
from .poses import read_poses

STAGES = ("rec", "ref", "all")


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(dev: torch.device) -> _Dist:
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return _Dist(dist.get_rank(), dist.get_world_size())


def _wrap(module: torch.nn.Module, dev: torch.device, ctx: _Dist, broadcast_buffers: bool = True) -> torch.nn.Module:
    if ctx.world == 1:
        return module
    return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None,
                                   broadcast_buffers=broadcast_buffers)


def _sample_grid(model: VDG, batch: dict, size: tuple[int, int]) -> np.ndarray:
    """Rows of: source | target pose skeleton | coarse | refined | target; [rows * H, 5 * W, 3] uint8."""
    with torch.no_grad():
        coarse, refined = model(batch["src_img"], batch["src_maps"], batch["tgt_maps"])
    skeletons = np.stack([draw_skeleton(p, size) for p in batch["tgt_pose"].cpu().numpy()])
    columns = [to_uint8(batch["src_img"]), skeletons, to_uint8(coarse), to_uint8(refined), to_uint8(batch["tgt_img"])]
    return grid(zip(*columns))


def prepare_batch(batch: dict, cfg: ModelConfig, channels_last: bool, masks: bool = True) -> dict:
    """Draw a batch of `TrainingData.batch` its heatmaps and (for the refinement stage's masked losses) target body
    masks on its device, as the step functions take it."""
    batch["src_maps"] = to_heatmaps(batch["src_pose"], cfg.image_size, cfg.heatmap_sigma)
    batch["tgt_maps"] = to_heatmaps(batch["tgt_pose"], cfg.image_size, cfg.heatmap_sigma)
    if masks:
        batch["tgt_mask"] = body_masks(batch["tgt_pose"], cfg.image_size)
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


# Settings that change what a run computes; the others (logging, workers, compile, ref_steps) may change on resume,
# and rec_steps as `_stage_diff` allows.
_RUN_DEFINING_TRAIN = ("batch_size", "lr", "beta1", "beta2", "flip", "seed", "amp")


def resume_diff(state: dict, recipe: Recipe, world: int) -> list[str]:
    """How resuming `state` with `recipe` on `world` processes would change the run: 'what: old -> new' lines."""
    old = state.get("recipe") or {}
    new = recipe_to_dict(recipe)
    diffs = [f"train.{k}: {old.get('train', {}).get(k)} -> {new['train'][k]}" for k in _RUN_DEFINING_TRAIN
             if old.get("train", {}).get(k) != new["train"][k]]
    diffs += _stage_diff(state.get("step", 0), old.get("train", {}).get("rec_steps"), new["train"]["rec_steps"])
    diffs += [f"loss.{k}: {v} -> {new['loss'][k]}" for k, v in old.get("loss", {}).items() if new["loss"].get(k) != v]
    if state.get("world_size", 1) != world:
        diffs.append(f"world size: {state.get('world_size', 1)} -> {world}")
    return diffs


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
        coarse = coarse_image(rec, batch["src_img"], batch["src_maps"], batch["tgt_maps"])
        loss = l1(coarse.float(), batch["tgt_img"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"rec_l1": loss.detach()}


def discriminator_step(disc: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, refined: torch.Tensor,
                       autocast) -> dict:
    """D on real (I_a, I_b) against fake (I_a, refined) (Eq. 5); `refined` is detached."""
    with autocast():
        loss = discriminator_loss(disc(batch["src_img"], batch["tgt_img"]).float(),
                                  disc(batch["src_img"], refined.detach()).float())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"d": loss.detach()}


def generator_step(disc: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, refined: torch.Tensor,
                   loss_cfg, autocast) -> dict:
    """G_ref on the non-saturating adversarial term plus lambda * L_img (Eq. 6, 7, 8).

    `disc` is the bare module with its parameters frozen: the gradient flows through it into G_ref, and D's own
    gradients are neither computed nor all-reduced.
    """
    disc.requires_grad_(False)
    try:
        with autocast():
            adv = generator_adversarial_loss(disc(batch["src_img"], refined).float())
        img = image_loss(refined.float(), batch["tgt_img"], batch["tgt_mask"], loss_cfg)
        loss = adv + loss_cfg.lambda_img * img
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    finally:
        disc.requires_grad_(True)
    return {"g_adv": adv.detach(), "g_img": img.detach(), "g": loss.detach()}


def _all_reduce(tensor: torch.Tensor, ctx: "_Dist", op=dist.ReduceOp.SUM) -> torch.Tensor:
    if ctx.world > 1:
        dist.all_reduce(tensor, op=op)
    return tensor


def _any_rank(nonfinite: torch.Tensor, out_of_time: bool, ctx: "_Dist") -> tuple[bool, bool]:
    """Whether any process saw a non-finite loss, and whether any ran out of time: one all-reduce, one sync."""
    flags = torch.stack([nonfinite, torch.full_like(nonfinite, float(out_of_time))])
    bad, late = _all_reduce(flags, ctx, dist.ReduceOp.MAX).tolist()
    return bool(bad), bool(late)


@contextmanager
def _sync_debug(mode: str | None):
    """Inside, a host-device sync warns or raises (`mode` 'warn' or 'error'; None: nothing is checked)."""
    if not mode:
        yield
        return
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(old)


class _WaitClock:
    """Seconds spent making batches. On a GPU the host returns from the batch call before the batch is made, so
    there it is the GPU's time between CUDA events recorded around the call, read at log intervals only."""

    def __init__(self, dev: torch.device):
        self.cuda, self.seconds, self.pending = dev.type == "cuda", 0.0, []

    def __enter__(self) -> None:
        if self.cuda:
            self.pending.append(torch.cuda.Event(enable_timing=True))
            self.pending[-1].record()
        else:
            self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.pending.append(torch.cuda.Event(enable_timing=True))
            self.pending[-1].record()
        else:
            self.seconds += time.perf_counter() - self.start

    def take(self) -> float:
        """The seconds since the last take (on a GPU, waits for the last batch)."""
        if self.pending:
            self.pending[-1].synchronize()
            pairs = zip(self.pending[::2], self.pending[1::2])
            self.seconds += sum(start.elapsed_time(end) for start, end in pairs) / 1000
        seconds, self.seconds, self.pending = self.seconds, 0.0, []
        return seconds


def train(images: str | os.PathLike, recipe: Recipe, run_dir: str | os.PathLike,
          pairs: str | os.PathLike, poses: str | os.PathLike, stage: str = "all", device: str = "auto",
          resume: bool = False, progress: bool = True, force: bool = False, tensorboard: bool = False,
          time_limit: float | None = None, init_from: str | os.PathLike | None = None,
          checkpoints: bool = True) -> Path:
    """Train VDG on the pairs of `pairs` and return the path of the last checkpoint.

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
    if stage not in STAGES:
        raise InputError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    run_dir = Path(run_dir)
    latest = run_dir / "checkpoints" / "latest.pt"
    if resume and not latest.is_file():
        raise InputError(f"{latest}: nothing to resume from")
    dev = resolve_device(device)
    ctx = _init_distributed(dev)
    tc = recipe.train
    if tc.batch_size % ctx.world:
        raise InputError(f"train.batch_size {tc.batch_size} is the global batch: it must divide evenly across the "
                         f"{ctx.world} processes (e.g. {tc.batch_size // ctx.world * ctx.world or ctx.world})")
    per_rank = tc.batch_size // ctx.world

    # Data: every pair's images and poses must exist before the first step.
    pair_table = read_pair_file(pairs)
    if pair_table.empty:
        raise InputError(f"{pairs}: no pairs to train on")
    pose_table = read_poses(poses)
    found = scan_images(images, splits=("train",)).images  # Pairs are of training images.
    paths = dict(zip(found["name"], found["path"]))
    resolve_pairs(pair_table, pose_table, paths, str(pairs))

    # Models and optimisers; a resumed checkpoint fixes the architecture.
    state = load_checkpoint(latest) if latest.is_file() else None
    if state and not force:
        diffs = resume_diff(state, recipe, ctx.world)
        if diffs:
            raise InputError(f"{latest}: resuming would change the run ({'; '.join(diffs)}); use the checkpoint's "
                             f"settings, a new run dir, or --force")
    model_cfg = model_config_of(state) if state else recipe.model
    recipe = replace(recipe, model=model_cfg)
    autocast = make_autocast(dev, tc.amp)  # Before the seed: its one-off CPU probe builds a layer (draws numbers).
    # Every generator a step could draw from starts from the seed, so a run is a function of its recipe, in the
    # first call of a process or a later one, and a checkpoint's RNG state (all three) continues it exactly.
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    model = VDG(model_cfg).to(dev)
    disc = Discriminator(model_cfg.disc_channels, model_cfg.disc_levels, model_cfg.image_size).to(dev)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # Fixed shapes: let cuDNN pick the fastest kernels once.
    # oneDNN's and cuDNN's fast convolution kernels want NHWC: 1.5x on the CPU in float32 (RESULTS.md).
    channels_last = tc.channels_last
    if channels_last:
        model, disc = model.to(memory_format=torch.channels_last), disc.to(memory_format=torch.channels_last)
    betas = (tc.beta1, tc.beta2)
    opt_rec = torch.optim.Adam(model.rec.parameters(), tc.lr, betas=betas)
    opt_ref = torch.optim.Adam(model.ref.parameters(), tc.lr, betas=betas)
    opt_disc = torch.optim.Adam(disc.parameters(), tc.lr, betas=betas)
    step, origin = 0, (state or {}).get("init_from", "")  # The donor a run started from, kept across resumes.
    if state:
        model.rec.load_state_dict(state["rec"])
        model.ref.load_state_dict(state["ref"])
        disc.load_state_dict(state["disc"])
        opt_rec.load_state_dict(state["opt_rec"])
        opt_ref.load_state_dict(state["opt_ref"])
        opt_disc.load_state_dict(state["opt_disc"])
        set_rng_state(state["rng"])
        step = state["step"]
    elif init_from is not None:
        origin = _warm_start(model, init_from)
    end = tc.rec_steps if stage == "rec" else tc.rec_steps + tc.ref_steps
    if stage == "ref" and step < tc.rec_steps:
        raise InputError(f"--stage ref needs a finished reconstruction stage ({tc.rec_steps} steps); "
                         f"{run_dir} is at step {step}: run --stage rec first")
    if step >= end:
        return latest

    # Run dir.
    dataset_name = Path(images).resolve().name
    stats_path = run_dir / "stats.jsonl"
    if ctx.main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "samples").mkdir(exist_ok=True)
        atomic_write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
        _truncate_stats(stats_path, step)
    writer = _tensorboard_writer(run_dir) if tensorboard and ctx.main else None

    data = load_training_data(pair_table, pose_table, paths, model_cfg.image_size, progress and ctx.main).to(dev)
    if data.skipped and ctx.main:
        tqdm.write(f"warning: {len(data.skipped)} unreadable images and their pairs left out "
                   f"(first: {data.skipped[0][0]}: {data.skipped[0][1]})")
    stream = iter(StepSampler(len(data), per_rank, tc.seed, tc.flip, step, ctx.rank, ctx.world))

    def next_batch() -> dict:
        items = [next(stream) for _ in range(per_rank)]
        index = torch.tensor([i for i, _ in items])
        flips = torch.tensor([f for _, f in items])
        return prepare_batch(data.batch(index, flips, dev), model_cfg, channels_last, masks=step >= tc.rec_steps)

    shown = min(4, len(data))
    fixed = prepare_batch(data.batch(torch.arange(shown), torch.zeros(shown, dtype=torch.bool), dev), model_cfg,
                          channels_last)
    rec_net, ref_net, disc_net = model.rec, model.ref, disc
    if cuda and tc.compile:
        rec_net, ref_net, disc_net = torch.compile(rec_net), torch.compile(ref_net), torch.compile(disc_net)
    rec_train = _wrap(rec_net, dev, ctx) if step < tc.rec_steps else None
    ref_train = disc_train = None

    def save(path: Path) -> None:
        save_checkpoint(path, model_config=model_cfg, recipe=recipe_to_dict(recipe), dataset=dataset_name,
                        world_size=ctx.world, step=step, stage="rec" if step <= tc.rec_steps else "ref",
                        rec=model.rec.state_dict(), ref=model.ref.state_dict(), disc=disc.state_dict(),
                        opt_rec=opt_rec.state_dict(), opt_ref=opt_ref.state_dict(), opt_disc=opt_disc.state_dict(),
                        rng=rng_state(), init_from=origin)

    nonfinite = torch.zeros((), device=dev)
    sums: dict[str, torch.Tensor] = {}
    wait, last_log, first = _WaitClock(dev), step, step
    sync_mode = os.environ.get("REID_AUGMENT_SYNC_DEBUG") if cuda else None
    bar = tqdm(total=end, initial=step, desc="train", unit="step", disable=not (progress and ctx.main),
               dynamic_ncols=True)
    tick = began = time.perf_counter()
    while step < end:
        with _sync_debug(sync_mode if step not in (first, tc.rec_steps) else None):
            with wait:
                batch = next_batch()
            if step < tc.rec_steps:
                losses = reconstruction_step(rec_train, opt_rec, batch, autocast)
            else:
                if ref_train is None:
                    # Freeze G_rec; train G_ref and D from here on. D's BatchNorm buffers stay per process
                    # (broadcast_buffers=False): D is always in train mode, so its running statistics are never
                    # used, and broadcasting them between its two forward calls breaks the backward on torch >= 2.6.
                    model.rec.requires_grad_(False).eval()
                    rec_train = None
                    ref_train = _wrap(ref_net, dev, ctx)
                    disc_train = _wrap(disc_net, dev, ctx, broadcast_buffers=False)
                with autocast():
                    with torch.no_grad():
                        coarse = coarse_image(rec_net, batch["src_img"], batch["src_maps"], batch["tgt_maps"])
                    refined = refined_image(ref_train, batch["src_img"], coarse, batch["tgt_maps"])
                losses = discriminator_step(disc_train, opt_disc, batch, refined, autocast)
                losses.update(generator_step(disc_net, opt_ref, batch, refined, recipe.loss, autocast))
            for key, value in losses.items():
                nonfinite = torch.maximum(nonfinite, (~torch.isfinite(value)).float())
                sums[key] = sums.get(key, 0.0) + value
        step += 1
        bar.update(1)
        stage_done = step in (tc.rec_steps, end)

        # The host waits for the GPU only from here on: at intervals, or when a single process is out of time
        # (processes agree on the time at intervals only, so that all stop at the same step).
        out_of_time = time_limit is not None and time.perf_counter() - began > time_limit
        if (step % tc.log_every == 0 or stage_done or step % tc.checkpoint_every == 0
                or (out_of_time and ctx.world == 1)):
            # One flag for all processes: every rank stops together, with the same message.
            bad, out_of_time = _any_rank(nonfinite, out_of_time, ctx)
            if bad:
                raise TrainingError(f"a loss became non-finite before step {step}; stopped. The last good "
                                    f"checkpoint is kept: {latest} (try a lower train.lr)")
        else:
            out_of_time = False
        if (step % tc.log_every == 0 or stage_done) and sums:
            count, last_log = step - last_log, step
            keys = sorted(sums)
            total = _all_reduce(torch.stack([torch.as_tensor(sums[k], device=dev) for k in keys]), ctx) / ctx.world
            means = {k: round(float(v) / count, 6) for k, v in zip(keys, total.tolist())}
            elapsed, tick = time.perf_counter() - tick, time.perf_counter()
            record = {"step": step, "stage": "rec" if step <= tc.rec_steps else "ref", **means,
                      "images_per_s": round(count * tc.batch_size / elapsed, 2),
                      "data_wait": round(wait.take() / elapsed, 3)}
            if cuda:  # Since the last line, so that a stage's lines give its own peak.
                record["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
                torch.cuda.reset_peak_memory_stats(dev)
            sums = {}
            bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})
            if ctx.main:
                with open(stats_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for key, value in record.items():
                        if key not in ("step", "stage"):
                            writer.add_scalar(key, value, step)
        model.refine = step > tc.rec_steps  # Samples and files of a reconstruction-stage model show its coarse image.
        if ctx.main and (step % tc.sample_every == 0 or stage_done):
            sheet = _sample_grid(model, fixed, model_cfg.image_size)
            save_png(run_dir / "samples" / f"step-{step:07d}.png", sheet)
            if writer is not None:
                writer.add_image("samples", sheet, step, dataformats="HWC")
        if ctx.main and checkpoints and (step % tc.checkpoint_every == 0 or stage_done):
            save(latest)
            if stage_done:
                save(run_dir / "checkpoints" / f"step-{step:07d}.pt")
                write_generator(model, run_dir / "checkpoints" / "generator.safetensors", step, recipe.name,
                                dataset_name)
        if out_of_time:
            if ctx.main and checkpoints and step % tc.checkpoint_every and not stage_done:
                save(latest)
            break
    bar.close()
    if writer is not None:
        writer.close()
    if ctx.world > 1:
        dist.barrier()
    return latest


def _warm_start(model: VDG, init_from: str | os.PathLike) -> str:
    """Load a donor generator into `model` (both stages); returns the donor's provenance for the checkpoint."""
    from .checkpoint import load_generator

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
