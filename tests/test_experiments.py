"""The scripts behind the model card and the re-ID tables (`experiments/`): their tables and their parsing."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest



def _bench(folder: Path, baseline_maps: list[float], augmented_maps: list[float]) -> Path:
    """A reid-benchmark metrics.json with the given mAP per seed (other metrics follow it)."""
    def arm(value, generated, seed):
        return {"rank1": value / 2, "rank5": value, "mAP": value, "mINP": value / 4, "train_images": 100,
                "generated_images": generated, "train_seconds": 60.0, "history": [{"step": 1, "mAP": value, "s": seed}]}
    runs = {str(s): {"baseline": arm(b, 0, s), "augmented": arm(a, 40, s)}
            for s, (b, a) in enumerate(zip(baseline_maps, augmented_maps))}
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"seeds": list(range(len(baseline_maps))), "runs": runs}))
    return folder


def test_reid_table_pairs_each_manifest_with_the_shared_baseline(tmp_path):
    from experiments import reid_table

    first = _bench(tmp_path / "a", [0.30, 0.34, 0.32], [0.31, 0.36, 0.32])
    second = _bench(tmp_path / "b", [0.30, 0.34, 0.32], [0.29, 0.33, 0.35])
    text = reid_table.table([first, second], ["ungated", "gated"])
    assert "| baseline | 100 (0) | 16.0% ± 1.0 | 32.0% ± 2.0 | 32.0% ± 2.0 | 8.0% ± 0.5 | 1.0 / 1.0 / 1.0 | |" in text
    # Paired: (+1, +2, 0) points has mean +1.0 and sd 1.0; (-1, -1, +3) has mean +0.3 and sd 2.3.
    assert "| ungated minus baseline (paired) | | +0.5 ± 0.5 | +1.0 ± 1.0 | +1.0 ± 1.0 |" in text
    # Mean +1.0, sd 1.0, n 3: t(0.975, 2) = 4.303 gives +-2.5; detectable (4.303 + 1.061) / sqrt(3) = 3.1.
    assert "(95% CI -1.5 to +3.5, n = 3; detectable 3.1) |" in text
    assert "| gated minus baseline (paired) | | +0.2 ± 1.2 | +0.3 ± 2.3 | +0.3 ± 2.3 |" in text
    assert "Seeds 0, 1, 2." in text
    fewer = _bench(tmp_path / "d", [0.30, 0.34], [0.29, 0.33])  # A folder with fewer seeds: the seeds both ran.
    assert "Seeds 0, 1." in reid_table.table([first, fewer], ["a", "d"])
    other = _bench(tmp_path / "c", [0.31, 0.34, 0.32], [0.3, 0.3, 0.3])  # Not the same baseline: refused.
    with pytest.raises(SystemExit, match="not .*'s; run it with --baseline-from"):
        reid_table.table([first, other], ["a", "c"])


def test_reid_settings_types_each_set_as_its_field():
    from experiments import reid_settings
    from reid_augment.errors import InputError

    cfg = reid_settings.parse_sets(["lr=3e-3", "steps=2400", "seeds=[0, 1]", "model=osnet_x0_25"], device="cpu")
    assert (cfg.lr, cfg.steps, cfg.seeds, cfg.model, cfg.device) == (3e-3, 2400, (0, 1), "osnet_x0_25", "cpu")
    with pytest.raises(InputError, match="unknown key 'step'"):
        reid_settings.parse_sets(["step=10"])
    with pytest.raises(InputError, match="expected int"):
        reid_settings.parse_sets(["batch_size=big"])


def _arm(folder: Path, pairs: Path, pckh: float, rec_l1: list[float], per_pair=(0.5, 0.5)) -> Path:
    from safetensors.torch import save_file
    import torch

    (folder / "report").mkdir(parents=True)
    (folder / "run").mkdir()
    save_file({"w": torch.zeros(1)}, str(folder / "g.safetensors"), metadata={"command": f"python q.py --out {folder.name}"})
    scores = {"ssim": 0.2, "mask_ssim": 0.8, "pckh": pckh}
    (folder / "quality_run.json").write_text(json.dumps(
        {"steps": [300, 0], "train_minutes": 30.0, "model": scores, "generator": str(folder / "g.safetensors"),
         "data": str(pairs.parent)}))
    (folder / "report" / "metrics.json").write_text(json.dumps(
        {"pairs": str(pairs), "num_pairs": 2, "baseline": {"ssim": 0.1, "mask_ssim": 0.7, "pckh": 0.3},
         "real_target": {"pckh": 0.7}}))
    (folder / "report" / "pairs.csv").write_text(
        "from,to,pckh\n" + "".join(f"a.jpg,{t},{p}\n" for t, p in zip(("b.jpg", "c.jpg"), per_pair)))
    lines = [{"step": 50 * (i + 1), "stage": "rec", "rec_l1": v} for i, v in enumerate(rec_l1)]
    lines.append({"step": 50 * (len(rec_l1) + 1), "stage": "ref", "rec_l1": 9.0})  # Not the reconstruction stage.
    (folder / "run" / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


def test_design_ab_puts_arms_scored_on_the_same_pairs_in_one_table(tmp_path):
    from experiments import design_ab
    from reid_augment.poses import PoseTable, write_poses

    # Target b has all 18 joints, target c 6 (its head box and four more): pooled PCKh weighs b three times c.
    full = np.tile(np.array([[10.0, 10.0]]), (18, 1)) + np.arange(18)[:, None]
    part = full.copy()
    part[[2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]] = -1
    write_poses(tmp_path / "annotations-test.csv", PoseTable.from_arrays(["b.jpg", "c.jpg"], [full, part]))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("from,to\na.jpg,b.jpg\na.jpg,c.jpg\n")
    a = _arm(tmp_path / "a", pairs, 0.40, [0.5, 0.4, 0.3, 0.3, 0.3])  # The last 4 reconstruction lines: 0.325.
    b = _arm(tmp_path / "b", pairs, 0.35, [0.2], per_pair=(1.0, 0.5))  # +0.5 on b's 18 joints: +9 / 24 pooled.
    text = design_ab.table([a, b])
    assert "| a | 300 + 0 | 30.0 | 0.3250 | 0.200 | 0.800 | 0.400 | - |" in text
    assert "| b | 300 + 0 | 30.0 | 0.2000 | 0.200 | 0.800 | 0.350 | +0.375 (" in text
    assert "| copy the source | - | - | - | 0.100 | 0.700 | 0.300 | |" in text and "python q.py --out b" in text
    other = tmp_path / "other.csv"
    other.write_text("from,to\nb.jpg,a.jpg\n")
    c = _arm(tmp_path / "c", other, 0.5, [0.1])
    with pytest.raises(SystemExit, match="other pairs"):
        design_ab.table([a, c])


def test_the_held_out_people_split_in_two_halves_that_share_no_person():
    from experiments.quality_run import split_pairs

    pairs = pd.DataFrame({"from": [f"a{i}" for i in range(10)], "to": [f"b{i}" for i in range(10)],
                          "pid": ["0644", "0644", "0645", "0646", "0646", "0647", "0648", "0648", "0649", "0650"]})
    validation, first = split_pairs(pairs, "validation")
    report, second = split_pairs(pairs, "report")
    assert (first, second) == ("0644-0646", "0647-0650")
    assert set(validation["pid"]) == {"0644", "0645", "0646"} and set(report["pid"]) == {"0647", "0648", "0649", "0650"}
    assert len(validation) + len(report) == len(pairs)
