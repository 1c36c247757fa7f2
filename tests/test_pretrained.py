"""The bundled generator: found by name everywhere a checkpoint is taken, documented, and better than copying."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.config import PairConfig
from reid_augment.demo import HELD_OUT  # Persons 0694-0701 of cuhk03-market: the report half, unseen.
from reid_augment.errors import InputError
from reid_augment.evaluate import evaluate
from reid_augment.pairs import run_build_pairs
from reid_augment.weights import bundled_generators, load_generator, read_metadata, resolve_generator


def test_names_resolve_to_bundled_files_and_paths_win(tmp_path):
    assert "cuhk03-small" in bundled_generators()
    assert resolve_generator("cuhk03-small") == bundled_generators()["cuhk03-small"]
    local = tmp_path / "cuhk03-small"
    local.write_bytes(b"")
    assert resolve_generator(local) == local
    with pytest.raises(InputError, match="not the name of a bundled generator.*cuhk03-small"):
        resolve_generator("cuhk03-large")


def test_bundled_generator_carries_its_model_card():
    model, fields = load_generator("cuhk03-small")
    assert model.cfg.image_size == (128, 64) and fields["recipe"] == "small" and fields["dataset"] == "cuhk03-market"
    meta = read_metadata(resolve_generator("cuhk03-small"))
    # One command from scratch, with relative paths, on a named CPU and precision.
    assert "experiments/quality_run.py" in meta["command"] and "--init-from" not in meta["command"]
    assert "/work/" not in meta["command"] and float(meta["train_minutes"]) > 0
    assert meta["precision"] in ("bf16", "float32") and "threads" in meta["device"]
    card = json.loads(meta["eval"])
    assert card["split"] == "report" and card["persons"] == "0694-0743"  # The half no design choice saw.
    assert card["pairs"] >= 500 and card["model"]["mask_ssim"] > card["copy_source"]["mask_ssim"]
    assert resolve_generator("cuhk03-small").stat().st_size <= 16 * 2**20


@pytest.fixture(scope="module")
def held_out_pairs(tmp_path_factory):
    """40 test pairs of the bundled held-out people (persons 0694-0701, the report half: unseen)."""
    work = tmp_path_factory.mktemp("held-out")
    poses = HELD_OUT / "annotations.csv"
    pairs = run_build_pairs(HELD_OUT, work, PairConfig(num_test_pairs=40), poses, poses).test
    assert len(pairs) == 40 and set(pairs["pid"].astype(int)) <= set(range(694, 702))
    return work / "pairs-test.csv"


def test_bundled_generator_beats_copying_the_source_in_ssim_on_unseen_people(held_out_pairs, tmp_path):
    # No pose estimator needed: runs whether or not MediaPipe is installed.
    report = evaluate(HELD_OUT, held_out_pairs, HELD_OUT / "annotations.csv", tmp_path / "report",
                      checkpoint="cuhk03-small", device="cpu", progress=False, pckh=False)
    m, copy = report.metrics, report.metrics["baseline"]
    assert m["num_pairs"] == 40 and m["pckh"] is None
    assert m["ssim"] > copy["ssim"] and m["mask_ssim"] > copy["mask_ssim"]


def test_bundled_generator_beats_copying_the_source_in_pckh_on_unseen_people(held_out_pairs, tmp_path):
    pytest.importorskip("mediapipe")  # PCKh estimates the generated poses offline.
    report = evaluate(HELD_OUT, held_out_pairs, HELD_OUT / "annotations.csv", tmp_path / "report",
                      checkpoint="cuhk03-small", device="cpu", progress=False)
    m, copy, real = report.metrics, report.metrics["baseline"], report.metrics["real_target"]
    # The model card's promise: the generator puts people in the target pose more often than copying does,
    # and no generator beats the real targets (the estimator's ceiling).
    assert m["pckh"] > copy["pckh"] and m["pckh"] <= real["pckh"]


def test_cli_takes_the_name_and_explains_an_unknown_one(tmp_path):
    poses = HELD_OUT / "annotations.csv"
    result = CliRunner().invoke(cli, ["generate", str(HELD_OUT), "--per-id", "1", "--poses", str(poses),
                                      "--checkpoint", "cuhk03-small", "-o", str(tmp_path / "gen"), "--no-score",
                                      "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(tmp_path / "gen" / "manifest.csv", dtype={"pid": str})
    assert manifest["pid"].nunique() == 8 and (tmp_path / "gen" / manifest["image"].iloc[0]).is_file()

    result = CliRunner().invoke(cli, ["generate", str(HELD_OUT), "--per-id", "1", "--poses", str(poses),
                                      "--checkpoint", "cuhk03-large", "-o", str(tmp_path / "gen2")])
    assert result.exit_code == 1 and "cuhk03-large: no such checkpoint file" in result.output
    # Through click's error path (SystemExit); an uncaught exception would be the result's exception instead.
    assert isinstance(result.exception, SystemExit) and len(result.output.strip().splitlines()) == 1
