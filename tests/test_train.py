import json

import pandas as pd
import pytest
import torch

from reid_augment.checkpoint import FORMAT, load_checkpoint, load_generator
from reid_augment.config import PairConfig, load_recipe
from reid_augment.errors import InputError, TrainingError
from reid_augment.pairs import build_pairs, save_pair_set
from reid_augment.poses import read_poses


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cuhk_dir):
    out = tmp_path_factory.mktemp("work")
    save_pair_set(out, build_pairs(read_poses(cuhk_dir / "annotations.csv"), PairConfig(test_ids=2)), PairConfig())
    return out


def _train(cuhk_dir, workdir, run_dir, *overrides, **kwargs):
    from reid_augment.train import train

    recipe = load_recipe("tiny", ["train.num_workers=0", *overrides])
    return train(cuhk_dir, recipe, run_dir, workdir / "pairs-train.csv", workdir / "poses.csv", device="cpu",
                 progress=False, **kwargs)


def test_tiny_recipe_lowers_the_stage_one_loss(cuhk_dir, workdir, tmp_path):
    run = tmp_path / "run"
    ckpt = _train(cuhk_dir, workdir, run, "train.rec_steps=80", "train.log_every=10", stage="rec")
    logs = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == list(range(10, 81, 10))
    assert logs[-1]["rec_l1"] < 0.8 * logs[0]["rec_l1"]
    assert (run / "recipe.yaml").is_file() and (run / "samples" / "step-0000080.png").is_file()
    state = load_checkpoint(ckpt)
    assert state["format"] == FORMAT and state["step"] == 80 and state["stage"] == "rec"
    assert {"rec", "ref", "disc", "opt_rec", "opt_ref", "opt_disc", "rng", "model_config"} <= set(state)
    model, _ = load_generator(ckpt)
    assert model.rec.image_encoder.stem[0].weight.shape[1] == 3 + 18
    shared, fields = load_generator(run / "checkpoints" / "generator.safetensors")
    assert fields["step"] == 80 and fields["recipe"] == "tiny" and fields["dataset"] == cuhk_dir.name
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, shared.state_dict()[name]), name


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(cuhk_dir, workdir, tmp_path):
    short = ("train.rec_steps=3", "train.checkpoint_every=2", "train.log_every=1")
    full = _train(cuhk_dir, workdir, tmp_path / "a", *short, "train.ref_steps=3")
    # Stop in the middle of the refinement stage, then rerun into the same run dir.
    _train(cuhk_dir, workdir, tmp_path / "b", *short, "train.ref_steps=1")
    resumed = _train(cuhk_dir, workdir, tmp_path / "b", *short, "train.ref_steps=3", resume=True)
    a, b = load_checkpoint(full), load_checkpoint(resumed)
    assert a["step"] == b["step"] == 6
    for key in ("rec", "ref", "disc"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(tensor, b[key][name], rtol=0, atol=0, msg=f"{key}.{name}")
    log_a = (tmp_path / "a" / "stats.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b" / "stats.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k not in ("images_per_s", "data_wait")}
                           for x in lines]  # noqa: E731
    assert strip(log_a) == strip(log_b)


def test_missing_images_are_listed_before_training(cuhk_dir, workdir, tmp_path):
    pairs = pd.read_csv(workdir / "pairs-train.csv")
    pairs.loc[0, "to"] = "0099_c1s1_000000_00.jpg"
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    from reid_augment.train import train

    with pytest.raises(InputError, match="no such image in the image folder: 0099_c1s1_000000_00.jpg"):
        train(cuhk_dir, load_recipe("tiny"), tmp_path / "run", tmp_path / "pairs.csv", workdir / "poses.csv",
              device="cpu", progress=False)
    with pytest.raises(InputError, match="nothing to resume from"):
        _train(cuhk_dir, workdir, tmp_path / "fresh", resume=True)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(cuhk_dir, workdir, tmp_path, monkeypatch):
    import reid_augment.train as train_mod

    run = tmp_path / "run"
    _train(cuhk_dir, workdir, run, "train.rec_steps=2", "train.ref_steps=0", stage="rec")
    monkeypatch.setattr(train_mod, "l1", lambda a, b: (a - b).abs().mean() * float("nan"))
    with pytest.raises(TrainingError, match="non-finite"):
        _train(cuhk_dir, workdir, run, "train.rec_steps=4", "train.log_every=1", stage="rec")
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 2


def test_ddp_under_torchrun_on_cpu(cuhk_dir, workdir, tmp_path):
    """Two processes (gloo): rank 0 alone writes, the run finishes both stages."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "reid_augment.cli", "train", str(cuhk_dir), "-w", str(workdir), "--recipe", "tiny", "-o", str(tmp_path / "run"),
           "--set", "train.rec_steps=2", "--set", "train.ref_steps=1", "--set", "train.num_workers=0",
           "--set", "train.log_every=1", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("Trained 'tiny'") == 1
    logs = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 3
