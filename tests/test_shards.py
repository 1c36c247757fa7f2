"""`generate --shard auto`: each process of a Slurm array, srun step or torchrun takes its own share."""

import pandas as pd
import pytest
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.errors import InputError
from reid_augment.shards import resolve_shard, scheduler_shard


@pytest.mark.parametrize("env,shard,source", [
    ({}, (0, 1), "no scheduler"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, (3, 4), "Slurm job array"),
    # --array=1-8: ids from 1; --array=0-14:2: every other id.
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}, (0, 8), "array"),
    ({"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_STEP": "2"}, (3, 8), "array"),
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "3", "SLURM_STEP_ID": "0"}, (2, 3), "srun"),
    ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"}, (1, 2),
     "torchrun"),
    # An array task whose srun step has 2 tasks: 4 x 2 shares.
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_PROCID": "1", "SLURM_NTASKS": "2",
      "SLURM_STEP_ID": "0"}, (7, 8), "and srun"),
    # The batch script of an allocation of 4 tasks is one process: it makes the whole set, not a quarter.
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, (0, 1), "no scheduler"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "batch", "SLURM_ARRAY_TASK_ID": "2",
      "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3), "array"),
])
def test_the_share_comes_from_the_scheduler_that_started_the_process(env, shard, source):
    found, how = scheduler_shard(env)
    assert found == shard and source in how


@pytest.mark.parametrize("env,problem", [
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID='x' is not a whole number"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not"),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "3"}, "not one of 3 evenly spaced tasks"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "7", "SLURM_ARRAY_TASK_STEP": "2"}, "not one of 3 evenly spaced tasks"),  # 1,3,7
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not in 0..WORLD_SIZE-1"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
])
def test_an_unreadable_scheduler_environment_is_one_clear_error(env, problem):
    with pytest.raises(InputError, match=problem.replace("(", r"\(").replace(".", r"\.")):
        resolve_shard("auto", env)


def test_an_explicit_shard_is_taken_as_given():
    assert resolve_shard("1/3", {"RANK": "0", "WORLD_SIZE": "2"}) == ((1, 3), None)
    with pytest.raises(InputError, match="expected i/n"):
        resolve_shard("automatic")


def test_generate_shard_auto_over_a_slurm_array_merges_to_the_unsharded_run(cuhk_dir, checkpoint, tmp_path):
    args = ["generate", str(cuhk_dir), "--per-id", "2", "--poses", str(cuhk_dir / "annotations.csv"),
            "--checkpoint", str(checkpoint), "--device", "cpu", "--no-score", "--workers", "0"]
    whole = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    for task in ("1", "2"):  # sbatch --array=1-2
        env = {"SLURM_ARRAY_TASK_ID": task, "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "1"}
        result = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "sharded"), "--shard", "auto"], env=env)
        assert result.exit_code == 0, result.output
        share = int(task) - 1
        assert f"--shard auto: shard {share}/2, from the Slurm job array (SLURM_ARRAY_TASK_ID={task}" in result.output
        assert (tmp_path / "sharded" / f"manifest.shard-{share}-of-2.csv").is_file()
    assert CliRunner().invoke(cli, ["merge", str(tmp_path / "sharded")]).exit_code == 0
    merged, single = (pd.read_csv(tmp_path / d / "manifest.csv") for d in ("sharded", "whole"))
    assert len(merged) == 24 and sorted(merged["image"]) == sorted(single["image"])
    assert sorted(merged["pose_from"]) == sorted(single["pose_from"])
    result = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "bad"), "--shard", "auto"],
                                env={"SLURM_ARRAY_TASK_ID": "1"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit) and not (tmp_path / "bad").exists()
