"""reid-benchmark: both arms train with torchreid's own machinery, differ only by the manifest, and report."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.config import GenerateConfig
from reid_augment.generate import generate
from reid_augment.reid_benchmark import MixedBatchSampler, ReidBenchmarkConfig, minp, reid_benchmark, split_lists

pytest.importorskip("torchreid")

FAST = dict(model="osnet_x0_25", epochs=1, height=64, width=32, batch_size=8, workers=0, device="cpu")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, market_root, checkpoint, cuhk_dir):
    out = tmp_path_factory.mktemp("generated")
    return generate(market_root, checkpoint, cuhk_dir / "annotations.csv", out,
                    GenerateConfig(per_id=3, num_workers=0, score=False), device="cpu", progress=False).manifest


def test_both_arms_run_and_differ_by_exactly_the_manifest(market_root, manifest, tmp_path):
    result = reid_benchmark(market_root, manifest, tmp_path / "a", ReidBenchmarkConfig(**FAST), progress=False)
    base, aug = result.arms["baseline"], result.arms["augmented"]
    assert aug["train_images"] - base["train_images"] == len(pd.read_csv(manifest)) == aug["generated_images"] == 18
    assert base["generated_images"] == 0 and base["identities"] == aug["identities"] == 6
    lists = split_lists(market_root, manifest)
    generated = {p for p, *_ in lists["train"] if "_vdg" in p}
    assert len(generated) == 18 and all(item[3] == 1 for item in lists["train"] if item[0] in generated)
    for record in (base, aug):
        assert 0 <= record["mAP"] <= 1 and 0 <= record["mINP"] <= 1
        assert 0 <= record["rank1"] <= record["rank5"] <= record["rank10"] <= 1
        assert len(record["history"]) == 1 and np.isfinite(record["history"][0]["loss"])
        assert record["initialisation"].startswith("from scratch")
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["difference"]["mAP"] == pytest.approx(aug["mAP"] - base["mAP"])
    assert "| difference |" in (tmp_path / "a" / "report.md").read_text()
    assert (tmp_path / "a" / "curves.png").stat().st_size > 1000
    # Resumable per arm: a rerun finds both arms done and recomputes nothing.
    again = reid_benchmark(market_root, manifest, tmp_path / "a", ReidBenchmarkConfig(**FAST), progress=False)
    assert again.arms == result.arms
    # The same seed gives the same baseline twice.
    other = reid_benchmark(market_root, manifest, tmp_path / "b", ReidBenchmarkConfig(**FAST), progress=False)
    assert other.arms["baseline"]["history"] == base["history"]


def test_cli_with_a_generated_share_and_lsro_labels(market_root, manifest, tmp_path):
    result = CliRunner().invoke(cli, ["reid-benchmark", str(market_root), "--manifest", str(manifest), "-o",
                                      str(tmp_path / "o"), "--model", "osnet_x0_25", "--epochs", "1", "--height", "64",
                                      "--width", "32", "--batch-size", "8", "--workers", "0", "--gen-ratio", "0.25",
                                      "--gen-label-smooth", "1.0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Baseline: mAP" in result.output and "generated" in result.output
    settings = json.loads((tmp_path / "o" / "metrics.json").read_text())["settings"]
    assert settings["gen_ratio"] == 0.25 and settings["gen_label_smooth"] == 1.0


def test_mixed_batches_hold_the_asked_share_and_every_original_once():
    generated = np.array([False] * 40 + [True] * 10)
    sampler = MixedBatchSampler(generated, batch_size=8, ratio=0.25, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 40 // 6
    assert all(sum(generated[i] for i in b) == 2 and len(b) == 8 for b in batches)
    originals = [i for b in batches for i in b if not generated[i]]
    assert len(originals) == len(set(originals)) == 36
    sampler.set_epoch(1)
    assert list(sampler) != batches and list(MixedBatchSampler(generated, 8, 0.25, 0)) == batches


def test_minp_against_a_hand_computed_case():
    # One query (person 1, camera 0); gallery by distance: person 2, person 1 (cam 1), person 3, person 1 (cam 1).
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]])
    value = minp(distmat, np.array([1]), np.array([2, 1, 3, 1]), np.array([0]), np.array([1, 1, 1, 1]))
    assert value == pytest.approx(2 / 4)
