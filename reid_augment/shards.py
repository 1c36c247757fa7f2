"""Which share of the identities a `generate` process makes: `--shard I/N` as given, or `--shard auto`, from the
scheduler that started the process, so one job script serves every task of a cluster job.

`auto` reads, in this order: a Slurm job array (`SLURM_ARRAY_TASK_ID` among `SLURM_ARRAY_TASK_COUNT` tasks,
counted from `SLURM_ARRAY_TASK_MIN` in steps of `SLURM_ARRAY_TASK_STEP`, so `--array=1-8` and `0-14:2` work too),
then the processes of one job or array task: torchrun's (`RANK` of `WORLD_SIZE`) or else srun's tasks
(`SLURM_PROCID` of `SLURM_NTASKS`, inside an srun step only: a batch script is one process whatever its
allocation). An array task that starts several processes splits its share among them. With none of these the
process makes the whole set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import InputError

Shard = tuple[int, int]
# Step ids of a job's batch script and its external step (Slurm's SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT): there,
# SLURM_PROCID and SLURM_NTASKS describe the allocation, not processes that srun started.
_NOT_SRUN = {"batch", "extern", "4294967294", "4294967291", "4294967292", "4294967293"}


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 0 <= i < n: `--shard` as given (generate, warp)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise InputError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def _number(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise InputError(f"--shard auto: {name}={env[name][:40]!r} is not a whole number") from None


def _pair(env: Mapping[str, str], index: str, count: str) -> Shard | None:
    """(index, count) of two variables set together, or None when neither is set."""
    if index not in env and count not in env:
        return None
    if index not in env or count not in env:
        present, absent = (index, count) if index in env else (count, index)
        raise InputError(f"--shard auto: {present} is set but {absent} is not; the scheduler sets both")
    i, n = _number(env, index), _number(env, count)
    if not 0 <= i < n:
        raise InputError(f"--shard auto: {index}={i} is not in 0..{count}-1 ({count}={n})")
    return i, n


def _array(env: Mapping[str, str]) -> tuple[Shard, str] | None:
    """This Slurm array task's place among the array's tasks."""
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    if "SLURM_ARRAY_TASK_COUNT" not in env:
        raise InputError("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; Slurm sets "
                         "both for a job array")
    task, count = _number(env, "SLURM_ARRAY_TASK_ID"), _number(env, "SLURM_ARRAY_TASK_COUNT")
    low = _number(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
    step = _number(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
    high = _number(env, "SLURM_ARRAY_TASK_MAX") if "SLURM_ARRAY_TASK_MAX" in env else low + (count - 1) * step
    index, off = divmod(task - low, step) if step > 0 else (-1, 0)
    if off or not 0 <= index < count or high != low + (count - 1) * step:  # A list such as 1,3,7 is not a range.
        raise InputError(f"--shard auto: array task {task} is not one of {count} evenly spaced tasks from {low} "
                         f"(step {step}); submit the array as a range, e.g. --array=0-{count - 1}")
    return (index, count), f"the Slurm job array (SLURM_ARRAY_TASK_ID={task} of SLURM_ARRAY_TASK_COUNT={count})"


def _processes(env: Mapping[str, str]) -> tuple[Shard, str] | None:
    """This process's place among the processes torchrun or srun started."""
    found = _pair(env, "RANK", "WORLD_SIZE")
    if found is not None:
        return found, f"torchrun (RANK={found[0]} of WORLD_SIZE={found[1]})"
    if env.get("SLURM_STEP_ID", "batch") in _NOT_SRUN:  # The batch script is one process, whatever SLURM_NTASKS says.
        return None
    found = _pair(env, "SLURM_PROCID", "SLURM_NTASKS")
    return (found, f"srun (SLURM_PROCID={found[0]} of SLURM_NTASKS={found[1]})") if found else None


def scheduler_shard(env: Mapping[str, str] | None = None) -> tuple[Shard, str]:
    """(shard, where it came from) for `--shard auto`, read from the environment (`env`, default os.environ).

    Raises:
        InputError: a variable is not a whole number, is set without its partner, or is out of range.
    """
    env = os.environ if env is None else env
    array, processes = _array(env), _processes(env)
    if array and processes and processes[0][1] > 1:
        (a, na), ((p, np_), how) = array[0], processes
        return (a * np_ + p, na * np_), f"{array[1]} and {how}"
    if array or processes:
        return (array or processes)
    return (0, 1), ("no scheduler's split (no Slurm job array, torchrun or srun step in the environment): the whole "
                    "set")


def resolve_shard(text: str, env: Mapping[str, str] | None = None) -> tuple[Shard, str | None]:
    """`--shard`'s value as (i, n): 'i/n' as given, or 'auto' from the scheduler, with a line saying which.

    Raises:
        InputError: not 'i/n' with 0 <= i < n, nor 'auto' with a readable scheduler environment.
    """
    if text.strip().lower() != "auto":
        return parse_shard(text), None
    (i, n), how = scheduler_shard(env)
    return (i, n), f"--shard auto: shard {i}/{n}, from {how}"
