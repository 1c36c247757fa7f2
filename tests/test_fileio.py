"""Files the tool writes are shared on lab disks: each is created with the mode the user's umask gives."""

import os
import stat
from contextlib import contextmanager

from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.fileio import atomic_open, atomic_write_text, copy_file, current_umask, save_png


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_take_the_umasks_mode(tmp_path):
    import numpy as np

    for mask, want in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        with umask(mask):
            assert current_umask() == mask
            atomic_write_text(tmp_path / f"{mask:o}.txt", "text")
            save_png(tmp_path / f"{mask:o}.png", np.zeros((2, 2, 3), np.uint8))
            with atomic_open(tmp_path / f"{mask:o}.bin", "wb") as f:
                f.write(b"\0")
            (tmp_path / "src").write_bytes(b"x")
            os.chmod(tmp_path / "src", 0o600)  # A private source: the copy is the umask's, as `cp` gives.
            copy_file(tmp_path / "src", tmp_path / f"{mask:o}.copy")
        for suffix in ("txt", "png", "bin", "copy"):
            assert _mode(tmp_path / f"{mask:o}.{suffix}") == want, (suffix, oct(mask))
    assert not list(tmp_path.glob(".*.tmp"))


def test_every_output_of_the_pipeline_is_readable_by_colleagues(market_root, cuhk_dir, checkpoint, tmp_path):
    """Under umask 022: pair files, generated images, manifest and contact sheet, an exported root's copies and
    lists, a shared generator: all 0644 (mkstemp alone would leave them 0600)."""
    poses = cuhk_dir / "annotations.csv"  # market_root holds the sample's images under their own names.
    commands = [["build-pairs", market_root, "--poses", poses, "-o", tmp_path / "w"],
                ["generate", market_root, "--per-id", 1, "--poses", poses, "--checkpoint", checkpoint,
                 "-o", tmp_path / "gen", "--device", "cpu", "--no-score"],
                ["export", tmp_path / "gen", "--root", market_root, "-o", tmp_path / "new", "--copy"],
                ["export-generator", checkpoint, "-o", tmp_path / "g.safetensors"]]
    with umask(0o022):
        for command in commands:
            result = CliRunner().invoke(cli, [str(c) for c in command])
            assert result.exit_code == 0, result.output
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    assert {".csv", ".json", ".jpg", ".png", ".safetensors"} <= {p.suffix for p in written}
    assert len(written) > 100 and {str(p): oct(_mode(p)) for p in written if _mode(p) != 0o644} == {}
