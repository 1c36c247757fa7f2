"""Workers end with their parent: a parent killed with SIGKILL leaves no pool or data-loader worker behind."""

import os
import signal
import subprocess
import sys
import time

import pytest

PARENT = r"""
import multiprocessing, sys, time
from concurrent.futures import ProcessPoolExecutor
import torch
from torch.utils.data import DataLoader
from reid_augment.orphans import die_with_parent, mark_main_starter

def pid(_):
    import os
    return os.getpid()

class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 10**6
    def __getitem__(self, i):
        import os
        time.sleep(0.05)
        return os.getpid()

if __name__ == "__main__":
    mark_main_starter()
    pool = ProcessPoolExecutor(2, multiprocessing.get_context("spawn"), initializer=die_with_parent)
    pids = set(pool.map(pid, range(8)))
    loader = iter(DataLoader(Slow(), batch_size=1, num_workers=2, worker_init_fn=die_with_parent))
    pids |= {int(next(loader)) for _ in range(4)}
    print(" ".join(map(str, sorted(pids))), flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # A zombie (dead, not yet reaped by init) counts as gone.
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_and_loader_workers_die_within_seconds_of_a_sigkilled_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) >= 3 and all(map(_alive, workers))
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in workers if _alive(p)], "workers outlived their parent"
    finally:
        parent.kill()
