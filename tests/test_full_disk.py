"""A full disk loses nothing: on a size-limited tmpfs, `generate` and `train` stop with one line (exit 74), every
manifest row names a whole image, the last good checkpoint still loads, no temp file is left, and a rerun with space
completes the job to the result of an uninterrupted run. Needs root to mount a tmpfs; skipped with the reason where
mounting is refused."""

import subprocess

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from reid_augment.cli import EXIT_IO, cli
from reid_augment.images import load_rgb
from reid_augment.checkpoints import load_checkpoint


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 48 KiB at tmp_path/disk, and a function that grows it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")

    def grow(size: str = "64m") -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    yield disk, grow
    subprocess.run(["umount", str(disk)], check=False)


def _leftovers(folder):
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _stopped_cleanly(result, names, disk):
    """Exit 74 with one line naming `names` and the full disk, no traceback, no temp file left on `disk`."""
    assert result.exit_code == EXIT_IO, result.output
    error = result.output.strip().splitlines()[-1].split("Error: ", 1)[-1]  # After a progress bar's last frame.
    assert "No space left on device" in error and str(names) in error and "Traceback" not in result.output
    assert not _leftovers(disk)


def _generate(cuhk_dir, checkpoint, out):
    return CliRunner().invoke(cli, ["generate", str(cuhk_dir), "--per-id", "3", "--checkpoint", str(checkpoint),
                                    "--poses", str(cuhk_dir / "annotations.csv"), "-o", str(out), "--no-score",
                                    "--workers", "0", "--batch-size", "8", "--device", "cpu"])


def test_generate_on_a_full_disk_stops_cleanly_and_a_rerun_completes_it(cuhk_dir, checkpoint, small_disk, tmp_path):
    disk, grow = small_disk
    whole = _generate(cuhk_dir, checkpoint, tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    full = _generate(cuhk_dir, checkpoint, disk / "gen")
    _stopped_cleanly(full, disk, disk)
    manifest = disk / "gen" / "manifest.csv"
    rows = pd.read_csv(manifest) if manifest.is_file() and manifest.stat().st_size else pd.DataFrame({"image": []})
    for image in rows["image"]:  # Every row names a whole image.
        assert load_rgb(disk / "gen" / image).shape == (128, 64, 3)
    grow()
    again = _generate(cuhk_dir, checkpoint, disk / "gen")
    assert again.exit_code == 0, again.output
    ours, theirs = (pd.read_csv(d / "manifest.csv").sort_values("image").reset_index(drop=True)
                    for d in (disk / "gen", tmp_path / "whole"))
    assert ours.equals(theirs)
    for image in theirs["image"]:  # The same images, up to the float noise of other batch compositions.
        ours_px, theirs_px = (load_rgb(d / image).astype(int) for d in (disk / "gen", tmp_path / "whole"))
        assert np.abs(ours_px - theirs_px).max() <= 2
    assert not _leftovers(disk)


def test_train_on_a_full_disk_keeps_the_last_good_checkpoint(cuhk_dir, small_disk, tmp_path):
    disk, grow = small_disk
    work = tmp_path / "work"
    built = CliRunner().invoke(cli, ["build-pairs", str(cuhk_dir), "--poses", str(cuhk_dir / "annotations.csv"),
                                     "-o", str(work), "--jobs", "1"])
    assert built.exit_code == 0, built.output
    args = ["train", str(cuhk_dir), "-w", str(work), "--recipe", "tiny", "--device", "cpu", "--set",
            "train.ref_steps=0", "--set", "train.checkpoint_every=2", "--set", "train.sample_every=1000"]
    grow("32m")  # Room for the run dir and the first checkpoints of the tiny model.
    run = disk / "run"
    first = CliRunner().invoke(cli, args + ["-o", str(run), "--set", "train.rec_steps=2"])
    assert first.exit_code == 0, first.output
    size = (run / "checkpoints" / "latest.pt").stat().st_size
    used = sum(p.stat().st_size for p in disk.rglob("*") if p.is_file())
    grow(f"{(used + size // 2) // 1024 + 1}k")  # Not enough for one more checkpoint beside the old one.
    full = CliRunner().invoke(cli, args + ["-o", str(run), "--set", "train.rec_steps=4"])
    _stopped_cleanly(full, run, disk)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 2
    grow()
    done = CliRunner().invoke(cli, args + ["-o", str(run), "--set", "train.rec_steps=4"])
    assert done.exit_code == 0, done.output
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 4


def _tree(root):
    """Every file under root (links followed) by relative path: its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_on_a_full_disk_stops_cleanly_and_a_rerun_completes_it(market_root, checkpoint, cuhk_dir, small_disk,
                                                                       tmp_path):
    from reid_augment.config import GenerateConfig
    from reid_augment.generate import generate

    disk, grow = small_disk
    gen = generate(market_root, checkpoint, cuhk_dir / "annotations.csv", tmp_path / "gen",
                   GenerateConfig(per_id=2, num_workers=0, score=False), device="cpu", progress=False)
    args = ["export", str(gen.manifest.parent), "--market-root", str(market_root.parent.parent), "--copy"]
    whole = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    full = CliRunner().invoke(cli, args + ["-o", str(disk / "new")])
    _stopped_cleanly(full, disk, disk)
    grow()
    again = CliRunner().invoke(cli, args + ["-o", str(disk / "new")])
    assert again.exit_code == 0, again.output
    assert _tree(disk / "new") == _tree(tmp_path / "whole")  # Every file whole, none missing (query/ too).
    assert not _leftovers(disk)
    query = sorted((disk / "new" / "query").iterdir())
    query[0].unlink()  # As a disk filling up in the middle of the copied query folder leaves it.
    assert CliRunner().invoke(cli, args + ["-o", str(disk / "new")]).exit_code == 0
    assert _tree(disk / "new") == _tree(tmp_path / "whole")


def test_evaluate_on_a_full_disk_stops_cleanly_and_a_rerun_completes_it(cuhk_dir, checkpoint, small_disk, tmp_path):
    import json

    disk, grow = small_disk
    names = sorted(p.name for p in cuhk_dir.glob("0001_*.jpg"))
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"from": names[:-1], "to": names[1:]}).to_csv(pairs, index=False)
    args = ["evaluate", str(cuhk_dir), "--checkpoint", str(checkpoint), "--pairs", str(pairs), "--poses",
            str(cuhk_dir / "annotations.csv"), "--no-pckh", "--device", "cpu"]
    whole = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    full = CliRunner().invoke(cli, args + ["-o", str(disk / "report")])
    _stopped_cleanly(full, disk, disk)
    grow()
    again = CliRunner().invoke(cli, args + ["-o", str(disk / "report")])
    assert again.exit_code == 0, again.output
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (disk / "report", tmp_path / "whole"))
    for key in ("num_pairs", "ssim", "mask_ssim", "edge_energy"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-3), key
    assert not _leftovers(disk)
