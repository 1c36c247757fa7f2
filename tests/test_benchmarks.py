"""Benchmark scripts: the prepared GPU check runs end to end (here in its CPU quick mode), so it is ready when a device
is lent; CI's skip rule."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_quick_mode_on_cpu(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
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
    from benchmarks import gpu_check

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
