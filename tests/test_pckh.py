"""PCKh as PATN's calPCKH computes it, the copy-the-source baseline in every report, the quality gate in generate."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reid_augment.config import GenerateConfig
from reid_augment.evaluate import evaluate
from reid_augment.generate import generate
from reid_augment.pckh import head_sizes, pckh, pckh_counts, per_image_pckh


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


@pytest.fixture(scope="module")
def mediapipe():
    return pytest.importorskip("mediapipe", reason="the offline pose backend is installed by `make pose`")


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
        cfg = GenerateConfig(per_id=2, num_workers=0, **kwargs)
        result = generate(cuhk_dir, trained_checkpoint, cuhk_dir / "annotations.csv", tmp_path / name, cfg,
                          device="cpu", progress=False)
        return result, pd.read_csv(result.manifest).set_index("image")

    _, one = run("one")
    best_result, best = run("best", candidates=3)
    _, small_batches = run("small", candidates=3, batch_size=4)
    assert len(one) == len(best) == 24 and one["pckh"].notna().all()
    # Candidate 0 is the image made without --candidates, so the best of 3 is never worse.
    assert (best["pckh"] >= one.loc[best.index, "pckh"]).all() and best["pckh"].mean() > one["pckh"].mean()
    columns = ["pose_from", "seed", "pckh"]
    pd.testing.assert_frame_equal(best[columns], small_batches.loc[best.index, columns])
    threshold = float(best["pckh"][best["pckh"] > 0].min())  # Keeps some, drops the images no pose was found in.
    gated_result, gated = run("gated", candidates=3, min_pckh=threshold)
    assert (gated["pckh"] >= threshold).all()
    assert gated_result.dropped == (best["pckh"] < threshold).sum() > 0
    assert len(gated) == 24 - gated_result.dropped and "shortfall" in gated_result.summary()
    assert "best of 3 candidates" in best_result.summary()
