"""Every `bash` block of the README runs as written, in order, and so does the Python API block.

`console` blocks need a user's Market-1501 copy or several GPUs; their code paths are covered by the
unit tests (export, DDP under torchrun, pairs reproduction).
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_setup_commands():
    first = _blocks("console")[0]
    assert [line.split("#")[0].strip() for line in first.strip().splitlines()] == ["make demo", "make test"]
    assert README.index(first) < 40  # Right after the title.


def test_readme_bash_and_api_blocks_run(tmp_path):
    (tmp_path / "reid_augment").mkdir()
    (tmp_path / "reid_augment" / "sample").symlink_to(ROOT / "reid_augment" / "sample")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    commands = [line for block in _blocks("bash") for line in block.strip().splitlines()]
    assert len(commands) >= 8
    for command in commands:
        if "estimate-poses" in command:
            pytest.importorskip("mediapipe")
        done = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
    assert (tmp_path / "work" / "report" / "metrics.json").is_file()
    assert (tmp_path / "work" / "sharded" / "manifest.csv").is_file()
    api = [b for b in _blocks("python") if "reid-data" not in b]
    assert len(api) == 1
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        exec(compile(api[0], "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert (tmp_path / "work" / "api-out" / "manifest.csv").is_file()
