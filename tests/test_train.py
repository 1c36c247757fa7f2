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


def _torchrun(nproc, *args, threads=1, script=("-m", "reid_augment.cli"), timeout=300):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *script,
           *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_processes_train_to_the_weights_of_one(cuhk_dir, workdir, tmp_path):
    """The recipe's batch is the global batch: 2 x 4 under DDP is the same run as 1 x 8, up to float noise."""
    args = ["train", cuhk_dir, "-w", workdir, "--recipe", "tiny", "--stage", "rec", "--set", "train.rec_steps=8",
            "--set", "train.log_every=4", "--device", "cpu"]
    runs = {}
    for name, nproc, threads in (("one_1t", 1, 1), ("one_2t", 1, 2), ("two", 2, 1)):
        done = _torchrun(nproc, *args, "-o", tmp_path / name, threads=threads)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = load_checkpoint(tmp_path / name / "checkpoints" / "latest.pt")
    def gap(a, b):
        return max((a["rec"][k] - b["rec"][k]).abs().max().item() for k in a["rec"])
    thread_noise = gap(runs["one_1t"], runs["one_2t"])
    assert gap(runs["one_1t"], runs["two"]) <= max(10 * thread_noise, 1e-5)
    assert runs["two"]["world_size"] == 2 and runs["two"]["step"] == 8
    # And a batch that does not split evenly is a clear error.
    done = _torchrun(2, *args, "--set", "train.batch_size=7", "-o", tmp_path / "odd")
    assert done.returncode != 0 and "train.batch_size 7 is the global batch" in done.stderr


def test_a_non_finite_loss_on_one_rank_stops_every_rank(cuhk_dir, workdir, tmp_path):
    from pathlib import Path

    script = (str(Path(__file__).parent / "ddp_fault.py"),)
    done = _torchrun(2, "train", cuhk_dir, "-w", workdir, "--recipe", "tiny", "--stage", "rec", "-o", tmp_path / "r",
                     "--set", "train.rec_steps=20", "--set", "train.log_every=5", "--set", "train.checkpoint_every=5",
                     "--device", "cpu", script=script, timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("a loss became non-finite before step 5") == 2, done.stderr[-3000:]
    assert not (tmp_path / "r" / "checkpoints" / "latest.pt").exists()


def test_resume_with_other_settings_is_refused_unless_forced(cuhk_dir, workdir, tmp_path):
    run = tmp_path / "run"
    _train(cuhk_dir, workdir, run, "train.rec_steps=2", stage="rec")
    with pytest.raises(InputError, match=r"resuming would change the run \(train.lr: 0.0002 -> 0.001; "
                                         r"loss.alpha: 0.9 -> 0.5\)"):
        _train(cuhk_dir, workdir, run, "train.rec_steps=4", "train.lr=0.001", "loss.alpha=0.5", stage="rec")
    # More steps, other logging: a normal resume.
    _train(cuhk_dir, workdir, run, "train.rec_steps=3", "train.log_every=1", stage="rec")
    done = _train(cuhk_dir, workdir, run, "train.rec_steps=4", "train.lr=0.001", stage="rec", force=True)
    assert load_checkpoint(done)["step"] == 4


def test_kill_9_between_checkpoints_then_resume_equals_an_uninterrupted_run(cuhk_dir, workdir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "reid_augment.cli", "train", str(cuhk_dir), "-w", str(workdir), "--recipe", "tiny",
            "--stage", "rec", "--set", "train.rec_steps=150", "--set", "train.checkpoint_every=10",
            "--set", "train.sample_every=1000", "--device", "cpu"]
    full = subprocess.run([*args, "-o", str(tmp_path / "full")], capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    latest = tmp_path / "killed" / "checkpoints" / "latest.pt"
    proc = subprocess.Popen([*args, "-o", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(latest)["step"]
    assert 10 <= killed_at < 150  # Killed mid-run, after a checkpoint.
    resumed = subprocess.run([*args, "-o", str(tmp_path / "killed")], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "latest.pt")
    b = load_checkpoint(latest)
    assert a["step"] == b["step"] == 150
    for name, tensor in a["rec"].items():
        assert torch.equal(tensor, b["rec"][name]), name
    assert not list((tmp_path / "killed").rglob("*.tmp"))


def test_tensorboard_events_and_unreadable_images(cuhk_copy, cuhk_dir, workdir, tmp_path):
    pytest.importorskip("tensorboard")
    from reid_augment.train import train

    (cuhk_copy / "0001_c1s1_000000_00.jpg").write_bytes(b"not a jpeg")
    recipe = load_recipe("tiny", ["train.num_workers=0", "train.rec_steps=2", "train.ref_steps=1",
                                  "train.log_every=1"])
    train(cuhk_copy, recipe, tmp_path / "run", workdir / "pairs-train.csv", workdir / "poses.csv", device="cpu",
          progress=False, tensorboard=True)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 3


def test_eq4_sum_is_float32_under_autocast():
    from reid_augment.networks import VDG, refined_image
    from conftest import TINY_MODEL

    model = VDG(TINY_MODEL)
    x, maps = torch.rand(2, 3, 64, 32), torch.rand(2, 18, 64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coarse = model.rec(torch.cat([x, maps], 1), maps)
        assert coarse.dtype == torch.bfloat16
        assert refined_image(model.ref, x, coarse, maps).dtype == torch.float32
