"""One prepared GPU check: what a lent CUDA device does with reid-augment, in <= 8 minutes, from the repo alone.

Measures and prints a table (and writes gpu_check.json to --out):
- the device's bf16 matmul peak (8192^3, measured);
- per training stage of the market1501 recipe (batch 16, the paper's), with and without torch.compile: step
  time, images/s, data-wait share, peak memory, and MFU (FLOPs per step counted with torch's FlopCounterMode on
  the loop's own step functions, against the card's nominal dense bf16 peak, and against the measured matmul peak);
- generation end to end against the bare generator forward pass at the same batch (256);
- bf16 against fp32 losses over the same 50 steps (25 per stage) from the same seed.

Training data: the bundled sample (116 real 128x64 CUHK03 crops), or --images/--poses for carried data.

Usage:
  python benchmarks/gpu_check.py --out $OUT                 # on a CUDA machine
  python benchmarks/gpu_check.py --device cpu --quick --out /tmp/check   # the same code paths, tiny and short
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from reid_augment.config import GenerateConfig, PairConfig, load_recipe
from reid_augment.data import load_training_data
from reid_augment.generate import generate
from reid_augment.networks import VDG, Discriminator, coarse_image, refined_image
from reid_augment.pairs import build_pairs, read_pair_file, save_pair_set
from reid_augment.poses import read_poses
from reid_augment.device import resolve_device
from reid_augment.train import _prepare, discriminator_step, generator_step, reconstruction_step, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import bare_forward_rate  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample" / "cuhk03"
# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s).
NOMINAL_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12,
                "A10G": 70e12, "L4": 121e12, "RTX 4090": 165e12}


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


def step_flops(recipe, data, dev: torch.device) -> dict[str, float]:
    """FLOPs of one training step of each stage at the recipe's batch, counted on the loop's step functions."""
    from contextlib import nullcontext

    from torch.utils.flop_counter import FlopCounterMode

    cfg, batch_size = recipe.model, recipe.train.batch_size
    model, disc = VDG(cfg).to(dev), Discriminator(cfg.disc_channels, cfg.disc_levels, cfg.image_size).to(dev)
    opt = torch.optim.Adam(list(model.parameters()) + list(disc.parameters()), 1e-9)
    index = torch.arange(batch_size) % len(data)
    batch = _prepare(data.batch(index, torch.zeros(batch_size, dtype=torch.bool), dev), cfg, False)
    out = {}
    with FlopCounterMode(display=False) as counter:
        reconstruction_step(model.rec, opt, batch, nullcontext)
    out["rec"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            coarse = coarse_image(model.rec, batch["src_img"], batch["src_maps"], batch["tgt_maps"])
        refined = refined_image(model.ref, batch["src_img"], coarse, batch["tgt_maps"])
        discriminator_step(disc, opt, batch, refined, nullcontext)
        generator_step(disc, opt, batch, refined, recipe.loss, nullcontext)
    out["ref"] = counter.get_total_flops()
    return out


def train_stages(images, work: Path, recipe_name: str, overrides: list[str], warm: int, steps: int,
                 dev: torch.device, run: Path) -> dict[str, dict]:
    """Train `warm + steps` steps of each stage (separately, for per-stage peak memory); figures of the timed steps."""
    # log_every = warm: the first line of a stage covers the warm-up (and compilation), the others the timed steps.
    recipe = load_recipe(recipe_name, [f"train.rec_steps={warm + steps}", f"train.ref_steps={warm + steps}",
                                       f"train.log_every={warm}", "train.sample_every=1000000",
                                       "train.checkpoint_every=1000000", *overrides])
    out = {}
    for stage in ("rec", "ref"):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        start = time.perf_counter()
        train(images, recipe, run, work / "pairs-train.csv", work / "poses.csv", stage=stage, device=str(dev),
              progress=False)
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
        timed = [r for r in records if r["stage"] == stage][1:]
        rate = len(timed) / sum(1 / r["images_per_s"] for r in timed)  # Equal step counts: harmonic mean.
        out[stage] = {"images_per_s": round(rate, 2), "data_wait": round(sum(r["data_wait"] for r in timed) / len(timed), 3),
                      "step_ms": round(1000 * recipe.train.batch_size / rate, 2),
                      "peak_memory_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
                      if dev.type == "cuda" else None, "wall_s": round(wall, 1)}
    return out, recipe


def losses_bf16_vs_fp32(images, work: Path, recipe_name: str, steps: int, dev: torch.device, tmp: Path) -> dict:
    """The same `steps` steps per stage from one seed in bf16 and in fp32: the loss curves side by side."""
    curves = {}
    for amp in (True, False):
        recipe = load_recipe(recipe_name, [f"train.rec_steps={steps}", f"train.ref_steps={steps}", "train.log_every=1",
                                           f"train.amp={str(amp).lower()}", "train.sample_every=1000000",
                                           "train.checkpoint_every=1000000"])
        run = tmp / f"amp-{amp}"
        train(images, recipe, run, work / "pairs-train.csv", work / "poses.csv", device=str(dev), progress=False)
        curves["bf16" if amp else "fp32"] = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    out = {}
    for key in ("rec_l1", "d", "g_img", "g_adv"):
        a = [r[key] for r in curves["bf16"] if key in r]
        b = [r[key] for r in curves["fp32"] if key in r]
        rel = [abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b)]
        out[key] = {"bf16_last": a[-1], "fp32_last": b[-1], "mean_rel_diff": round(sum(rel) / len(rel), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="Tiny recipe, a few steps: checks the script itself.")
    parser.add_argument("--images", type=Path, default=SAMPLE, help="Training images (default: the bundled sample).")
    parser.add_argument("--poses", type=Path, help="Their pose CSV (default: the sample's annotations).")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="Folder for gpu_check.json.")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    quick = args.quick or not cuda
    name = torch.cuda.get_device_name(dev) if cuda else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    recipe_name = "tiny" if quick else "market1501"
    warm, steps = (1, 2) if quick else (20, 60)  # steps: a multiple of warm.
    gen_batch, per_id = (16, 2) if quick else (256, 100)
    report: dict = {"device": name, "torch": torch.__version__, "recipe": recipe_name, "quick": quick,
                    "data": str(args.images)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        poses = args.poses or args.images / "annotations.csv"
        save_pair_set(tmp, build_pairs(read_poses(poses), PairConfig()), PairConfig())
        peak = matmul_peak(dev, 1024 if quick else 8192, 3 if quick else 50)
        nominal = nominal_peak(name) if cuda else None
        report["matmul_peak_tflops"] = round(peak / 1e12, 2)
        report["nominal_bf16_tflops"] = nominal and round(nominal / 1e12)

        base = load_recipe(recipe_name)
        data = load_training_data(read_pair_file(tmp / "pairs-train.csv"), read_poses(tmp / "poses.csv"),
                                  {p.name: str(p) for p in args.images.glob("*.jpg")}, base.model.image_size,
                                  progress=False).to(dev)
        flops = step_flops(base, data, dev)
        report["gflop_per_image"] = {k: round(v / base.train.batch_size / 1e9, 2) for k, v in flops.items()}
        report["train"] = {}
        for compiled in ((False,) if quick else (False, True)):
            figures, recipe = train_stages(args.images, tmp, recipe_name, [f"train.compile={str(compiled).lower()}"],
                                           warm, steps, dev, tmp / f"run-compile-{compiled}")
            for stage, fig in figures.items():
                achieved = flops[stage] / (fig["step_ms"] / 1000)
                fig["tflops"] = round(achieved / 1e12, 2)
                fig["mfu_nominal"] = round(achieved / nominal, 3) if nominal else None
                fig["mfu_measured_peak"] = round(achieved / peak, 3)
            report["train"]["compile" if compiled else "eager"] = figures
        paper_steps = base.train.rec_steps + base.train.ref_steps
        best = {s: min(report["train"][v][s]["step_ms"] for v in report["train"]) for s in ("rec", "ref")}
        report["paper_schedule_minutes"] = round((best["rec"] * base.train.rec_steps
                                                  + best["ref"] * base.train.ref_steps) / 60000, 1)
        report["paper_steps"] = paper_steps

        torch.manual_seed(0)
        model = VDG(base.model).eval()
        from reid_augment.checkpoint import save_checkpoint

        ckpt = tmp / "gen.pt"
        save_checkpoint(ckpt, model_config=base.model, step=0, rec=model.rec.state_dict(), ref=model.ref.state_dict())
        count = len({p.name[:4] for p in args.images.glob("*.jpg")}) * per_id
        bare = bare_forward_rate(model.to(dev), base.model.image_size, gen_batch, dev, max(1, count // gen_batch))
        cfg = GenerateConfig(per_id=per_id, batch_size=gen_batch, num_workers=4 if cuda else 0, score=False)
        generate(args.images, ckpt, poses, tmp / "warm", GenerateConfig(per_id=1, batch_size=gen_batch, num_workers=0, score=False),
                 device=str(dev), progress=False)
        start = time.perf_counter()
        result = generate(args.images, ckpt, poses, tmp / "gen", cfg, device=str(dev), progress=False)
        end_to_end = result.generated / (time.perf_counter() - start)
        report["generate"] = {"batch_size": gen_batch, "images": result.generated,
                              "end_to_end_images_per_s": round(end_to_end, 1), "bare_forward_images_per_s": round(bare, 1),
                              "ratio": round(end_to_end / bare, 3)}
        report["bf16_vs_fp32"] = (losses_bf16_vs_fp32(args.images, tmp, recipe_name, 25, dev, tmp) if cuda
                                  else "skipped: bf16 autocast runs on CUDA only")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(table(report))


def table(r: dict) -> str:
    lines = [f"gpu_check on {r['device']}, torch {r['torch']}, recipe {r['recipe']}{' (quick)' if r['quick'] else ''}, "
             f"{r['seconds']} s", "", "| measure | figure |", "|---|---|",
             f"| matmul peak (measured) | {r['matmul_peak_tflops']} TFLOP/s |",
             f"| nominal bf16 peak | {r['nominal_bf16_tflops'] or 'unknown'} TFLOP/s |",
             f"| FLOPs per training image | rec {r['gflop_per_image']['rec']} GFLOP, ref {r['gflop_per_image']['ref']} GFLOP |"]
    for variant, stages in r["train"].items():
        for stage, f in stages.items():
            mfu = f"{f['mfu_nominal']:.1%} of nominal" if f["mfu_nominal"] else "nominal unknown"
            memory = f", peak {f['peak_memory_gib']} GiB" if f["peak_memory_gib"] is not None else ""
            lines.append(f"| train {stage} ({variant}) | {f['step_ms']} ms/step, {f['images_per_s']} images/s, data wait "
                         f"{f['data_wait']:.1%}{memory}, {f['tflops']} TFLOP/s = {mfu}, "
                         f"{f['mfu_measured_peak']:.1%} of measured |")
    lines.append(f"| paper schedule ({r['paper_steps']} steps) at the best step times | {r['paper_schedule_minutes']} min |")
    g = r["generate"]
    lines.append(f"| generate, batch {g['batch_size']} | {g['end_to_end_images_per_s']} images/s end to end, bare forward "
                 f"{g['bare_forward_images_per_s']}: {g['ratio']:.0%} |")
    if isinstance(r["bf16_vs_fp32"], dict):
        for key, v in r["bf16_vs_fp32"].items():
            lines.append(f"| bf16 vs fp32 {key} | last {v['bf16_last']} vs {v['fp32_last']}, mean relative gap "
                         f"{v['mean_rel_diff']:.1%} |")
    else:
        lines.append(f"| bf16 vs fp32 | {r['bf16_vs_fp32']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
