"""The re-ID study's pieces: paired intervals, label targets, the low-data regime, the identity gate, and the
benchmark options that compose them (teacher labels, gate, ramp-in), on the bundled real sample."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.config import GenerateConfig
from reid_augment.errors import InputError
from reid_augment.generate import generate
from reid_augment.reid import labels
from reid_augment.reid.regime import Regime, parse_persons, select, select_folder
from reid_augment.reid.stats import describe, paired_interval
from reid_augment.reid_benchmark import MixedBatchSampler, ReidBenchmarkConfig, reid_benchmark, split_lists

pytest.importorskip("torchreid")

SHORT = dict(model="osnet_x0_25", steps=2, height=64, width=32, batch_size=8, device="cpu")


def test_paired_interval_against_hand_computed_t_values():
    d = [0.01, 0.03, 0.02, 0.05, 0.04]  # mean 0.03, sd 0.0158114, se 0.0070711
    r = paired_interval(d)
    t975, t80 = 2.7764451, 0.9409646  # Student t quantiles with 4 degrees of freedom (tables).
    se = np.std(d, ddof=1) / np.sqrt(5)
    assert r["mean"] == pytest.approx(0.03) and r["n"] == 5
    assert (r["low"], r["high"]) == pytest.approx((0.03 - t975 * se, 0.03 + t975 * se), rel=1e-6)
    assert r["detectable"] == pytest.approx((t975 + t80) * se, rel=1e-6)
    assert "95% CI +1.0 to +5.0, n = 5; detectable 2.6" in describe(r)
    one = paired_interval([0.02])
    assert one["sd"] is None and one["low"] is None and describe(one) == "+2.0 (one seed)"


def test_label_targets_are_distributions_of_the_asked_kind():
    pids = torch.tensor([0, 2])
    onehot = labels.targets("onehot", pids, 4)
    assert torch.equal(onehot, torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]]))
    smooth = labels.targets("smooth", pids, 4, eps=0.2)
    assert smooth[0].tolist() == pytest.approx([0.85, 0.05, 0.05, 0.05])
    assert torch.allclose(labels.targets("uniform", pids, 4), torch.full((2, 4), 0.25))
    teacher = labels.targets("teacher", pids, 4, teacher=torch.tensor([[2.0, 1, 1, 0], [0, 0, 1, 1]]))
    assert teacher[0].tolist() == pytest.approx([0.5, 0.25, 0.25, 0]) and torch.allclose(teacher.sum(1), torch.ones(2))
    # The loss against smoothed one-hot targets is torch's cross-entropy with label smoothing.
    logits = torch.randn(2, 4)
    ours = labels.soft_cross_entropy(logits, smooth).mean()
    assert ours == pytest.approx(torch.nn.functional.cross_entropy(logits, pids, label_smoothing=0.2).item(), rel=1e-5)
    with pytest.raises(ValueError, match="teacher"):
        labels.targets("teacher", pids, 4)


def test_regime_keeps_k_per_person_in_range_and_counts_the_short():
    names = [f"{p:04d}_c1s1_{i:06d}_00.jpg" for p in (1, 2, 3) for i in range(5 if p != 3 else 1)]
    pids = [n[:4] for n in names]
    sel = select(names, pids, Regime(persons=(2, 3), per_id=2, seed=0))
    kept = [n for n, k in zip(names, sel.keep) if k]
    assert sum(n.startswith("0002") for n in kept) == 2 and sum(n.startswith("0003") for n in kept) == 1
    assert not any(n.startswith("0001") for n in kept) and sel.short == 1 and sel.identities == 2
    assert "1 of them have fewer than K" in sel.summary()
    # Seeded per person: another seed picks others, and a person's pick does not depend on the rest.
    again = select(names, pids, Regime(persons=(2, 3), per_id=2, seed=0))
    assert np.array_equal(again.keep, sel.keep)
    others = select(names[5:], pids[5:], Regime(persons=(2, 3), per_id=2, seed=0))
    assert np.array_equal(others.keep, sel.keep[5:])
    assert any(not np.array_equal(select(names, pids, Regime(per_id=2, seed=s)).keep, sel.keep) for s in (1, 2, 3))
    assert parse_persons("322-643") == (322, 643)
    with pytest.raises(InputError, match="--persons 'x'"):
        parse_persons("x")
    with pytest.raises(InputError, match="--real-per-id 0"):
        Regime(per_id=0)
    with pytest.raises(InputError, match="no training image left"):
        select(names, pids, Regime(persons=(7, 9)))


def test_subset_folder_and_the_benchmark_keep_the_same_images(market_root, cuhk_dir, tmp_path):
    regime = Regime(persons=(2, 5), per_id=3, seed=4)
    result = CliRunner().invoke(cli, ["subset", str(market_root), "-o", str(tmp_path / "k3"), "--persons", "2-5",
                                      "--real-per-id", "3", "--subset-seed", "4", "--poses",
                                      str(cuhk_dir / "annotations.csv")])
    assert result.exit_code == 0, result.output
    assert "12 real images of 4 identities kept" in result.output
    linked = sorted(p.name for p in (tmp_path / "k3" / "bounding_box_train").iterdir())
    lists = split_lists(market_root, None, regime=regime)
    assert linked == sorted(os.path.basename(p) for p, *_ in lists.train) and len(linked) == 12
    assert lists.classes == ["0002", "0003", "0004", "0005"] and "12 real images" in lists.selection
    rows = (tmp_path / "k3" / "annotations.csv").read_text().splitlines()
    assert rows[0].startswith("name:") and sorted(r.split(":")[0] for r in rows[1:]) == linked
    assert (tmp_path / "k3" / "query").is_symlink()


@pytest.fixture(scope="module")
def k3(tmp_path_factory, market_root, checkpoint, cuhk_dir):
    """Persons 1-6 with 3 real images each, and 2 generated images per person made from those 3 only."""
    out = tmp_path_factory.mktemp("k3")
    select_folder(market_root, out / "data", Regime(per_id=3, seed=0), cuhk_dir / "annotations.csv")
    made = generate(out / "data", checkpoint, out / "data" / "annotations.csv", out / "gen",
                    GenerateConfig(per_id=2, num_workers=0, score=False), device="cpu", progress=False)
    return out, made.manifest


def test_low_data_teacher_labels_and_identity_gate_end_to_end(market_root, k3):
    out, manifest = k3
    cfg = ReidBenchmarkConfig(**SHORT, real_per_id=3, gen_labels="teacher", teacher="baseline", id_gate=-1.0,
                              gen_from=0.5)
    result = reid_benchmark(market_root, manifest, out / "bench", cfg, progress=False)
    base, aug = result.runs[0]["baseline"], result.runs[0]["augmented"]
    assert base["train_images"] == 18 and aug["train_images"] == 18 + 12 and aug["gen_labels"] == "teacher"
    assert aug["gated_out"] == 0 and 0 < aug["teacher_source_prob"] <= 1  # Margin -1 keeps every image.
    saved = torch.load(out / "bench" / "seed-0" / "baseline" / "checkpoint.pt", weights_only=True)
    assert saved["arch"] == "osnet_x0_25" and saved["classes"] == [f"{p:04d}" for p in range(1, 7)]
    m = json.loads((out / "bench" / "metrics.json").read_text())
    assert "18 real images of 6 identities" in m["selection"] and m["difference"]["interval"]["mAP"]["n"] == 1
    report = (out / "bench" / "report.md").read_text()
    assert "soft labels from the seed's baseline arm" in report and "from 50% of the steps on" in report
    # A gate nobody passes (margin 1) trains on the originals alone.
    strict = reid_benchmark(market_root, manifest, out / "strict", ReidBenchmarkConfig(**{**SHORT, "seeds": (0,)},
                            real_per_id=3, teacher="baseline", id_gate=1.0), progress=False,
                            baseline_from=out / "bench")  # Other labels and gate: the same baseline, reused.
    assert strict.runs[0]["augmented"]["gated_out"] == 12 and strict.runs[0]["augmented"]["generated_images"] == 0
    assert strict.metrics["baselines_from"]["seeds"] == [0] and strict.runs[0]["baseline"] == base


def test_generated_images_of_dropped_real_images_are_refused(market_root, manifest_full):
    with pytest.raises(InputError, match="generated images come from real images that .* leaves out"):
        split_lists(market_root, manifest_full, regime=Regime(per_id=2))


@pytest.fixture(scope="module")
def manifest_full(tmp_path_factory, market_root, checkpoint, cuhk_dir):
    out = tmp_path_factory.mktemp("full")
    return generate(market_root, checkpoint, cuhk_dir / "annotations.csv", out,
                    GenerateConfig(per_id=3, num_workers=0, score=False), device="cpu", progress=False).manifest


@pytest.fixture(scope="module")
def reid_ckpt(market_root, k3):
    """A re-ID model trained (two steps) on the real images of k3's persons: a baseline arm's checkpoint."""
    out, manifest = k3
    reid_benchmark(market_root, manifest, out / "plain", ReidBenchmarkConfig(**SHORT, real_per_id=3), progress=False)
    return out / "plain" / "seed-0" / "baseline" / "checkpoint.pt"


def test_identity_filter_scores_and_keeps_by_margin(market_root, k3, reid_ckpt, tmp_path):
    out, manifest = k3
    ckpt = reid_ckpt
    args = ["filter", str(manifest), "--reid-model", str(ckpt), "--root", str(market_root), "--device", "cpu"]
    every = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "all.csv"), "--margin", "-1"])
    assert every.exit_code == 0, every.output and "kept 12 of 12" in every.output
    table = pd.read_csv(tmp_path / "all.csv")
    assert len(table) == 12 and table["id_prob"].between(0, 1).all() and (table["id_margin"] <= table["id_prob"]).all()
    assert all((tmp_path / p).is_file() for p in table["image"])  # Paths relative to the new manifest.
    top1 = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "top1")])
    kept = pd.read_csv(tmp_path / "top1" / "manifest.csv")
    assert top1.exit_code == 0 and (kept["id_margin"] > 0).all() and len(kept) == (table["id_margin"] > 0).sum()
    # A model of another class count is one line, no traceback.
    other = tmp_path / "other.pt"
    state = torch.load(ckpt, weights_only=True)
    state["classes"] = state["classes"][:5]
    torch.save(state, other)
    bad = CliRunner().invoke(cli, args[:3] + [str(other)] + args[4:] + ["-o", str(tmp_path / "x.csv")])
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and bad.output.count("\n") == 1
    assert "identities" in bad.output


def test_mistakes_in_the_new_options_are_one_line(market_root, k3, tmp_path):
    _, manifest = k3
    base = ["reid-benchmark", str(market_root), "--manifest", str(manifest), "-o", str(tmp_path / "o"),
            "--device", "cpu"]
    for extra, words in ((["--model", "resnet-50"], "not a torchreid model (did you mean resnet50"),
                         (["--gen-labels", "teacher"], "need a re-ID model"),
                         (["--persons", "9"], "FIRST-LAST")):
        result = CliRunner().invoke(cli, base + extra)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1 and words in result.output
    assert not (tmp_path / "o").exists()


def test_ramp_in_serves_originals_only_before_its_step():
    generated = np.array([False] * 40 + [True] * 10)
    sampler = MixedBatchSampler(generated, batch_size=8, ratio=0.25, seed=0)
    sampler.ramp = 6
    sampler.set_steps(0, 12)
    batches = list(sampler)
    assert all(not generated[b].any() and len(b) == 8 for b in map(np.array, batches[:6]))
    assert all(generated[b].sum() == 2 for b in map(np.array, batches[6:]))


def test_identity_retention_is_one_for_copies_of_the_source_and_the_targets_own_for_copies_of_the_target(
        market_root, cuhk_dir, reid_ckpt, tmp_path):
    from reid_augment.evaluate import evaluate

    test = sorted(p.name for p in (market_root / "bounding_box_test").iterdir())
    query = sorted(p.name for p in (market_root / "query").iterdir())
    pairs = pd.DataFrame({"from": query[:4], "to": [next(t for t in test if t[:4] == q[:4]) for q in query[:4]]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    where = {p.name: p for p in market_root.rglob("*.jpg")}
    for kind, column in (("copies-of-source", "from"), ("copies-of-target", "to")):
        folder = tmp_path / kind
        folder.mkdir()
        for src, tgt, name in zip(pairs["from"], pairs["to"], pairs[column]):
            (folder / f"{src}___{tgt}.jpg").write_bytes(where[name].read_bytes())
    poses = cuhk_dir / "annotations.csv"
    same = evaluate(market_root, tmp_path / "pairs.csv", poses, tmp_path / "r1", generated=tmp_path / "copies-of-source",
                    reid_model=reid_ckpt, device="cpu", progress=False, pckh=False).metrics["identity"]
    assert same["queries"] == 4 and same["identity_retention"] == pytest.approx(1.0)
    assert same["map_generated"] == pytest.approx(same["map_source"]) and 0 < same["map_source"] <= 1
    moved = evaluate(market_root, tmp_path / "pairs.csv", poses, tmp_path / "r2", generated=tmp_path / "copies-of-target",
                     reid_model=reid_ckpt, device="cpu", progress=False, pckh=False)
    identity = moved.metrics["identity"]
    assert identity["map_generated"] == pytest.approx(identity["map_real_target"])
    assert identity["identity_retention"] == pytest.approx(identity["real_target_retention"])
    assert "Identity retention (4 pairs" in (tmp_path / "r2" / "report.md").read_text()
    assert "identity retention" in moved.summary()
