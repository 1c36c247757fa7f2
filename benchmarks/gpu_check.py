"""One prepared GPU check: what a lent CUDA device does with reid-augment, in <= 8 minutes, from the repo alone.

Measures and prints a table (and writes gpu_check.json to --out after every phase, so a time-out keeps what was
measured):
- the device's bf16 matmul peak (8192^3, measured);
- per training stage of the market1501 recipe (batch 16, the paper's), eager and with torch.compile: step
  time, images/s, data-wait share (the GPU's time between CUDA events around the batch call, from train's
  stats.jsonl), peak memory, and MFU (FLOPs per step counted with torch's FlopCounterMode on the loop's own step
  functions, against the card's nominal dense bf16 peak, and against the measured matmul peak);
- generation end to end against the bare generator forward pass at the same batch (256);
- bf16 against float32 (TF32 off) losses over the same 50 steps (25 per stage) from the same seed.

Each phase has a deadline (DEADLINES): the training phases stop there (train's time_limit), the others are bounded
by their size, and a phase whose deadline no longer fits the 8 minutes is skipped. The runs write no checkpoints
(the market1501 model's would be GBs per run dir).

Training data: the bundled sample (116 real 128x64 CUHK03 crops), or --images/--poses for carried data.

Usage:
  python -m benchmarks.gpu_check --out $OUT                 # on a CUDA machine
  python -m benchmarks.gpu_check --device cpu --quick --out /tmp/check   # the same code paths, tiny and short
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from benchmarks.bench_generate import bare_forward_rate
from reid_augment.config import GenerateConfig, PairConfig, load_recipe
from reid_augment.data import load_training_data
from reid_augment.generate import generate
from reid_augment.networks import VDG, Discriminator, coarse_image, refined_image
from reid_augment.pairs import build_pairs, read_pair_file, save_pair_set
from reid_augment.poses import read_poses
from reid_augment.device import describe, resolve_device
from reid_augment.fileio import atomic_write_text
from reid_augment.train import discriminator_step, generator_step, prepare_batch, reconstruction_step, train


SAMPLE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample" / "cuhk03"
# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s).
NOMINAL_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12,
                "A10G": 70e12, "L4": 121e12, "RTX 4090": 165e12}
BUDGET_S = 480  # The whole check, from the start of main().
# Seconds per phase, in the order they run (the least certain last): 440 s, and the rest for setup.
DEADLINES = {"matmul_peak": 20, "flops": 30, "train_eager": 90, "generate": 60, "bf16_vs_fp32": 90,
             "train_compile": 150}


def nominal_peak(name: str) -> float | None:
    return next((v for k, v in NOMINAL_BF16.items() if k in name), None)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def matmul_peak(dev: torch.device, n: int, iters: int) -> float:
    """Measured FLOP/s of a bf16 (CUDA) or fp32 (CPU) n x n matmul."""
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    a @ b
    sync(dev)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(dev)
    return 2 * n**3 * iters / (time.perf_counter() - start)


def count_flops(fn) -> int:
    """FLOPs of fn() as torch's FlopCounterMode counts them: matrix products and convolutions, forward and
    backward (the MFU convention); elementwise work (activations, losses, Adam) is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def step_flops(recipe, data, dev: torch.device) -> dict[str, float]:
    """FLOPs of one training step of each stage at the recipe's batch, counted on the loop's step functions."""
    cfg, batch_size = recipe.model, recipe.train.batch_size
    model, disc = VDG(cfg).to(dev), Discriminator(cfg.disc_channels, cfg.disc_levels, cfg.image_size).to(dev)
    opt = torch.optim.Adam(list(model.parameters()) + list(disc.parameters()), 1e-9)
    index = torch.arange(batch_size) % len(data)
    batch = prepare_batch(data.batch(index, torch.zeros(batch_size, dtype=torch.bool), dev), cfg, False)

    def refinement_step() -> None:
        with torch.no_grad():
            coarse = coarse_image(model.rec, batch["src_img"], batch["src_maps"], batch["tgt_maps"],
                             batch.get("flow"))
        refined = refined_image(model.ref, batch["src_img"], coarse, batch["tgt_maps"])
        discriminator_step(disc, opt, batch, refined, nullcontext)
        generator_step(disc, opt, batch, refined, recipe.loss, nullcontext)

    return {"rec": count_flops(lambda: reconstruction_step(model.rec, opt, batch, nullcontext)),
            "ref": count_flops(refinement_step)}


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def train_stages(images, work: Path, recipe_name: str, overrides: list[str], warm: int, steps: int,
                 dev: torch.device, run: Path, deadline: float) -> tuple[dict, object]:
    """Train `warm + steps` steps of each stage in one run, stopping at `deadline` seconds; per stage, the figures
    of its timed steps, or why there are none."""
    # log_every = warm: the first line of a stage covers the warm-up (and compilation), the others the timed steps;
    # train logs each line's peak memory, so a stage's lines give its own.
    recipe = load_recipe(recipe_name, [f"train.rec_steps={warm + steps}", f"train.ref_steps={warm + steps}",
                                       f"train.log_every={warm}", "train.sample_every=1000000",
                                       "train.checkpoint_every=1000000", *overrides])
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    train(images, recipe, run, work / "pairs-train.csv", work / "poses.csv", device=str(dev), progress=False,
          time_limit=max(deadline - 15, 1), checkpoints=False)
    out: dict = {"wall_s": round(time.perf_counter() - start, 1)}
    records = _records(run)
    for stage in ("rec", "ref"):
        lines = [r for r in records if r["stage"] == stage]
        timed = lines[1:]
        if not timed:
            out[stage] = f"stopped at its {deadline} s deadline after {len(lines) * warm} steps of this stage"
            continue
        rate = len(timed) / sum(1 / r["images_per_s"] for r in timed)  # Equal step counts: harmonic mean.
        out[stage] = {"images_per_s": round(rate, 2), "timed_steps": len(timed) * warm,
                      "data_wait": round(sum(r["data_wait"] for r in timed) / len(timed), 3),
                      "step_ms": round(1000 * recipe.train.batch_size / rate, 2),
                      "peak_memory_gib": max(r["peak_memory_gib"] for r in lines) if dev.type == "cuda" else None}
    return out, recipe


@contextmanager
def float32_without_tf32():
    """True float32 matrix products and convolutions inside (cuDNN allows TF32 by default): a float32 arm that is."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def losses_bf16_vs_fp32(images, work: Path, recipe_name: str, steps: int, dev: torch.device, tmp: Path,
                        deadline: float) -> dict:
    """The same `steps` steps per stage from one seed in bf16 and in float32 (TF32 off): the loss curves side by
    side, each arm stopping at half the deadline."""
    curves = {}
    for amp in (True, False):
        recipe = load_recipe(recipe_name, [f"train.rec_steps={steps}", f"train.ref_steps={steps}", "train.log_every=1",
                                           f"train.amp={str(amp).lower()}", "train.sample_every=1000000",
                                           "train.checkpoint_every=1000000"])
        run = tmp / f"amp-{amp}"
        with nullcontext() if amp else float32_without_tf32():
            train(images, recipe, run, work / "pairs-train.csv", work / "poses.csv", device=str(dev), progress=False,
                  time_limit=max(deadline / 2 - 10, 1), checkpoints=False)
        curves["bf16" if amp else "fp32"] = _records(run)
    out = {}
    for key in ("rec_l1", "d", "g_img", "g_adv"):
        a = [r[key] for r in curves["bf16"] if key in r]
        b = [r[key] for r in curves["fp32"] if key in r]
        rel = [abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b)]
        if rel:
            out[key] = {"bf16_last": a[len(rel) - 1], "fp32_last": b[len(rel) - 1], "steps": len(rel),
                        "mean_rel_diff": round(sum(rel) / len(rel), 4)}
    return out


class Phases:
    """The check's phases against one budget, gpu_check.json rewritten after each: a time-out keeps what was
    measured. A phase that fails is recorded with its error and the others still run."""

    def __init__(self, report: dict, out: Path, budget: float):
        self.report, self.path, self.end = report, out / "gpu_check.json", time.perf_counter() + budget
        self.failed = False
        report["phases"] = {}
        out.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn) -> None:
        """fn(deadline seconds) fills the report; skipped when DEADLINES[name] no longer fits the budget."""
        deadline, left = DEADLINES[name], self.end - time.perf_counter()
        start = time.perf_counter()
        if left < deadline:
            status = f"skipped: {left:.0f} s of the budget left, its deadline is {deadline} s"
        else:
            try:
                fn(deadline)
                status = "done"
            except Exception as err:  # noqa: BLE001 (a lent device's minutes: measure the rest anyway)
                status, self.failed = f"failed: {type(err).__name__}: {err}", True
        self.report["phases"][name] = {"status": status, "seconds": round(time.perf_counter() - start, 1),
                                       "deadline_s": deadline}
        atomic_write_text(self.path, json.dumps(self.report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="Tiny recipe, a few steps: checks the script itself.")
    parser.add_argument("--images", type=Path, default=SAMPLE, help="Training images (default: the bundled sample).")
    parser.add_argument("--poses", type=Path, help="Their pose CSV (default: the sample's annotations).")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="Folder for gpu_check.json.")
    args = parser.parse_args()
    t0 = time.perf_counter()
    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    quick = args.quick or not cuda
    name = describe(dev)
    recipe_name = "tiny" if quick else "market1501"
    warm, steps = (1, 2) if quick else (20, 60)  # steps: a multiple of warm.
    gen_batch, per_id = (16, 2) if quick else (256, 100)
    report: dict = {"device": name, "torch": torch.__version__, "recipe": recipe_name, "quick": quick,
                    "data": str(args.images), "budget_s": BUDGET_S}
    phases = Phases(report, args.out, BUDGET_S)
    base = load_recipe(recipe_name)
    measured: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        poses = args.poses or args.images / "annotations.csv"
        save_pair_set(tmp, build_pairs(read_poses(poses), PairConfig()), PairConfig())

        def peak_phase(deadline: float) -> None:
            measured["peak"] = matmul_peak(dev, 1024 if quick else 8192, 3 if quick else 50)
            report["matmul_peak_tflops"] = round(measured["peak"] / 1e12, 2)
            report["nominal_bf16_tflops"] = nominal_peak(name) and round(nominal_peak(name) / 1e12) if cuda else None

        def flops_phase(deadline: float) -> None:
            data = load_training_data(read_pair_file(tmp / "pairs-train.csv"), read_poses(tmp / "poses.csv"),
                                      {p.name: str(p) for p in args.images.glob("*.jpg")}, base.model.image_size,
                                      progress=False).to(dev)
            measured["flops"] = step_flops(base, data, dev)
            report["gflop_per_image"] = {k: round(v / base.train.batch_size / 1e9, 2)
                                         for k, v in measured["flops"].items()}

        def train_phase(compiled: bool, deadline: float) -> None:
            figures, _ = train_stages(args.images, tmp, recipe_name, [f"train.compile={str(compiled).lower()}"],
                                      warm, steps, dev, tmp / f"run-compile-{compiled}", deadline)
            for stage in ("rec", "ref"):
                fig = figures[stage]
                if isinstance(fig, dict) and "flops" in measured:
                    achieved = measured["flops"][stage] / (fig["step_ms"] / 1000)
                    nominal = nominal_peak(name) if cuda else None
                    fig["tflops"] = round(achieved / 1e12, 2)
                    fig["mfu_nominal"] = round(achieved / nominal, 3) if nominal else None
                    fig["mfu_measured_peak"] = round(achieved / measured["peak"], 3) if "peak" in measured else None
            report.setdefault("train", {})["compile" if compiled else "eager"] = figures
            paper_schedule(report, base)

        def generate_phase(deadline: float) -> None:
            report["generate"] = generation_rate(args.images, poses, base, gen_batch, per_id, dev, tmp)

        def precision_phase(deadline: float) -> None:
            report["bf16_vs_fp32"] = (losses_bf16_vs_fp32(args.images, tmp, recipe_name, 25, dev, tmp, deadline)
                                      if cuda else "skipped: bf16 autocast runs on CUDA only")

        phases.run("matmul_peak", peak_phase)
        phases.run("flops", flops_phase)
        phases.run("train_eager", lambda deadline: train_phase(False, deadline))
        phases.run("generate", generate_phase)
        phases.run("bf16_vs_fp32", precision_phase)
        if not quick:
            phases.run("train_compile", lambda deadline: train_phase(True, deadline))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(phases.path, json.dumps(report, indent=2))
    print(table(report))
    sys.exit(1 if phases.failed else 0)


def paper_schedule(report: dict, base) -> None:
    """The paper's schedule at the best step times measured so far, once both stages have one."""
    timed = [stages for stages in report.get("train", {}).values()]
    best = {s: min((v[s]["step_ms"] for v in timed if isinstance(v[s], dict)), default=None) for s in ("rec", "ref")}
    if None not in best.values():
        report["paper_steps"] = base.train.rec_steps + base.train.ref_steps
        report["paper_schedule_minutes"] = round((best["rec"] * base.train.rec_steps
                                                  + best["ref"] * base.train.ref_steps) / 60000, 1)


def generation_rate(images: Path, poses: Path, base, gen_batch: int, per_id: int, dev: torch.device,
                    tmp: Path) -> dict:
    """`generate` end to end against the bare generator forward pass, same (untrained) model and batch."""
    from reid_augment.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = VDG(base.model).eval()
    ckpt = tmp / "gen.pt"
    save_checkpoint(ckpt, model_config=base.model, step=0, rec=model.rec.state_dict(), ref=model.ref.state_dict())
    count = len({p.name[:4] for p in images.glob("*.jpg")}) * per_id
    bare = bare_forward_rate(model.to(dev), base.model.image_size, gen_batch, dev, max(1, count // gen_batch))
    cuda = dev.type == "cuda"
    cfg = GenerateConfig(per_id=per_id, batch_size=gen_batch, num_workers=4 if cuda else 0, score=False)
    generate(images, ckpt, poses, tmp / "warm", GenerateConfig(per_id=1, batch_size=gen_batch, num_workers=0,
                                                               score=False), device=str(dev), progress=False)
    start = time.perf_counter()
    result = generate(images, ckpt, poses, tmp / "gen", cfg, device=str(dev), progress=False)
    end_to_end = result.generated / (time.perf_counter() - start)
    return {"batch_size": gen_batch, "images": result.generated, "end_to_end_images_per_s": round(end_to_end, 1),
            "bare_forward_images_per_s": round(bare, 1), "ratio": round(end_to_end / bare, 3)}


def table(r: dict) -> str:
    """The report as a Markdown table; what a phase did not measure shows as its status."""
    lines = [f"gpu_check on {r['device']}, torch {r['torch']}, recipe {r['recipe']}{' (quick)' if r['quick'] else ''}, "
             f"{r['seconds']} s", "", "| measure | figure |", "|---|---|"]
    for phase, info in r["phases"].items():
        if info["status"] != "done":
            lines.append(f"| {phase} | {info['status']} |")
    if "matmul_peak_tflops" in r:
        lines += [f"| matmul peak (measured) | {r['matmul_peak_tflops']} TFLOP/s |",
                  f"| nominal bf16 peak | {r['nominal_bf16_tflops'] or 'unknown'} TFLOP/s |"]
    if "gflop_per_image" in r:
        g = r["gflop_per_image"]
        lines.append(f"| FLOPs per training image | rec {g['rec']} GFLOP, ref {g['ref']} GFLOP |")
    for variant, stages in r.get("train", {}).items():
        for stage in ("rec", "ref"):
            f = stages[stage]
            if not isinstance(f, dict):
                lines.append(f"| train {stage} ({variant}) | {f} |")
                continue
            mfu = f"{f['mfu_nominal']:.1%} of nominal" if f.get("mfu_nominal") else "nominal unknown"
            measured = f", {f['mfu_measured_peak']:.1%} of measured" if f.get("mfu_measured_peak") else ""
            memory = f", peak {f['peak_memory_gib']} GiB" if f["peak_memory_gib"] is not None else ""
            lines.append(f"| train {stage} ({variant}) | {f['step_ms']} ms/step, {f['images_per_s']} images/s, data "
                         f"wait {f['data_wait']:.1%}{memory}, {f.get('tflops')} TFLOP/s = {mfu}{measured} |")
    if "paper_schedule_minutes" in r:
        lines.append(f"| paper schedule ({r['paper_steps']} steps) at the best step times | "
                     f"{r['paper_schedule_minutes']} min |")
    if "generate" in r:
        g = r["generate"]
        lines.append(f"| generate, batch {g['batch_size']} | {g['end_to_end_images_per_s']} images/s end to end, "
                     f"bare forward {g['bare_forward_images_per_s']}: {g['ratio']:.0%} |")
    if isinstance(r.get("bf16_vs_fp32"), dict):
        for key, v in r["bf16_vs_fp32"].items():
            lines.append(f"| bf16 vs fp32 (TF32 off) {key} | after {v['steps']} steps {v['bf16_last']} vs "
                         f"{v['fp32_last']}, mean relative gap {v['mean_rel_diff']:.1%} |")
    elif "bf16_vs_fp32" in r:
        lines.append(f"| bf16 vs fp32 | {r['bf16_vs_fp32']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
