"""Child processes that end with their parent, however it dies.

A pool worker or data-loader worker outlives a parent killed with SIGKILL (a scheduler's preemption, the OOM
killer): re-parented to init, it holds its memory (a MediaPipe scoring worker: about 760 MB) for as long as it
waits for work that never comes. Each worker calls `die_with_parent()` when it starts: on Linux the kernel sends it
SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG), and everywhere a daemon thread checks once a second that the
parent is still the one it started with and otherwise exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(_worker_id: int | None = None, interval: float = 1.0) -> None:
    """Make this process exit when its parent does (usable as a pool initializer or a DataLoader worker_init_fn).

    PR_SET_PDEATHSIG fires when the thread that started this process ends, which for a pool started from a helper
    thread comes before the parent's death; so it is set only when the starter is the parent's main thread
    (`REID_AUGMENT_MAIN_STARTER`, set by `mark_main_starter`), and the watcher thread covers the rest.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux") and os.environ.get("REID_AUGMENT_MAIN_STARTER") == str(parent):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # Already gone between the fork and now.
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def mark_main_starter() -> None:
    """Called in the parent before it starts workers from its main thread: lets them use PR_SET_PDEATHSIG."""
    if threading.current_thread() is threading.main_thread():
        os.environ["REID_AUGMENT_MAIN_STARTER"] = str(os.getpid())
