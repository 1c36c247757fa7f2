"""Self-describing checkpoints: everything needed to resume training or to rebuild the generator alone.

Format 1 (a dict written with one torch.save): format, package_version, model_config, recipe, stage, step,
rec, ref, disc (state_dicts), opt_rec, opt_ref, opt_disc, rng {python, numpy, torch, cuda}.
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import ModelConfig, from_dict
from .errors import InputError
from .fileio import atomic_open
from .networks import VDG

FORMAT = 1


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, **state) -> None:
    """Write a checkpoint atomically (temp file + rename): a crash never leaves half a file."""
    state = {"format": FORMAT, "package_version": __version__, **state}
    if dataclasses.is_dataclass(state.get("model_config")):
        state["model_config"] = dataclasses.asdict(state["model_config"])
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint of this package's format.

    Raises:
        InputError: missing file, not a checkpoint, or another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint (train one with `reid-augment train`)")
    try:
        # Our own checkpoints hold RNG states (numpy arrays, tuples), which weights_only refuses.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint".
        raise InputError(f"{path}: not a reid-augment checkpoint ({err.__class__.__name__})") from None
    if not isinstance(state, dict) or "format" not in state:
        raise InputError(f"{path}: not a reid-augment checkpoint")
    if state["format"] != FORMAT:
        raise InputError(f"{path}: checkpoint format {state['format']}, this reid-augment "
                         f"({__version__}) reads format {FORMAT}")
    return state


def model_config_of(state: dict) -> ModelConfig:
    return from_dict(ModelConfig, state["model_config"], "checkpoint model_config")


def load_generator(path: str | os.PathLike, map_location="cpu") -> tuple[VDG, dict]:
    """Rebuild the generator from a checkpoint alone, in eval mode; returns (model, checkpoint dict)."""
    state = load_checkpoint(path, map_location)
    model = VDG(model_config_of(state))
    model.rec.load_state_dict(state["rec"])
    model.ref.load_state_dict(state["ref"])
    return model.eval(), state
