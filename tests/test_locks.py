"""One writer per output: a second generate or train on a held folder refuses in one line naming the holder; shards
run side by side; a holder killed with SIGKILL blocks nobody."""

import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.errors import InputError
from reid_augment.locks import hold

HOLDER = "import sys, time\nfrom reid_augment.locks import hold\nwith hold(sys.argv[1], sys.argv[2]):\n" \
         "    print('held', flush=True)\n    time.sleep(600)\n"


def _holder(folder, name=".lock") -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), name], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_refused_until_the_holder_dies(tmp_path):
    holder = _holder(tmp_path / "out")
    try:
        with pytest.raises(InputError, match=rf"in use by process {holder.pid} "):
            with hold(tmp_path / "out"):
                pass
        with hold(tmp_path / "out", ".lock.shard-1-of-2"):  # Another shard's lock is another file.
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with hold(tmp_path / "out"):  # The kernel dropped the dead holder's lock: the stale file blocks nobody.
            assert "process" in (tmp_path / "out" / ".lock").read_text()
    finally:
        holder.kill()


def test_generate_and_train_refuse_a_held_output_in_one_line(cuhk_dir, checkpoint, tmp_path):
    holder = _holder(tmp_path / "gen")
    trainer = _holder(tmp_path / "run")
    try:
        result = CliRunner().invoke(cli, ["generate", str(cuhk_dir), "--per-id", "1", "--checkpoint", str(checkpoint),
                                          "--poses", str(cuhk_dir / "annotations.csv"), "-o", str(tmp_path / "gen"),
                                          "--no-score", "--workers", "0", "--device", "cpu"])
        assert result.exit_code == 1 and f"in use by process {holder.pid}" in result.output.splitlines()[-1]
        assert not (tmp_path / "gen" / "manifest.csv").exists()
        shard = CliRunner().invoke(cli, ["generate", str(cuhk_dir), "--per-id", "1", "--checkpoint", str(checkpoint),
                                         "--poses", str(cuhk_dir / "annotations.csv"), "-o", str(tmp_path / "gen"),
                                         "--no-score", "--workers", "0", "--device", "cpu", "--shard", "1/2"])
        assert shard.exit_code == 0, shard.output  # Shards lock their own file.
        work = tmp_path / "work"
        built = CliRunner().invoke(cli, ["build-pairs", str(cuhk_dir), "--poses", str(cuhk_dir / "annotations.csv"),
                                         "-o", str(work), "--jobs", "1"])
        assert built.exit_code == 0, built.output
        trained = CliRunner().invoke(cli, ["train", str(cuhk_dir), "-w", str(work), "--recipe", "tiny", "-o",
                                           str(tmp_path / "run"), "--device", "cpu", "--set", "train.rec_steps=1",
                                           "--set", "train.ref_steps=0"])
        assert trained.exit_code == 1 and f"in use by process {trainer.pid}" in trained.output.splitlines()[-1]
        assert not (tmp_path / "run" / "checkpoints").exists()
    finally:
        holder.kill()
        trainer.kill()
