"""Training checkpoints (.pt), and the safe (weights_only) way to read any torch file. Apart from the generator
files (weights.py) so that what only saves or reads training state, or checks a torch file, never imports the
generator's network (`networks`): re-ID training, pose estimation's checkpoint loader, `convert-checkpoint`.

Checkpoint format 2 (a dict written with one torch.save): format, package_version, model_config, recipe, stage, step,
rec, ref, disc (state_dicts), opt_rec, opt_ref, opt_disc, rng {python, numpy, torch, cuda} (as tensors and
plain numbers). Nothing in a checkpoint is ever unpickled as code: a file that needs more is refused.
Format 1 (RNG states as pickled numpy objects) is converted only on request, by `convert_checkpoint(trust=True)`.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import ModelConfig, from_dict, validate_model
from .errors import InputError
from .fileio import WrittenFile, atomic_open

CHECKPOINT_FORMAT = 2
# torch names a refused global in two wordings: "Unsupported global: GLOBAL io.open was not an allowed global"
# and "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def blocked_global(err: Exception) -> str:
    """The global a weights_only load refused (`posix.system`), or '' when the message names none."""
    found = _BLOCKED_GLOBAL.search(str(err))
    return found.group(1) if found else ""


def rng_state() -> dict:
    """Every RNG's state as tensors and plain numbers (what weights_only=True accepts)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved: a resumed run draws the numbers an uninterrupted one would."""
    py, nps = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["mt"].tolist()), py["gauss"]))
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, **state) -> None:
    """Write a checkpoint atomically (temp file + rename): a crash never leaves half a file."""
    state = {"format": CHECKPOINT_FORMAT, "package_version": __version__, **state}
    if dataclasses.is_dataclass(state.get("model_config")):
        state["model_config"] = dataclasses.asdict(state["model_config"])
    atomic_torch_save(state, path)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temp file renamed over `path`. torch reports a failed write (a full disk) as a RuntimeError
    whose context is the OSError: that OSError is raised instead, naming the file, so the CLI prints one line."""
    try:
        with atomic_open(path, "wb") as f:
            torch.save(obj, f)
    except RuntimeError as err:
        cause = err.__context__
        if isinstance(cause, OSError):
            raise OSError(cause.errno, cause.strerror, str(path)) from err
        raise


def safe_load(path: Path, map_location="cpu", what: str = "checkpoint"):
    """torch.load with weights_only=True: a file that would run code is refused, and nothing in it runs.

    Raises:
        InputError: the file is missing, not a torch file, or needs more than tensors and plain data.
    """
    if not path.is_file():
        raise InputError(f"{path}: no such {what}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        needs = blocked_global(err)
        detail = f" (it asks for {needs})" if needs else ""
        raise InputError(f"{path}: refused, the file holds pickled objects beyond tensors and plain data{detail}; "
                         f"nothing in it was run") from None
    except Exception as err:  # noqa: BLE001 - a zip/pickle format error means "not a checkpoint".
        raise InputError(f"{path}: not a {what} ({err.__class__.__name__})") from None


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint of this package's format, without ever running code from the file.

    Raises:
        InputError: missing file, not a checkpoint, unsafe content, or another format version.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        raise InputError(f"{path}: a .safetensors generator holds no training state; resume from a run's "
                         f"checkpoints/latest.pt")
    try:
        state = safe_load(path, map_location)
    except InputError as err:
        if _is_format_1(path):
            raise InputError(f"{path}: checkpoint format 1 (from reid-augment 0.1) stores pickled numpy objects, "
                             f"which are not loaded; {_CONVERT_HINT.format(path=path)}") from None
        raise err from None
    if not isinstance(state, dict) or "format" not in state:
        raise InputError(f"{path}: not a reid-augment checkpoint")
    if state["format"] == 1:  # One without numpy RNG states loads, but is still the old format.
        raise InputError(f"{path}: checkpoint format 1 (from reid-augment 0.1), this reid-augment ({__version__}) "
                         f"reads format {CHECKPOINT_FORMAT}; {_CONVERT_HINT.format(path=path)}")
    if state["format"] != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: checkpoint format {state['format']}, this reid-augment "
                         f"({__version__}) reads format {CHECKPOINT_FORMAT}")
    return state


_CONVERT_HINT = "if you trust the file, convert it: reid-augment convert-checkpoint {path} NEW.pt --trust"


def _is_format_1(path: Path) -> bool:
    """A format-1 file names numpy in its pickle beside a `format` key (looked at as bytes, never unpickled): in a
    zip checkpoint's data.pkl, or in the head of a legacy (non-zip) torch file."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pkl = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(pkl) if pkl is not None else b""
        else:
            with open(path, "rb") as f:
                data = f.read(1 << 20)
    except (zipfile.BadZipFile, OSError, KeyError):
        return False
    return b"numpy" in data and b"format" in data


def convert_checkpoint(old: str | os.PathLike, new: str | os.PathLike, trust: bool = False) -> WrittenFile:
    """Rewrite a format-1 checkpoint as format 2. Unpickling it can run code: only for files you trust.

    Raises:
        InputError: `trust` is not set, or the file is not a format-1 checkpoint.
    """
    old, new = Path(old), Path(new)
    if not trust:
        raise InputError(f"{old}: converting unpickles the file, which can run code in it; pass --trust only for "
                         f"a file you made or trust")
    if not old.is_file():
        raise InputError(f"{old}: no such checkpoint")
    try:
        state = torch.load(old, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{old}: not a checkpoint ({err.__class__.__name__})") from None
    if not isinstance(state, dict) or state.get("format") != 1:
        raise InputError(f"{old}: not a format-1 reid-augment checkpoint")
    if "rng" in state:
        py, nps = state["rng"]["python"], state["rng"]["numpy"]
        state["rng"] = {
            "python": {"version": py[0], "mt": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
            "numpy": {"name": str(nps[0]), "keys": torch.from_numpy(np.asarray(nps[1]).astype(np.int64)),
                      "pos": int(nps[2]), "has_gauss": int(nps[3]), "cached_gaussian": float(nps[4])},
            **{k: v for k, v in state["rng"].items() if k in ("torch", "cuda")},
        }
    state.pop("format", None)
    state.pop("package_version", None)
    save_checkpoint(new, **state)
    load_checkpoint(new)  # Proof that the result loads safely.
    return WrittenFile(new, f"Wrote {new}: a format-2 checkpoint (tensors and plain data only).")


def model_config_of(state: dict) -> ModelConfig:
    """A checkpoint's model_config as a validated ModelConfig: a bad one is an InputError, not a crash later."""
    cfg = from_dict(ModelConfig, state.get("model_config"), "checkpoint model_config")
    validate_model(cfg, "checkpoint model_config")
    return cfg
