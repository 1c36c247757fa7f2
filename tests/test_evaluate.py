import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image, ImageFilter
from skimage.metrics import structural_similarity

from reid_augment.cli import cli
from reid_augment.errors import InputError
from reid_augment.evaluate import edge_energy, evaluate, find_generated, inception_score, ssim_scores
from reid_augment.images import load_rgb
from reid_augment.keypoints import body_mask
from reid_augment.poses import read_poses


SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / "reid_augment" / "sample" / "cuhk03" / "0001_c1s1_000000_00.jpg"


@pytest.fixture(scope="module")
def test_pairs(tmp_path_factory, cuhk_dir):
    names = sorted(p.name for p in cuhk_dir.glob("0001_*.jpg"))
    pairs = pd.DataFrame({"from": names[:-1], "to": names[1:]})
    path = tmp_path_factory.mktemp("pairs") / "pairs-test.csv"
    pairs.to_csv(path, index=False)
    return path


def test_batched_ssim_matches_the_papers_skimage_call(cuhk_dir):
    paths = sorted(cuhk_dir.glob("*.jpg"))
    gen = np.stack([load_rgb(p) for p in paths[:4]])
    tgt = np.stack([load_rgb(p) for p in paths[4:8]])
    poses = read_poses(cuhk_dir / "annotations.csv").lookup([p.name for p in paths[4:8]])
    masks = np.stack([body_mask(p, (128, 64)) for p in poses])[..., None].astype(np.uint8)
    for g, t in ((gen, tgt), (gen * masks, tgt * masks)):
        ours = ssim_scores(g, t)
        for i in range(4):
            ref = structural_similarity(t[i], g[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        channel_axis=-1, data_range=float(g[i].max()) - float(g[i].min()))
            assert ours[i] == pytest.approx(ref, abs=1e-4)


def test_edge_energy_against_a_hand_computation():
    # A vertical step from grey 0 to 255 between columns 1 and 2 of a 3x4 image: Sobel's x response is
    # 4 * 255 = 1020 in the two columns beside the step (rows weigh 1, 2, 1), 0 elsewhere; y is 0 (edge padding).
    image = np.zeros((1, 3, 4, 3), np.uint8)
    image[:, :, 2:] = 255
    everywhere, left = np.ones((1, 3, 4, 1)), np.zeros((1, 3, 4, 1))
    left[:, :, :2] = 1
    assert edge_energy(image, everywhere)[0] == pytest.approx(1020 * 2 / 4, rel=1e-3)  # 255.0 * (1 - 1e-3 grey)
    assert edge_energy(image, left)[0] == pytest.approx(1020 / 2, rel=1e-3)  # Columns 0 (flat) and 1 (edge).
    assert np.isnan(edge_energy(image, np.zeros((1, 3, 4, 1)))[0])  # No mask, no figure.
    blurred = np.asarray(Image.fromarray(load_rgb(SAMPLE_IMAGE)).filter(ImageFilter.GaussianBlur(2)))
    sharp = load_rgb(SAMPLE_IMAGE)
    mask = np.ones((1, *sharp.shape[:2], 1))
    assert edge_energy(blurred[None], mask)[0] < 0.6 * edge_energy(sharp[None], mask)[0]


def test_inception_score_known_answers():
    assert inception_score(np.full((100, 10), 0.1))[0] == pytest.approx(1.0)
    for k in (2, 5, 10):
        confident = np.eye(k)[np.arange(200) % k]
        assert inception_score(confident, splits=10)[0] == pytest.approx(k, rel=1e-6)


def test_find_generated_reads_patn_names_and_our_manifest(tmp_path):
    folder = tmp_path / "patn"
    folder.mkdir()
    for name in ("0001_c1s1_000001_00.jpg___0001_c2s1_000006_00.jpg_vis.png", "a.jpg___b.png"):
        (folder / name).write_bytes(b"")
    table = find_generated(folder).sort_values("from")
    assert table[["from", "to"]].values.tolist() == [["0001_c1s1_000001_00.jpg", "0001_c2s1_000006_00.jpg"],
                                                     ["a.jpg", "b.png"]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no manifest.csv"):
        find_generated(tmp_path / "empty")


def test_scoring_an_existing_folder_skips_and_counts_bad_pairs(cuhk_dir, test_pairs, tmp_path):
    pairs = pd.read_csv(test_pairs)
    folder = tmp_path / "gen"
    folder.mkdir()
    for i, (src, tgt) in enumerate(zip(pairs["from"], pairs["to"])):
        if i == 0:
            continue  # missing
        img = Image.open(cuhk_dir / tgt)
        if i == 1:
            img = img.resize((32, 64))  # another size
        img.save(folder / f"{src}___{tgt}_vis.png")
    report = evaluate(cuhk_dir, test_pairs, cuhk_dir / "annotations.csv", tmp_path / "report", generated=folder,
                      progress=False)
    m = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert m["num_pairs"] == len(pairs) - 2 and m["skipped_pairs"] == 2
    assert m["image_formats"] == {"png": m["num_pairs"]} and "PNG (lossless)" not in " ".join(m["notes"])
    assert m["skipped_by_reason"]["missing image"] == 1 and m["skipped_by_reason"]["size mismatch"] == 1
    # The generated images are the targets: SSIM is 1.
    assert m["ssim"] == pytest.approx(1.0) and m["mask_ssim"] == pytest.approx(1.0)
    assert m["edge_energy"] == pytest.approx(1.0) and m["real_target"]["edge_energy_grey_levels"] > 10
    assert 0 < m["baseline"]["edge_energy"] and "edge energy" in (tmp_path / "report" / "report.md").read_text()
    assert m["is"] is None and "no Inception weights" in " ".join(m["notes"])
    assert set(m) >= {"ssim", "mask_ssim", "is", "mask_is", "fid", "lpips", "settings", "version"}
    assert "VDG_w" in (tmp_path / "report" / "report.md").read_text()
    assert report.metrics["num_pairs"] == m["num_pairs"]
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "x.jpg___y.jpg.png").write_bytes(b"")
    with pytest.raises(InputError, match="no scorable pair"):
        evaluate(cuhk_dir, test_pairs, cuhk_dir / "annotations.csv", tmp_path / "r2", generated=folder, progress=False)
    for src, tgt in zip(pairs["from"], pairs["to"]):  # Every image of another size: the error says which size.
        Image.open(cuhk_dir / tgt).resize((32, 64)).save(folder / f"{src}___{tgt}_vis.png")
    with pytest.raises(InputError, match=r"size mismatch: \d+, e.g. .*___.* is 64x32 and its target .* 128x64"):
        evaluate(cuhk_dir, test_pairs, cuhk_dir / "annotations.csv", tmp_path / "r3", generated=folder, progress=False)


def test_evaluate_a_checkpoint_from_the_cli(cuhk_dir, test_pairs, checkpoint, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(cuhk_dir), "--checkpoint", str(checkpoint), "--pairs",
                                      str(test_pairs), "--poses", str(cuhk_dir / "annotations.csv"),
                                      "-o", str(tmp_path / "report"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert 0 < m["num_pairs"] <= 9 and -1 <= m["ssim"] < 1 and m["checkpoint_step"] == 7
    assert Image.open(tmp_path / "report" / "samples.png").size[0] == 4 * 64
    generated = pd.read_csv(tmp_path / "report" / "generated" / "manifest.csv")
    assert (generated["image"].str.endswith(".png")).all()
    assert m["image_formats"] == {"png": m["num_pairs"]} and "scored as written here, PNG" in result.output
    assert load_rgb(tmp_path / "report" / "generated" / generated["image"][0]).shape == (128, 64, 3)


def test_inception_metrics_run_with_a_weights_file(cuhk_dir, test_pairs, tmp_path, monkeypatch):
    """Real torch-fidelity network, random weights saved to a file: exercises the IS/FID path offline."""
    tf = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    import torch

    with monkeypatch.context() as patch:
        patch.setattr(tf, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(tf.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        net = tf.FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased", "2048"])
    weights = tmp_path / "inception.pth"
    torch.save(net.state_dict(), weights)
    report = evaluate(cuhk_dir, test_pairs, cuhk_dir / "annotations.csv", tmp_path / "report",
                      generated=_copy_targets(cuhk_dir, test_pairs, tmp_path / "gen"), inception_weights=weights,
                      device="cpu", progress=False)
    assert report.metrics["is"] >= 1.0 and report.metrics["mask_is"] >= 1.0
    assert report.metrics["fid"] == pytest.approx(0.0, abs=1e-3)  # Generated == real.


def _copy_targets(cuhk_dir, pairs_path, folder):
    folder.mkdir()
    pairs = pd.read_csv(pairs_path)
    for src, tgt in zip(pairs["from"], pairs["to"]):
        shutil.copy(cuhk_dir / tgt, folder / f"{src}___{tgt}")
    return folder


def test_preview_draws_pairs(cuhk_dir, test_pairs, tmp_path):
    result = CliRunner().invoke(cli, ["preview", str(cuhk_dir), "--pairs", str(test_pairs), "--poses",
                                      str(cuhk_dir / "annotations.csv"), "-n", "3", "-o", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "p.png").size == (4 * 64, 3 * 128)
