"""PCKh as PATN's calPCKH computes it, the copy-the-source baseline in every report, the quality gate in generate."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reid_augment.config import GenerateConfig
from reid_augment.evaluate import evaluate
from reid_augment.keypoints import scale_pose
from reid_augment.generate import generate
from reid_augment.images import load_rgb
from reid_augment.manifest import candidates_path
from reid_augment.pckh import HEAD_JOINTS, PoseScorer, head_sizes, pckh, pckh_counts, per_image_pckh
from reid_augment.poses import PoseTable, read_poses, write_poses


def _pose(**joints) -> np.ndarray:
    pose = np.full((18, 2), -1.0)
    for index, (y, x) in joints.items():
        pose[int(index[1:])] = (y, x)
    return pose


def test_pckh_counts_joints_within_half_the_target_head_box():
    # Head box from nose (10, 30) and neck (30, 40): height 20, width 10 -> thresholds 10 (y) and 5 (x).
    target = _pose(j0=(10, 30), j1=(30, 40), j2=(40, 20), j8=(80, 25))
    pred = _pose(j0=(19, 34), j1=(30, 46), j2=(41, 21))  # nose right, neck 6 px off in x, Rsho right, Rhip missing.
    assert head_sizes(target[None]).tolist() == [[20.0, 10.0]]
    right, total = pckh_counts(pred[None], target[None])
    assert (right.tolist(), total.tolist()) == ([2], [4])
    # A target with fewer than two head joints is not counted (PATN skips the pair).
    headless = _pose(j0=(10, 30), j2=(40, 20))
    assert pckh_counts(pred[None], headless[None])[1].tolist() == [0]
    both = np.stack([target, headless])
    assert pckh(np.stack([pred, pred]), both) == 0.5
    assert np.isnan(per_image_pckh(pred[None], headless[None])[0])
    assert pckh(target[None], target[None]) == 1.0


def test_pckh_pools_joints_over_pairs_not_per_image_means():
    # Pair a: 4 target joints, 2 right. Pair b: 8 target joints, all right. Pooled 10/12; per-image mean 0.75.
    target_a = _pose(j0=(10, 30), j1=(30, 40), j2=(40, 20), j8=(80, 25))
    pred_a = _pose(j0=(10, 30), j1=(30, 40))
    target_b = _pose(j0=(10, 30), j1=(30, 40), j2=(40, 20), j3=(50, 18), j5=(40, 44), j8=(80, 25), j11=(80, 40),
                     j14=(8, 28))
    preds, targets = np.stack([pred_a, target_b]), np.stack([target_a, target_b])
    assert per_image_pckh(preds, targets).tolist() == [0.5, 1.0]
    assert pckh(preds, targets) == pytest.approx(10 / 12)
    assert pckh(preds, targets) != pytest.approx(np.mean(per_image_pckh(preds, targets)))


def test_pckh_threshold_is_strict_as_in_patn():
    # Head box 20 x 10 -> a joint is right only when |dy| < 10 and |dx| < 5; exactly 10 or 5 off is wrong.
    target = _pose(j0=(10, 30), j1=(30, 40), j2=(40, 20))
    on_y_edge = _pose(j0=(10, 30), j1=(30, 40), j2=(50, 20))
    on_x_edge = _pose(j0=(10, 30), j1=(30, 40), j2=(40, 25))
    inside = _pose(j0=(10, 30), j1=(30, 40), j2=(49.9, 24.9))
    assert pckh_counts(np.stack([on_y_edge, on_x_edge, inside]), np.stack([target] * 3))[0].tolist() == [2, 2, 3]


@pytest.fixture(scope="module")
def mediapipe():
    return pytest.importorskip("mediapipe")


def test_reports_put_the_copy_baseline_beside_the_model(mediapipe, cuhk_dir, trained_checkpoint, tmp_path):
    names = sorted(p.name for p in cuhk_dir.glob("*.jpg") if p.name[:4] in ("0011", "0012"))
    pairs = pd.DataFrame({"from": names[:-1], "to": names[1:]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    report = evaluate(cuhk_dir, tmp_path / "pairs.csv", cuhk_dir / "annotations.csv", tmp_path / "report",
                      checkpoint=trained_checkpoint, device="cpu", num_samples=4, progress=False)
    m = json.loads((tmp_path / "report" / "metrics.json").read_text())
    base = m["baseline"]
    for metrics in (m, base):
        assert 0 < metrics["mask_ssim"] <= 1 and 0 <= metrics["pckh"] <= 1
    # Copying the source is scored, not assumed: its PCKh is well above zero on real crops of the same person.
    assert base["pckh"] > 0.2 and base["method"].startswith("copy the source")
    per_pair = pd.read_csv(tmp_path / "report" / "pairs.csv")
    assert len(per_pair) == len(pairs) == m["num_pairs"]
    assert {"ssim", "mask_ssim", "pckh", "copy_ssim", "copy_mask_ssim", "copy_pckh"} <= set(per_pair.columns)
    assert per_pair["copy_mask_ssim"].mean() == pytest.approx(base["mask_ssim"], abs=1e-4)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "**copy the source**" in text and "PCKh" in text and "copying the source" in report.summary()
    assert Image.open(tmp_path / "report" / "best-worst.png").size == (4 * 64, 4 * 128)


def test_candidates_keep_the_best_pose_and_min_pckh_counts_the_shortfall(mediapipe, cuhk_dir, trained_checkpoint,
                                                                         tmp_path):
    def run(name, **kwargs):
        cfg = GenerateConfig(per_id=2, num_workers=0, score_processes=0, **kwargs)
        result = generate(cuhk_dir, trained_checkpoint, cuhk_dir / "annotations.csv", tmp_path / name, cfg,
                          device="cpu", progress=False)
        return result, pd.read_csv(result.manifest, dtype={"pid": str}).set_index("image").sort_index()

    _, one = run("one")
    best_result, best = run("best", candidates=3)
    _, small_batches = run("small", candidates=3, batch_size=4)
    assert len(one) == len(best) == 24 and one["pckh"].notna().all()
    # An identity's candidates include the images made without --candidates: its best 2 of 6 are never worse.
    for pid, kept in best.groupby("pid"):
        plain = one.loc[one["pid"] == pid, "pckh"]
        assert (np.sort(kept["pckh"])[::-1] >= np.sort(plain)[::-1]).all()
    assert best["pckh"].mean() > one["pckh"].mean()
    pd.testing.assert_frame_equal(best, small_batches)  # Selection sees whole identities, whatever the batches.
    values = np.unique(best["pckh"])
    threshold = float(values[len(values) // 2])  # Keeps some, and leaves some identities short.
    gated_result, gated = run("best", candidates=3, min_pckh=threshold)  # A rerun with a gate: reselects.
    pd.testing.assert_frame_equal(gated, best[best["pckh"] >= threshold])
    assert sorted(p.name for p in (tmp_path / "best" / "images").iterdir()) == sorted(
        image.split("/")[-1] for image in gated.index)  # No stray image of a candidate no longer kept.
    assert gated_result.dropped == (best["pckh"] < threshold).sum() > 0
    assert len(gated) == 24 - gated_result.dropped and "shortfall" in gated_result.summary()
    assert "best of 3 times as many candidates" in best_result.summary()
    # N per identity whenever enough of its candidates pass, from whichever source: the log shows all six.
    log = pd.read_csv(candidates_path(gated_result.manifest), dtype={"pid": str})
    assert len(log) == 12 * 6
    for pid, cands in log.groupby("pid"):
        passing = cands[cands["pckh"] >= threshold]
        assert cands["kept"].sum() == min(2, len(passing))
        if len(passing) > 2:
            assert passing.loc[passing["kept"] == 1, "pckh"].min() >= passing.loc[passing["kept"] == 0, "pckh"].max()


def _targets_in_output_frame(manifest: pd.DataFrame, crops: list, images, poses) -> np.ndarray:
    """Each row's target pose, scaled from the image it came from into its output's frame."""
    return np.stack([scale_pose(poses.lookup([name])[0], load_rgb(images / name).shape[:2], crop.shape[:2])
                     for name, crop in zip(manifest["pose_from"], crops)])


def test_manifest_pckh_is_what_the_written_file_scores(mediapipe, cuhk_dir, trained_checkpoint, tmp_path):
    """JPEG encoding moves the estimator: the score is of the decoded bytes that are written, in a pool of
    processes as in this one, whatever the batches."""
    def run(name, **kwargs):
        cfg = GenerateConfig(per_id=2, candidates=2, num_workers=0, **kwargs)
        result = generate(cuhk_dir, trained_checkpoint, cuhk_dir / "annotations.csv", tmp_path / name, cfg,
                          device="cpu", progress=False)
        return result, pd.read_csv(result.manifest, dtype={"pid": str}).set_index("image").sort_index()

    pooled_result, pooled = run("pooled", score_processes=2, batch_size=5)
    assert "in 2 processes" in pooled_result.summary() and len(pooled) == 24
    crops = [load_rgb(tmp_path / "pooled" / image) for image in pooled.index]
    targets = _targets_in_output_frame(pooled, crops, cuhk_dir, read_poses(cuhk_dir / "annotations.csv"))
    rescored = np.round(PoseScorer.offline().score(crops, targets), 4)
    np.testing.assert_array_equal(rescored, pooled["pckh"].to_numpy())
    _, here = run("here", score_processes=0)
    pd.testing.assert_frame_equal(pooled, here)


def test_targets_without_a_head_box_are_kept_flagged_and_counted(mediapipe, cuhk_dir, trained_checkpoint, tmp_path):
    poses = read_poses(cuhk_dir / "annotations.csv")
    headless_ids = {"0001", "0002", "0003", "0004"}
    coords = poses.coords.copy()
    coords[np.ix_([n[:4] in headless_ids for n in poses.names], HEAD_JOINTS)] = -1  # Still valid: body joints.
    write_poses(tmp_path / "poses.csv", PoseTable.from_arrays(poses.names, coords))

    def run(name, gate):
        cfg = GenerateConfig(per_id=2, num_workers=0, score_processes=0, min_pckh=gate)
        result = generate(cuhk_dir, trained_checkpoint, tmp_path / "poses.csv", tmp_path / name, cfg, device="cpu",
                          progress=False)
        return result, pd.read_csv(result.manifest, dtype={"pid": str})

    open_result, open_gate = run("open", 0.0)
    headless = open_gate["pose_from"].str[:4].isin(headless_ids)
    assert 0 < headless.sum() < 24
    # Not ranked below every scored image and dropped at X = 0: kept, with an empty pckh, and counted.
    assert len(open_gate) == 24 and open_result.dropped == 0
    assert (open_gate["pckh"].isna() == headless).all()
    assert open_result.unscorable == headless.sum() and "without a head box" in open_result.summary()
    strict_result, strict = run("strict", 1.0)
    assert set(open_gate.loc[headless, "image"]) <= set(strict["image"])  # The strictest gate keeps them too.
    assert strict["pckh"].dropna().ge(1.0).all() and strict_result.unscorable == headless.sum()
    assert strict_result.dropped == 24 - len(strict) > 0
