"""reid-benchmark: both arms train with torchreid's own machinery from the same weights for the same steps, differ
only by the manifest, follow the data set's protocol, resume bit for bit, and report over seeds."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.config import GenerateConfig
from reid_augment.errors import InputError
from reid_augment.generate import generate
from reid_augment.reid_benchmark import (MixedBatchSampler, ReidBenchmarkConfig, aggregate, lr_factor, minp,
                                         reid_benchmark, split_lists)

pytest.importorskip("torchreid")

FAST = dict(model="osnet_x0_25", epochs=1, height=64, width=32, batch_size=8, device="cpu")
SHORT = {**FAST, "steps": 2}  # One evaluation after two steps: for what does not need a real epoch.


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, market_root, checkpoint, cuhk_dir):
    out = tmp_path_factory.mktemp("generated")
    return generate(market_root, checkpoint, cuhk_dir / "annotations.csv", out,
                    GenerateConfig(per_id=3, num_workers=0, score=False), device="cpu", progress=False).manifest


class Killed(BaseException):
    """What a kill looks like to the run: not an Exception, so nothing on the way catches it."""


class Recorder:
    """A callback that keeps (seed, arm, step) and the weights each arm starts from; raises at `stop_at`."""

    def __init__(self, stop_at: tuple | None = None):
        self.calls, self.initial, self.stop_at = [], {}, stop_at

    def __call__(self, seed, arm, step, model):
        self.calls.append((seed, arm, step))
        if step == 0:
            self.initial[seed, arm] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if (seed, arm, step) == self.stop_at:
            raise Killed


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, market_root, manifest):
    """Seeds 0 and 1, two steps per arm, with the weights each arm started from."""
    out = tmp_path_factory.mktemp("two-seeds") / "bench"
    recorder = Recorder()
    result = reid_benchmark(market_root, manifest, out, ReidBenchmarkConfig(**SHORT, seeds=(0, 1)), progress=False,
                            callback=recorder)
    return out, result, recorder


def test_both_arms_run_and_differ_by_exactly_the_manifest(market_root, manifest, tmp_path):
    result = reid_benchmark(market_root, manifest, tmp_path / "a", ReidBenchmarkConfig(**FAST), progress=False)
    base, aug = result.runs[0]["baseline"], result.runs[0]["augmented"]
    assert aug["train_images"] - base["train_images"] == len(pd.read_csv(manifest)) == aug["generated_images"] == 18
    assert base["generated_images"] == 0 and base["identities"] == aug["identities"] == 6
    lists = split_lists(market_root, manifest)
    generated = {p for p, *_ in lists.train if "_vdg" in p}
    assert len(generated) == 18 and all(item[3] == 1 for item in lists.train if item[0] in generated)
    # Steps matched: one baseline epoch of steps for both arms, though the augmented arm holds 18 more images.
    assert base["steps"] == aug["steps"] == base["train_images"] // 8 < aug["train_images"] // 8
    assert [h["lr"] for h in base["history"]] == [h["lr"] for h in aug["history"]]
    for record in (base, aug):
        assert 0 <= record["mAP"] <= 1 and 0 <= record["mINP"] <= 1
        assert 0 <= record["rank1"] <= record["rank5"] <= record["rank10"] <= 1
        assert len(record["history"]) == 1 and np.isfinite(record["history"][0]["loss"])
        assert record["initialisation"].startswith("from scratch") and record["seconds_per_step"] > 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["runs"]["0"]["augmented"]["steps"] == metrics["arms"]["baseline"]["steps"] == base["steps"]
    assert metrics["difference"]["mAP"]["mean"] == pytest.approx(aug["mAP"] - base["mAP"])
    assert metrics["difference"]["mAP"]["std"] is None and metrics["dataset"] == "Market-1501"
    assert (metrics["num_query"], metrics["num_gallery"]) == (len(lists.query), len(lists.gallery)) == (6, 53)
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| difference |" in report and "Market-1501 protocol" in report and "0000 distractors" in report
    assert "6 query and 53 gallery images" in report and "One seed is an anecdote" in report
    assert (tmp_path / "a" / "curves.png").stat().st_size > 1000
    # Resumable per arm: a rerun with the same settings finds both arms done and trains nothing.
    recorder = Recorder()
    again = reid_benchmark(market_root, manifest, tmp_path / "a", ReidBenchmarkConfig(**FAST), progress=False,
                           callback=recorder)
    assert again.runs == result.runs and recorder.calls == []


def test_epoch_matched_on_request_and_a_generated_share_from_the_cli(market_root, manifest, tmp_path):
    result = CliRunner().invoke(cli, ["reid-benchmark", str(market_root), "--manifest", str(manifest), "-o",
                                      str(tmp_path / "o"), "--model", "osnet_x0_25", "--epochs", "1", "--height", "64",
                                      "--width", "32", "--batch-size", "8", "--gen-ratio", "0.25",
                                      "--gen-label-smooth", "1.0", "--match-epochs", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "mAP: baseline" in result.output and "18 generated images" in result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["settings"]["gen_ratio"] == 0.25 and metrics["settings"]["gen_label_smooth"] == 1.0
    base, aug = metrics["runs"]["0"]["baseline"], metrics["runs"]["0"]["augmented"]
    originals = base["train_images"]
    # One epoch each: the baseline's batches of 8 originals, the augmented arm's of 6 originals and 2 generated.
    assert (base["steps"], aug["steps"]) == (originals // 8, originals // 6) and aug["epochs"] == base["epochs"] == 1
    assert "epoch-matched" in (tmp_path / "o" / "report.md").read_text()


def test_an_arm_killed_mid_way_resumes_to_the_uninterrupted_result(market_root, manifest, tmp_path):
    cfg = ReidBenchmarkConfig(**{**FAST, "steps": 4, "eval_every": 2})
    whole = reid_benchmark(market_root, manifest, tmp_path / "whole", cfg, progress=False)
    with pytest.raises(Killed):
        reid_benchmark(market_root, manifest, tmp_path / "cut", cfg, progress=False,
                       callback=Recorder(stop_at=(0, "baseline", 2)))
    kept = torch.load(tmp_path / "cut" / "seed-0" / "baseline" / "checkpoint.pt", weights_only=True)
    assert kept["step"] == 2 and not (tmp_path / "cut" / "seed-0" / "baseline" / "result.json").exists()
    recorder = Recorder()
    resumed = reid_benchmark(market_root, manifest, tmp_path / "cut", cfg, progress=False, callback=recorder)
    # The baseline went on from its checkpoint (it did not start over) and ended where the whole run did.
    assert recorder.calls[:2] == [(0, "baseline", 2), (0, "baseline", 4)]
    assert resumed.runs[0]["baseline"]["history"] == whole.runs[0]["baseline"]["history"]
    for arm in ("baseline", "augmented"):
        ours, theirs = (torch.load(d / "seed-0" / arm / "checkpoint.pt", weights_only=True)["model"]
                        for d in (tmp_path / "cut", tmp_path / "whole"))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), arm


def test_both_arms_start_from_identical_weights(two_seeds):
    _, _, recorder = two_seeds
    for seed in (0, 1):
        base, aug = recorder.initial[seed, "baseline"], recorder.initial[seed, "augmented"]
        assert base.keys() == aug.keys() and all(torch.equal(base[k], aug[k]) for k in base)
    # ... and the seed decides them: the comparison above is not between two constant initialisations.
    first, second = recorder.initial[0, "baseline"], recorder.initial[1, "baseline"]
    assert any(not torch.equal(first[k], second[k]) for k in first if first[k].is_floating_point())


def test_seeds_give_mean_std_and_the_paired_difference(two_seeds):
    out, result, _ = two_seeds
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1] and set(metrics["runs"]) == {"0", "1"}
    runs = {int(s): arms for s, arms in metrics["runs"].items()}
    for arm in ("baseline", "augmented"):
        values = [runs[s][arm]["mAP"] for s in (0, 1)]
        assert metrics["arms"][arm]["mAP"]["mean"] == pytest.approx(np.mean(values))
        assert metrics["arms"][arm]["mAP"]["std"] == pytest.approx(np.std(values, ddof=1))
    paired = [runs[s]["augmented"]["rank1"] - runs[s]["baseline"]["rank1"] for s in (0, 1)]
    assert metrics["difference"]["per_seed"]["1"]["rank1"] == pytest.approx(paired[1])
    assert metrics["difference"]["rank1"]["mean"] == pytest.approx(np.mean(paired))
    assert metrics["difference"]["rank1"]["std"] == pytest.approx(np.std(paired, ddof=1))
    report = (out / "report.md").read_text()
    assert "over 2 seeds" in report and "| 1 |" in report and " ± " in report
    assert "over 2 seeds" in result.summary()


def test_paired_difference_is_taken_within_each_seed():
    # Seed 1 lifts both arms by 10 points: the paired difference stays exactly 2 points, with no spread.
    runs = {s: {arm: {"rank1": 0, "rank5": 0, "rank10": 0, "mINP": 0, "mAP": 0.1 * s + 0.02 * (arm == "augmented"),
                      "train_images": 10, "generated_images": 0, "identities": 2, "steps": 1, "epochs": 1,
                      "initialisation": ""} for arm in ("baseline", "augmented")} for s in (0, 1)}
    stats = aggregate(runs)
    assert stats["difference"]["mAP"]["mean"] == pytest.approx(0.02)
    assert stats["difference"]["mAP"]["std"] == pytest.approx(0, abs=1e-12)
    assert stats["arms"]["baseline"]["mAP"]["std"] == pytest.approx(np.std([0, 0.1], ddof=1))


def test_a_rerun_with_other_settings_is_refused_until_force(two_seeds, market_root, manifest, tmp_path):
    out = tmp_path / "bench"
    shutil.copytree(two_seeds[0], out)
    before = json.loads((out / "seed-0" / "baseline" / "result.json").read_text())
    args = ["reid-benchmark", str(market_root), "--manifest", str(manifest), "-o", str(out), "--model", "osnet_x0_25",
            "--steps", "2", "--height", "64", "--width", "32", "--batch-size", "8", "--device",
            "cpu", "--seeds", "0", "--lr", "0.01"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit)
    assert refused.output.startswith("Error: ") and refused.output.count("\n") == 1
    assert "settings.json" in refused.output and "lr 0.0003 -> 0.01" in refused.output and "--force" in refused.output
    # Fewer seeds is no difference (seeds pick runs), nor is --epochs under --steps (here 30, there 1).
    assert "seeds" not in refused.output and "epochs" not in refused.output
    assert json.loads((out / "seed-0" / "baseline" / "result.json").read_text()) == before
    forced = CliRunner().invoke(cli, args + ["--force"])
    assert forced.exit_code == 0, forced.output
    assert not (out / "seed-1").exists() and json.loads((out / "settings.json").read_text())["lr"] == 0.01
    after = json.loads((out / "seed-0" / "baseline" / "result.json").read_text())
    assert after["history"][0]["lr"] == pytest.approx(0.01 * lr_factor("step", 1, 2)) != before["history"][0]["lr"]


@pytest.mark.parametrize("ratio, batch, problem", [(0.99, 32, "no original image"), (0.01, 32, "no generated image"),
                                                   (0.5, 2, None), (0.2, 2, "no generated image"),
                                                   (0.8, 2, "no original image")])
def test_gen_ratio_must_leave_both_kinds_in_a_batch(ratio, batch, problem):
    if problem is None:
        assert ReidBenchmarkConfig(gen_ratio=ratio, batch_size=batch).gen_ratio == ratio
        return
    with pytest.raises(InputError, match=f"--gen-ratio {ratio}: .*{problem}; at --batch-size {batch} use"):
        ReidBenchmarkConfig(gen_ratio=ratio, batch_size=batch)


def test_gen_ratio_errors_are_one_line_from_the_cli(market_root, manifest, tmp_path):
    base = ["reid-benchmark", str(market_root), "--manifest", str(manifest), "-o", str(tmp_path / "o")]
    for ratio, code in (("0.99", 1), ("1.5", 2), ("0", 2)):
        result = CliRunner().invoke(cli, base + ["--gen-ratio", ratio])
        assert result.exit_code == code and isinstance(result.exception, SystemExit), ratio
        assert result.output.strip().splitlines()[-1].startswith("Error: ") and "--gen-ratio" in result.output
    assert not (tmp_path / "o").exists()  # Refused before anything was written.
    with pytest.raises(InputError, match="--steps and --match-epochs"):
        ReidBenchmarkConfig(steps=10, match_epochs=True)
    with pytest.raises(InputError, match="--seeds 0,0"):
        ReidBenchmarkConfig(seeds=(0, 0))


def _with_junk_and_distractors(src, dst):
    """A copy of a Market-1501 root with two distractors (0000) and two junk boxes (-1) in its gallery."""
    shutil.copytree(src, dst)
    gallery = sorted((dst / "bounding_box_test").glob("*.jpg"))
    for i, person in enumerate(("0000", "0000", "-1", "-1")):
        shutil.copy(gallery[i], dst / "bounding_box_test" / f"{person}_c{i % 2 + 1}s1_00010{i}_00.jpg")
    return dst


def test_market_gallery_keeps_distractors_and_drops_junk_as_torchreid(market_root, tmp_path):
    from torchreid.reid.data.datasets.image.market1501 import Market1501

    root = _with_junk_and_distractors(market_root, tmp_path / "market1501" / "Market-1501-v15.09.15")
    lists = split_lists(root, None)
    for split, folder in (("gallery", "bounding_box_test"), ("query", "query"), ("train", "bounding_box_train")):
        theirs = Market1501.process_dir(None, str(root / folder))  # torchreid's own reading of the folder.
        assert sorted(p for p, *_ in getattr(lists, split)) == sorted(p for p, *_ in theirs), split
    names = [p.rsplit("/", 1)[1] for p, *_ in lists.gallery]
    assert sum(n.startswith("0000_") for n in names) == 2 and not any(n.startswith("-1_") for n in names)
    assert lists.dataset == "Market-1501" and "0000 distractors kept" in lists.protocol
    # A distractor is nobody's match: it takes an id of its own, shared with no query.
    distractor_id = next(pid for p, pid, *_ in lists.gallery if "/0000_" in p)
    assert distractor_id not in {pid for _, pid, *_ in lists.query}


def test_duke_and_msmt17_splits_are_torchreids(layout_roots):
    from torchreid.reid.data.datasets.image.dukemtmcreid import DukeMTMCreID
    from torchreid.reid.data.datasets.image.msmt17 import MSMT17

    duke, msmt = layout_roots["duke"], layout_roots["msmt"]
    lists = split_lists(duke, None)
    for split, folder in (("gallery", "bounding_box_test"), ("query", "query")):
        theirs = DukeMTMCreID.process_dir(None, str(duke / folder))
        assert sorted(p for p, *_ in getattr(lists, split)) == sorted(p for p, *_ in theirs), split
    assert lists.dataset == "DukeMTMC-reID"
    lists = split_lists(msmt, None)
    for split, name in (("gallery", "list_gallery.txt"), ("query", "list_query.txt"), ("train", "list_train.txt")):
        theirs = MSMT17.process_dir(None, str(msmt / ("train" if split == "train" else "test")), str(msmt / name))
        assert sorted(p for p, *_ in getattr(lists, split)) == sorted(p for p, *_ in theirs), split
        assert len({pid for _, pid, *_ in getattr(lists, split)}) == len({pid for _, pid, _ in theirs}), split
    assert lists.dataset == "MSMT17" and any("/0000_" in p for p, *_ in lists.gallery)  # Person 0000 is real.


def test_msmt17_whose_test_names_repeat_training_names_is_benchmarked(layout_roots):
    root = layout_roots["msmt2"]  # Test names repeat training names: scanning all splits at once refuses them.
    lists = split_lists(root, None)
    train = {os.path.basename(p) for p, *_ in lists.train}
    assert train & {os.path.basename(p) for p, *_ in lists.query + lists.gallery}
    assert len(lists.train) == (root / "list_train.txt").read_text().count("\n")


def test_mixed_batches_hold_the_asked_share_and_every_original_once_per_pass():
    generated = np.array([False] * 40 + [True] * 10)
    sampler = MixedBatchSampler(generated, batch_size=8, ratio=0.25, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == sampler.per_pass == 40 // 6
    assert all(sum(generated[i] for i in b) == 2 and len(b) == 8 for b in batches)
    originals = [i for b in batches for i in b if not generated[i]]
    assert len(originals) == len(set(originals)) == 36
    # One stream over passes: any range of steps (a resumed round) is that slice of the uninterrupted stream.
    sampler.set_steps(0, 3 * sampler.per_pass)
    stream = list(sampler)
    assert stream[:len(batches)] == batches and stream[len(batches):2 * len(batches)] != batches
    resumed = MixedBatchSampler(generated, 8, 0.25, 0)
    resumed.set_steps(5, 14)
    assert list(resumed) == stream[5:14] and list(MixedBatchSampler(generated, 8, 0.25, 1)) != batches


def test_learning_rate_is_a_function_of_the_step():
    assert [lr_factor("step", s, 6) for s in range(6)] == [1, 1, 1, 1, 0.1, 0.1]
    assert [lr_factor("constant", s, 6, warmup=2) for s in range(3)] == [0.5, 1, 1]
    cosine = [lr_factor("cosine", s, 10) for s in range(10)]
    assert cosine[0] == 1 and all(a > b for a, b in zip(cosine, cosine[1:])) and cosine[-1] < 0.03


def test_minp_against_a_hand_computed_case():
    # One query (person 1, camera 0); gallery by distance: person 2, person 1 (cam 1), person 3, person 1 (cam 1).
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]])
    value = minp(distmat, np.array([1]), np.array([2, 1, 3, 1]), np.array([0]), np.array([1, 1, 1, 1]))
    assert value == pytest.approx(2 / 4)


def test_baseline_from_reuses_another_runs_baselines_under_the_same_settings(two_seeds, market_root, manifest,
                                                                              tmp_path):
    source = two_seeds[0]
    shutil.copytree(os.path.dirname(manifest), tmp_path / "other")  # Another manifest (a copy elsewhere) ...
    other = tmp_path / "other" / os.path.basename(manifest)  # ... is the only difference.
    recorder = Recorder()
    cfg = ReidBenchmarkConfig(**SHORT, seeds=(0,))
    result = reid_benchmark(market_root, other, tmp_path / "bench", cfg, progress=False, callback=recorder,
                            baseline_from=source)
    assert {arm for _, arm, _ in recorder.calls} == {"augmented"}  # The baseline was not trained again ...
    ours = json.loads((tmp_path / "bench" / "seed-0" / "baseline" / "result.json").read_text())
    assert ours == json.loads((source / "seed-0" / "baseline" / "result.json").read_text())  # ... but copied.
    assert result.metrics["baselines_from"]["seeds"] == [0] and "--baseline-from" in (
        tmp_path / "bench" / "report.md").read_text()
    with pytest.raises(InputError, match=r"other settings \(lr 0.0003 -> 0.01\)"):
        reid_benchmark(market_root, other, tmp_path / "bench2", ReidBenchmarkConfig(**SHORT, seeds=(0,), lr=0.01),
                       progress=False, baseline_from=source)
