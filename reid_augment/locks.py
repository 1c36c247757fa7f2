"""One writer per output: a lock file naming the process that holds it.

Two `generate` runs into one folder, or two `train` runs into one run dir, would append to one manifest or
overwrite one checkpoint. The first takes an advisory lock (`flock`) on OUT/.lock (per shard for `generate`, so
shards still run side by side) and writes its process id and command into it; the second refuses in one line
naming the holder. The kernel drops the lock when its holder dies, however it dies, so a stale file never blocks.
"""

from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import InputError


@contextmanager
def hold(folder: str | os.PathLike, name: str = ".lock", what: str = "this output") -> Iterator[Path]:
    """Hold FOLDER/NAME for the block; another process holding it is an InputError naming its process id."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            raise InputError(f"{folder}: {what} is in use by {holder}; wait for it to finish, or choose another "
                             f"output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv[:3])[:120]})\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # Releases the lock; the file stays (harmless: an unlocked file blocks nobody).
