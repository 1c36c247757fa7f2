"""The demo: every stage on the bundled sample, as `reid-augment demo` runs it (fewer training steps)."""

import json

import pandas as pd

from reid_augment.demo import run_demo


def test_demo_runs_every_stage(tmp_path):
    said = []
    paths = run_demo(tmp_path / "demo", say=said.append, train_steps=(6, 3), progress=False)
    for key in ("contact_sheet", "manifest", "checkpoint", "metrics"):
        assert paths[key].is_file(), key
    assert paths["checkpoint"].parent.parent.name == "tiny"  # The short run trains, whatever generates.
    manifest = pd.read_csv(paths["manifest"], dtype={"pid": str})  # The bundled generator, on unseen people.
    assert manifest.groupby("pid").size().eq(4).all()
    assert manifest.groupby("pid")["pose_from"].nunique().eq(4).all()  # Four different canonical poses each.
    assert set(manifest["pid"]) == {f"{p:04d}" for p in range(694, 702)}  # The report half: never designed on.
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["num_pairs"] == 40 and metrics["mask_ssim"] > metrics["baseline"]["mask_ssim"]
    assert [s[:5] for s in said if s.startswith("[")] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert said[-1].startswith("Done. Contact sheet:")
