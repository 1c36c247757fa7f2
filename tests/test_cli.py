
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.poses import HEADER


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_build_pairs_writes_workdir_and_is_deterministic(cuhk_copy, cuhk_dir, tmp_path):
    (cuhk_copy / "0001_c1s1_999999_00.jpg").write_bytes(b"garbage")
    outs = []
    for name in ("w1", "w2"):
        result = _run("build-pairs", cuhk_copy, "--poses", cuhk_dir / "annotations.csv", "--test-ids", 2,
                      "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
        outs.append(tmp_path / name)
    assert "1 unreadable" in result.output and "0001_c1s1_999999_00.jpg" in result.output
    assert "Training:" in result.output and "pairs" in result.output
    for f in ("poses.csv", "pairs-train.csv", "pairs-test.csv", "pairs.json"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    assert (outs[0] / "pairs-train.csv").read_text().startswith("from,to,pid\n")


def test_build_pairs_reports_unknown_images_by_line(cuhk_copy, cuhk_dir, tmp_path):
    for p in sorted(cuhk_copy.glob("0012_*"))[:2]:
        p.unlink()
    result = _run("build-pairs", cuhk_copy, "--poses", cuhk_dir / "annotations.csv", "-o", tmp_path / "w")
    assert result.exit_code == 0, result.output
    assert "no such image in the folder" in result.output and "line " in result.output


def test_bad_input_gives_one_line_errors(tmp_path, cuhk_copy):
    result = _run("build-pairs", tmp_path / "missing", "--poses", tmp_path / "p.csv")
    assert result.exit_code == 1 and "no such folder" in result.output
    # Through click's error path (SystemExit); an uncaught exception would be the result's exception instead.
    assert isinstance(result.exception, SystemExit) and len(result.output.strip().splitlines()) == 1

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n0001_c1s1_000000_00.jpg: [1, 2]: [3]\n")
    result = _run("build-pairs", cuhk_copy, "--poses", bad, "-o", tmp_path / "w")
    assert result.exit_code == 1 and "bad.csv" in result.output and "line 2" in result.output

    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run("build-pairs", empty, "--poses", bad, "-o", tmp_path / "w")
    assert result.exit_code == 1 and "no image files" in result.output

    result = _run("build-pairs", cuhk_copy, "--require-joints", "Rsho,Tail")
    assert result.exit_code == 2 and "unknown joint 'Tail'" in result.output


def test_no_usable_image_is_an_error(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "0001_c1s1_000000_00.jpg").write_bytes(b"")
    result = _run("build-pairs", folder, "--poses", tmp_path / "p.csv", "-o", tmp_path / "w")
    assert result.exit_code == 1 and "no usable image" in result.output


def test_no_usable_pose_explains_the_ways_out(cuhk_copy, tmp_path):
    import numpy as np

    from reid_augment.images import scan_images
    from reid_augment.poses import PoseTable, write_poses

    names = scan_images(cuhk_copy).images["name"]
    write_poses(tmp_path / "p.csv", PoseTable.from_arrays(names, np.full((len(names), 18, 2), -1.0)))
    result = _run("build-pairs", cuhk_copy, "--poses", tmp_path / "p.csv", "-o", tmp_path / "w")
    assert result.exit_code == 0
    assert "no image has a usable pose" in result.output and "make pose" in result.output


def test_train_dry_run_prints_the_resolved_recipe():
    result = _run("train", "anything", "--recipe", "tiny", "--set", "train.rec_steps=7", "--dry-run")
    assert result.exit_code == 0 and "rec_steps: 7" in result.output and "heatmap_sigma: 3.0" in result.output
    result = _run("train", "anything", "--recipe", "tiny", "--set", "train.nope=1", "--dry-run")
    assert result.exit_code == 1 and "unknown key 'nope'" in result.output
