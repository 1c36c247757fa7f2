"""Atomic file writes: a reader never sees a half-written output, even after `kill -9`.

Every file is created with the mode a Unix tool gives under the user's umask (0644 under 022), so outputs on a
shared disk are readable by colleagues; mkstemp's own 0600 would hide them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

_UMASK_LOCK = threading.Lock()


@dataclass(frozen=True)
class WrittenFile:
    """The file a verb wrote, with the verb's one-line `summary()`. It stands in for the Path the verb used to
    return: path-like (`open`, `Path`, pandas take it) and any other Path attribute (`stat`, `read_bytes`, ...)
    is the path's."""

    path: Path
    message: str

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __getattr__(self, name: str):
        if name == "path":  # Not set yet (an unpickling copy): no recursion.
            raise AttributeError(name)
        return getattr(self.path, name)

    def summary(self) -> str:
        return self.message


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux's /proc), else set and restored."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as status:
            return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode `open()` gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temp file beside `path` and rename it over `path` once the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:  # A write's ENOSPC names no file: name ours.
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy the bytes of `src` to a new file `dst` (mode from the umask, as `cp` gives), atomically."""
    with open(src, "rb") as source, atomic_open(dst, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)


def save_png(path: str | os.PathLike, image) -> None:
    """Write an [H, W, 3] uint8 array as a PNG, atomically."""
    from PIL import Image

    with atomic_open(path, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")
