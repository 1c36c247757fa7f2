"""The prepared GPU check runs end to end (here in its CPU quick mode), so it is ready when a device is lent."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_quick_mode_on_cpu(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["quick"] and report["recipe"] == "tiny" and report["matmul_peak_tflops"] > 0
    for stage in ("rec", "ref"):
        figures = report["train"]["eager"][stage]
        assert figures["images_per_s"] > 0 and 0 <= figures["data_wait"] < 1 and 0 < figures["mfu_measured_peak"]
        assert report["gflop_per_image"][stage] > 0
    assert report["generate"]["images"] == 24 and 0 < report["generate"]["ratio"]
    assert "| train rec (eager) |" in done.stdout and "| generate, batch 16 |" in done.stdout
