"""Benchmark scripts: the prepared GPU check runs end to end (here in its CPU quick mode), so it is ready when a device
is lent; the re-ID table pairs each manifest with the shared baseline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_quick_mode_on_cpu(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["quick"] and report["recipe"] == "tiny" and report["matmul_peak_tflops"] > 0
    for stage in ("rec", "ref"):
        figures = report["train"]["eager"][stage]
        assert figures["images_per_s"] > 0 and 0 < figures["data_wait"] < 1 and 0 < figures["mfu_measured_peak"]
        assert report["gflop_per_image"][stage] > 0
    assert report["generate"]["images"] == 24 and 0 < report["generate"]["ratio"]
    assert "| train rec (eager) |" in done.stdout and "| generate, batch 16 |" in done.stdout
    assert {name: p["status"] for name, p in report["phases"].items()} == dict.fromkeys(
        ("matmul_peak", "flops", "train_eager", "generate", "bf16_vs_fp32"), "done")


def _gpu_check():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    return gpu_check


def test_flop_count_matches_a_hand_count():
    """What gpu_check's MFU divides by: matmuls and convolutions, forward and backward, nothing else."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 5))
    opt = torch.optim.Adam(net.parameters())
    x = torch.randn(2, 3, 8, 8)

    def step():
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()

    conv1 = 2 * 2 * 4 * 8 * 8 * 3 * 3 * 3  # 2 FLOPs per multiply-add: batch, out channels, pixels, in channels, 3x3.
    conv2 = 2 * 2 * 2 * 8 * 8 * 4 * 3 * 3
    linear = 2 * 2 * 128 * 5
    # Backward: the weight gradient of each layer costs its forward again, the input gradient too, except for the
    # first layer, whose input needs none.
    assert _gpu_check().count_flops(step) == 2 * conv1 + 3 * conv2 + 3 * linear == 118272


def test_data_wait_is_the_share_of_a_step_spent_making_its_batch(tmp_path, monkeypatch, cuhk_dir):
    """A batch call made 50 ms slower shows as >= 50 ms of data wait per step, and the model's work does not."""
    import time

    from reid_augment.config import PairConfig
    from reid_augment.data import TrainingData
    from reid_augment.pairs import build_pairs, save_pair_set
    from reid_augment.poses import read_poses

    gpu_check = _gpu_check()
    save_pair_set(tmp_path, build_pairs(read_poses(cuhk_dir / "annotations.csv"), PairConfig()), PairConfig())
    real_batch = TrainingData.batch
    monkeypatch.setattr(TrainingData, "batch", lambda *args: (time.sleep(0.05), real_batch(*args))[1])
    figures, _ = gpu_check.train_stages(cuhk_dir, tmp_path, "tiny", [], 1, 2, gpu_check.resolve_device("cpu"),
                                        tmp_path / "run", deadline=120)
    for stage in ("rec", "ref"):
        f = figures[stage]
        assert f["data_wait"] * f["step_ms"] >= 50 - 1, (stage, f)
        assert f["data_wait"] < 0.95, (stage, f)  # The forward and backward passes are not counted as data.
    assert not (tmp_path / "run" / "checkpoints").exists() or not list((tmp_path / "run" / "checkpoints").iterdir())


def test_phases_write_the_report_after_each_and_skip_what_no_longer_fits(tmp_path, monkeypatch):
    gpu_check = _gpu_check()
    monkeypatch.setattr(gpu_check, "DEADLINES", {"a": 1, "b": 1, "c": 1000})
    report = {}
    phases = gpu_check.Phases(report, tmp_path, budget=60)
    seen = []

    def a(deadline):
        report["a"] = deadline

    def b(deadline):
        seen.append(json.loads((tmp_path / "gpu_check.json").read_text()))  # a's result is already on disk.
        raise RuntimeError("out of memory")

    phases.run("a", a)
    phases.run("b", b)
    phases.run("c", lambda deadline: report.update(c=True))
    assert seen[0]["a"] == 1 and seen[0]["phases"]["a"]["status"] == "done"
    written = json.loads((tmp_path / "gpu_check.json").read_text())
    assert written["phases"]["b"]["status"] == "failed: RuntimeError: out of memory" and phases.failed
    skipped = written["phases"]["c"]["status"]
    assert skipped.startswith("skipped: ") and skipped.endswith("its deadline is 1000 s") and "c" not in written


def _bench(folder: Path, baseline_maps: list[float], augmented_maps: list[float]) -> Path:
    """A reid-benchmark metrics.json with the given mAP per seed (other metrics follow it)."""
    def arm(value, generated, seed):
        return {"rank1": value / 2, "rank5": value, "mAP": value, "mINP": value / 4, "train_images": 100,
                "generated_images": generated, "train_seconds": 60.0, "history": [{"step": 1, "mAP": value, "s": seed}]}
    runs = {str(s): {"baseline": arm(b, 0, s), "augmented": arm(a, 40, s)}
            for s, (b, a) in enumerate(zip(baseline_maps, augmented_maps))}
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"seeds": list(range(len(baseline_maps))), "runs": runs}))
    return folder


def test_reid_table_pairs_each_manifest_with_the_shared_baseline(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reid_table

    first = _bench(tmp_path / "a", [0.30, 0.34, 0.32], [0.31, 0.36, 0.32])
    second = _bench(tmp_path / "b", [0.30, 0.34, 0.32], [0.29, 0.33, 0.35])
    text = reid_table.table([first, second], ["ungated", "gated"])
    assert "| baseline | 100 (0) | 16.0% ± 1.0 | 32.0% ± 2.0 | 32.0% ± 2.0 | 8.0% ± 0.5 | 1.0 / 1.0 / 1.0 | |" in text
    # Paired: (+1, +2, 0) points has mean +1.0 and sd 1.0; (-1, -1, +3) has mean +0.3 and sd 2.3.
    assert "| ungated minus baseline (paired) | | +0.5 ± 0.5 | +1.0 ± 1.0 | +1.0 ± 1.0 |" in text
    # Mean +1.0, sd 1.0, n 3: t(0.975, 2) = 4.303 gives +-2.5; detectable (4.303 + 1.061) / sqrt(3) = 3.1.
    assert "(95% CI -1.5 to +3.5, n = 3; detectable 3.1) |" in text
    assert "| gated minus baseline (paired) | | +0.2 ± 1.2 | +0.3 ± 2.3 | +0.3 ± 2.3 |" in text
    assert "Seeds 0, 1, 2." in text
    fewer = _bench(tmp_path / "d", [0.30, 0.34], [0.29, 0.33])  # A folder with fewer seeds: the seeds both ran.
    assert "Seeds 0, 1." in reid_table.table([first, fewer], ["a", "d"])
    other = _bench(tmp_path / "c", [0.31, 0.34, 0.32], [0.3, 0.3, 0.3])  # Not the same baseline: refused.
    with pytest.raises(SystemExit, match="not .*'s; run it with --baseline-from"):
        reid_table.table([first, other], ["a", "c"])


def test_reid_settings_types_each_set_as_its_field():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reid_settings
    from reid_augment.errors import InputError

    cfg = reid_settings.parse_sets(["lr=3e-3", "steps=2400", "seeds=[0, 1]", "model=osnet_x0_25"], device="cpu")
    assert (cfg.lr, cfg.steps, cfg.seeds, cfg.model, cfg.device) == (3e-3, 2400, (0, 1), "osnet_x0_25", "cpu")
    with pytest.raises(InputError, match="unknown key 'step'"):
        reid_settings.parse_sets(["step=10"])
    with pytest.raises(InputError, match="expected int"):
        reid_settings.parse_sets(["batch_size=big"])


def _arm(folder: Path, pairs: Path, pckh: float, rec_l1: list[float], per_pair=(0.5, 0.5)) -> Path:
    from safetensors.torch import save_file
    import torch

    (folder / "report").mkdir(parents=True)
    (folder / "run").mkdir()
    save_file({"w": torch.zeros(1)}, str(folder / "g.safetensors"), metadata={"command": f"python q.py --out {folder.name}"})
    scores = {"ssim": 0.2, "mask_ssim": 0.8, "pckh": pckh}
    (folder / "quality_run.json").write_text(json.dumps(
        {"steps": [300, 0], "train_minutes": 30.0, "model": scores, "generator": str(folder / "g.safetensors"),
         "data": str(pairs.parent)}))
    (folder / "report" / "metrics.json").write_text(json.dumps(
        {"pairs": str(pairs), "num_pairs": 2, "baseline": {"ssim": 0.1, "mask_ssim": 0.7, "pckh": 0.3},
         "real_target": {"pckh": 0.7}}))
    (folder / "report" / "pairs.csv").write_text(
        "from,to,pckh\n" + "".join(f"a.jpg,{t},{p}\n" for t, p in zip(("b.jpg", "c.jpg"), per_pair)))
    lines = [{"step": 50 * (i + 1), "stage": "rec", "rec_l1": v} for i, v in enumerate(rec_l1)]
    lines.append({"step": 50 * (len(rec_l1) + 1), "stage": "ref", "rec_l1": 9.0})  # Not the reconstruction stage.
    (folder / "run" / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


def test_design_ab_puts_arms_scored_on_the_same_pairs_in_one_table(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import design_ab
    from reid_augment.poses import PoseTable, write_poses

    # Target b has all 18 joints, target c 6 (its head box and four more): pooled PCKh weighs b three times c.
    full = np.tile(np.array([[10.0, 10.0]]), (18, 1)) + np.arange(18)[:, None]
    part = full.copy()
    part[[2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]] = -1
    write_poses(tmp_path / "annotations-test.csv", PoseTable.from_arrays(["b.jpg", "c.jpg"], [full, part]))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("from,to\na.jpg,b.jpg\na.jpg,c.jpg\n")
    a = _arm(tmp_path / "a", pairs, 0.40, [0.5, 0.4, 0.3, 0.3, 0.3])  # The last 4 reconstruction lines: 0.325.
    b = _arm(tmp_path / "b", pairs, 0.35, [0.2], per_pair=(1.0, 0.5))  # +0.5 on b's 18 joints: +9 / 24 pooled.
    text = design_ab.table([a, b])
    assert "| a | 300 + 0 | 30.0 | 0.3250 | 0.200 | 0.800 | 0.400 | - |" in text
    assert "| b | 300 + 0 | 30.0 | 0.2000 | 0.200 | 0.800 | 0.350 | +0.375 (" in text
    assert "| copy the source | - | - | - | 0.100 | 0.700 | 0.300 | |" in text and "python q.py --out b" in text
    other = tmp_path / "other.csv"
    other.write_text("from,to\nb.jpg,a.jpg\n")
    c = _arm(tmp_path / "c", other, 0.5, [0.1])
    with pytest.raises(SystemExit, match="other pairs"):
        design_ab.table([a, c])
    curves = design_ab.losses([a, b])  # Reconstruction-stage lines only; a step one arm did not log shows "-".
    assert "| 50 | 0.5000 | 0.2000 |" in curves and "| 250 | 0.3000 | - |" in curves and "9.0" not in curves


def test_under_ci_a_skip_for_a_missing_package_fails_and_other_skips_stay(tmp_path):
    (tmp_path / "in_test").mkdir()
    (tmp_path / "in_test" / "test_x.py").write_text(
        "import pytest\n"
        "def test_needs_a_client():\n    pytest.importorskip('no_such_client_pkg')\n"
        "def test_needs_cuda():\n    pytest.skip('CUDA only')\n")
    (tmp_path / "module_level").mkdir()
    (tmp_path / "module_level" / "test_m.py").write_text(
        "import pytest\npytest.importorskip('no_such_client_pkg_either')\ndef test_a():\n    pass\n")

    def run(folder: str, ci: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "ci_skips", "-p", "no:cacheprovider",
                               folder], capture_output=True, text=True, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "tests"), "CI": ci})

    ci = run("in_test", "true")
    assert ci.returncode == 1 and "1 failed, 1 skipped" in ci.stdout.splitlines()[-1], ci.stdout
    assert "no_such_client_pkg" in ci.stdout and "CUDA only" in ci.stdout  # -rs lists the skip that stays.
    module = run("module_level", "true")
    assert module.returncode != 0 and "did not import" in module.stdout and "no_such_client_pkg_either" in module.stdout
    for folder in ("in_test", "module_level"):  # Outside CI they stay skips (5: pytest found no test to run).
        local = run(folder, "")
        assert local.returncode in (0, 5) and "failed" not in local.stdout and "skipped" in local.stdout
