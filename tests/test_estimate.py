import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.errors import InputError
from reid_augment.estimate import MMPOSE_CHECKPOINT, estimate_poses, scores_path
from reid_augment.keypoints import present
from reid_augment.poses import read_poses


def fake_estimator(crops):
    """A standing person in COCO-17 (y, x, score), scaled to each crop; the wrists score low."""
    out = []
    for crop in crops:
        h, w = crop.shape[:2]
        ys = np.array([.1, .08, .08, .09, .09, .25, .25, .4, .4, .55, .55, .55, .55, .75, .75, .95, .95]) * h
        xs = np.array([.5, .45, .55, .4, .6, .35, .65, .3, .7, .3, .7, .4, .6, .4, .6, .4, .6]) * w
        scores = np.full(17, 0.9)
        scores[[9, 10]] = 0.1
        out.append(np.stack([ys, xs, scores], -1))
    return np.array(out)


def test_rows_thresholds_and_sidecar(cuhk_dir, tmp_path):
    out = tmp_path / "poses.csv"
    result = estimate_poses(cuhk_dir, out, "fake", estimator=fake_estimator, model_name="fake", batch_size=8,
                            score_thr=0.5, progress=False)
    table = read_poses(out)
    assert len(table) == result.estimated == 116
    assert (table.coords[:, [4, 7]] == -1).all()  # Wrists below the threshold.
    assert present(table.coords[:, [0, 1, 2, 5, 8, 11]]).all()
    assert (table.coords[:, :, 0] <= 127).all() and (table.coords[:, :, 1] <= 63).all()
    import json

    side = json.loads(scores_path(out).read_text())
    assert side["backend"] == "fake" and side["score_thr"] == 0.5 and len(side["scores"]) == 116
    assert len(side["scores"][table.names[0]]) == 18


def test_resume_after_interruption_and_unreadable_images(cuhk_copy, tmp_path):
    (cuhk_copy / "0001_c1s1_999999_00.jpg").write_bytes(b"broken")
    calls = {"n": 0}

    def dies_on_tenth_batch(crops):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return fake_estimator(crops)

    out = tmp_path / "poses.csv"
    with pytest.raises(KeyboardInterrupt):
        estimate_poses(cuhk_copy, out, "fake", estimator=dies_on_tenth_batch, batch_size=8, progress=False)
    partial = read_poses(out)  # An interrupted run leaves a valid file.
    assert 0 < len(partial) < 117
    result = estimate_poses(cuhk_copy, out, "fake", estimator=fake_estimator, batch_size=8, progress=False)
    assert result.already_done == len(partial)
    assert [name for name, _ in result.skipped] == ["0001_c1s1_999999_00.jpg"]
    assert len(read_poses(out)) == 116
    again = estimate_poses(cuhk_copy, out, "fake", estimator=fake_estimator, progress=False)
    # Only the broken image is tried again, and skipped again.
    assert again.estimated == 0 and len(again.skipped) == 1 and again.already_done == 116


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["estimate-poses", str(tmp_path / "empty"), "--backend", "mediapipe"])
    assert result.exit_code == 1 and "no image files" in result.output




def test_mmpose_random_weights_end_to_end(market_sample_dir, tmp_path):
    pytest.importorskip("mmpose")
    out = tmp_path / "poses.csv"
    result = estimate_poses(market_sample_dir, out, "mmpose", pose_checkpoint=None, batch_size=5, score_thr=0.0,
                            progress=False)
    table = read_poses(out)
    assert result.estimated == len(table) == 18
    # Threshold 0: random weights still place joints, kept where they fall inside the crop.
    vis = present(table.coords)
    assert vis.any()
    assert (table.coords[vis][:, 0] <= 127).all() and (table.coords[vis][:, 1] <= 63).all()
    import json

    side = json.loads(scores_path(out).read_text())
    assert "rtmpose-m" in side["model"] and "random weights" in side["model"]
    assert all(len(v) == 18 for v in side["scores"].values())


def test_mmpose_without_checkpoint_names_the_two_ways_out(market_sample_dir, tmp_path, monkeypatch):
    pytest.importorskip("mmpose")
    import torch

    def offline(*_args, **_kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    result = CliRunner().invoke(cli, ["estimate-poses", str(market_sample_dir), "-o", str(tmp_path / "p.csv")])
    assert result.exit_code == 1
    assert "--pose-checkpoint PATH" in result.output and "--backend mediapipe" in result.output
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(InputError, match="no such pose checkpoint"):
        estimate_poses(market_sample_dir, tmp_path / "p.csv", "mmpose", pose_checkpoint=str(tmp_path / "x.pth"))


def test_mmpose_checkpoint_loads_numpy_metadata_and_refuses_code(tmp_path):
    pytest.importorskip("mmpose")
    import numpy as np
    import torch

    from reid_augment.estimate import _load_mmpose_checkpoint

    model = torch.nn.Linear(3, 2)
    # OpenMMLab checkpoints keep numpy arrays and scalars in their metadata.
    meta = {"dataset_meta": {"sigmas": np.array([0.026, 0.025]), "flip": np.float64(1.0), "n": np.int64(17)}}
    torch.save({"meta": meta, "state_dict": {k: v + 1 for k, v in model.state_dict().items()}}, tmp_path / "ok.pth")
    before = model.weight.detach().clone()
    _load_mmpose_checkpoint(model, str(tmp_path / "ok.pth"))
    assert torch.equal(model.weight.detach(), before + 1)

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"meta": Payload(), "state_dict": model.state_dict()}, tmp_path / "evil.pth")
    with pytest.raises(InputError, match="evil.pth: refused"):
        _load_mmpose_checkpoint(model, str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_mmpose_loader_answers_a_file_that_is_no_mmpose_checkpoint_in_one_line(market_sample_dir, tmp_path):
    """A .safetensors file (which torch.load reads), a truncated one, bytes that are no torch file, a torch file
    of no weights: each an InputError naming the file, and through the CLI one `Error:` line."""
    import torch
    from safetensors.torch import save_file

    from reid_augment.estimate import _load_mmpose_checkpoint

    model = torch.nn.Linear(3, 2)
    save_file({"other.weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "other.safetensors").read_bytes()[:40])
    (tmp_path / "junk.pth").write_bytes(b"hello world")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    cases = {"other.safetensors": "do not fit", "cut.safetensors": "not a torch checkpoint",
             "junk.pth": "not a torch checkpoint", "list.pth": "not an mmpose checkpoint"}
    for name, problem in cases.items():
        with pytest.raises(InputError, match=f"{name}: .*{problem}"):
            _load_mmpose_checkpoint(model, str(tmp_path / name))
    pytest.importorskip("mmpose")
    result = CliRunner().invoke(cli, ["estimate-poses", str(market_sample_dir), "-o", str(tmp_path / "p.csv"),
                                      "--pose-checkpoint", str(tmp_path / "cut.safetensors"), "--device", "cpu"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cut.safetensors: not a torch checkpoint" in errors[0], result.output
    assert not (tmp_path / "p.csv").exists()


def _local_checkpoint() -> Path | None:
    candidates = [os.environ.get("REID_AUGMENT_MMPOSE_CHECKPOINT", ""),
                  Path(torch_hub_dir()) / "checkpoints" / MMPOSE_CHECKPOINT.rsplit("/", 1)[1]]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def torch_hub_dir() -> str:
    import torch

    return torch.hub.get_dir()


def test_mmpose_real_weights_agree_with_the_field(market_sample_dir, tmp_path):
    pytest.importorskip("mmpose")
    ckpt = _local_checkpoint()
    if ckpt is None:
        pytest.skip("no RTMPose-m checkpoint here (set REID_AUGMENT_MMPOSE_CHECKPOINT or cache it in torch hub)")
    estimate_poses(market_sample_dir, tmp_path / "p.csv", "mmpose", pose_checkpoint=str(ckpt), progress=False)
    ours, ref = read_poses(tmp_path / "p.csv"), read_poses(market_sample_dir / "annotations.csv")
    coords = ours.lookup(ref.names)
    both = present(coords) & present(ref.coords)
    assert (np.linalg.norm(coords - ref.coords, axis=-1)[both] <= 6).mean() >= 0.85


def test_mediapipe_agrees_with_the_field_annotations(market_sample_dir, tmp_path):
    pytest.importorskip("mediapipe")
    estimate_poses(market_sample_dir, tmp_path / "p.csv", "mediapipe", batch_size=4, progress=False)
    ours, ref = read_poses(tmp_path / "p.csv"), read_poses(market_sample_dir / "annotations.csv")
    coords = ours.lookup(ref.names)
    detected = present(coords).any(-1).sum()
    both = present(coords) & present(ref.coords)
    within = (np.linalg.norm(coords - ref.coords, axis=-1)[both] <= 6).mean()
    # Untuned (no upscale, no pad): 10/18 detected, 93% within 6 px. Tuned: 17/18, 94%.
    assert detected >= 17
    assert within >= 0.92


def test_build_pairs_estimates_poses_when_none_are_given(market_sample_dir, tmp_path):
    pytest.importorskip("mediapipe")
    images = tmp_path / "images"
    shutil.copytree(market_sample_dir, images, ignore=shutil.ignore_patterns("*.csv"))
    result = CliRunner().invoke(cli, ["build-pairs", str(images), "--pose-backend", "mediapipe",
                                      "-o", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    poses = read_poses(tmp_path / "work" / "poses.csv")
    assert len(poses) == 18 and present(poses.coords).any(-1).sum() >= 17
    assert scores_path(tmp_path / "work" / "poses.csv").is_file()


def test_native_start_up_log_is_dropped_and_native_errors_are_kept(capfd):
    import os

    from reid_augment.estimate import _native_log_filtered

    with _native_log_filtered():
        os.write(2, b"W0000 00:00:1.5    8209 inference_feedback_manager.cc:114] Disabling support for feedback\n"
                    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                    b"E0000 00:00:1.6    8209 calculator_graph.cc:9] a real error\n")
    err = capfd.readouterr().err
    assert "a real error" in err and "feedback" not in err and "XNNPACK" not in err


def test_the_mediapipe_estimator_starts_quietly():
    import subprocess
    import sys

    pytest.importorskip("mediapipe")
    code = ("from reid_augment.estimate import make_estimator\nfrom reid_augment.images import load_rgb\n"
            "from pathlib import Path\nimport reid_augment\n"
            "est, _ = make_estimator('mediapipe')\n"
            "img = load_rgb(Path(reid_augment.__file__).parent / 'sample/cuhk03/0001_c1s1_000001_00.jpg')\n"
            "assert est([img])[0, 0, 2] > 0.5\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "W0000" not in done.stderr and "inference_feedback_manager" not in done.stderr, done.stderr
