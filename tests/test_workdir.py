import os

import pytest
from click.testing import CliRunner

from reid_augment.cli import DEFAULT_WORKDIR, cli
from reid_augment.errors import InputError
from reid_augment.workdir import DEFAULT_ROOT, WorkDir


def test_layout_names_the_files_of_the_stages(tmp_path):
    work = WorkDir(str(tmp_path))  # Any path-like; kept as a Path.
    assert work.root == tmp_path
    assert {name: getattr(work, name).relative_to(tmp_path).as_posix() for name in (
        "poses", "test_poses", "train_pairs", "test_pairs", "pairs_record", "pairs_preview", "runs", "generated",
        "report")} == {
        "poses": "poses.csv", "test_poses": "poses-test.csv", "train_pairs": "pairs-train.csv",
        "test_pairs": "pairs-test.csv", "pairs_record": "pairs.json", "pairs_preview": "pairs-preview.png",
        "runs": "runs", "generated": "generated", "report": "report"}
    assert work.run("tiny") == tmp_path / "runs" / "tiny"
    assert DEFAULT_WORKDIR == DEFAULT_ROOT == "reid-augment-work"
    assert not any(tmp_path.iterdir())  # Paths only: nothing is made.


def test_workdir_is_frozen(tmp_path):
    with pytest.raises(AttributeError):
        WorkDir(tmp_path).root = tmp_path / "other"


def test_target_poses_fall_back_to_the_training_poses(tmp_path):
    work = WorkDir(tmp_path)
    assert work.target_poses() == tmp_path / "poses.csv"
    (tmp_path / "poses-test.csv").write_text("name:keypoints_y:keypoints_x\n")
    assert work.target_poses() == tmp_path / "poses-test.csv"


def _checkpoint(work: WorkDir, run: str, mtime: float):
    path = work.run(run) / "checkpoints" / "latest.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_latest_checkpoint_is_the_newest_run(tmp_path):
    work = WorkDir(tmp_path)
    older = _checkpoint(work, "b", 1_000_000)
    newer = _checkpoint(work, "a", 2_000_000)  # Newer, though first by name.
    (work.run("c") / "checkpoints").mkdir(parents=True)  # A run without a checkpoint yet.
    assert work.latest_checkpoint() == newer
    os.utime(older, (3_000_000, 3_000_000))
    assert work.latest_checkpoint() == older


def test_no_checkpoint_is_a_one_line_error(tmp_path, cuhk_dir):
    with pytest.raises(InputError, match=r"runs: no trained checkpoint; train one with `reid-augment train`, or "
                                         r"pass --checkpoint \(a file, or the bundled cuhk03-small\)$"):
        WorkDir(tmp_path).latest_checkpoint()
    result = CliRunner().invoke(cli, ["generate", str(cuhk_dir), "--per-id", "1", "-w", str(tmp_path / "w")])
    assert result.exit_code == 1
    assert result.output == (f"Error: {tmp_path}/w/runs: no trained checkpoint; train one with `reid-augment train`, "
                             f"or pass --checkpoint (a file, or the bundled cuhk03-small)\n")


def test_fill_in_takes_only_what_is_left_out_from_the_work_dir(tmp_path):
    from reid_augment.workdir import fill_in

    work = WorkDir(tmp_path)
    assert fill_in("evaluate", tmp_path, pairs=None, poses="p.csv", report_dir=None) == (
        work.test_pairs, "p.csv", work.report)
    (tmp_path / "poses-test.csv").write_text("")  # target_poses looks at what is there.
    assert fill_in("evaluate", tmp_path, pairs="x", poses=None, report_dir="r")[1] == work.test_poses
    assert fill_in("preview", None, pairs="a", poses="b", output="c") == ("a", "b", "c")  # Nothing to fill.
    with pytest.raises(InputError, match=r"^preview: give poses, output, or a work dir to take them from$"):
        fill_in("preview", None, pairs="a", poses=None, output=None)
