"""Shared generators as .safetensors: both generators' weights, the model config and provenance, no code.

safetensors is the field's format for shared weights (Hugging Face, timm): a JSON header and raw tensors,
so loading a file from someone else can never run code. Keys are `rec.<param>` and `ref.<param>`; the
metadata (all strings) holds `format`, `model_config` (JSON), `recipe`, `step`, `dataset`, `version` and
`dtype`. bf16 files halve the size and are widened back to float32 on load.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from . import __version__
from .config import ModelConfig, from_dict
from .errors import InputError
from .fileio import atomic_open
from .networks import VDG

FORMAT = "reid-augment-generator/1"


def write_generator(model: VDG, path: str | os.PathLike, step: int, recipe: str = "", dataset: str = "",
                    bf16: bool = False, extra: dict[str, str] | None = None) -> Path:
    """Write `model`'s two generators to `path` atomically, with its config and provenance in the metadata."""
    from safetensors.torch import save

    dtype = torch.bfloat16 if bf16 else torch.float32
    tensors = {f"{part}.{name}": value.detach().to("cpu", dtype if value.is_floating_point() else value.dtype)
               for part in ("rec", "ref") for name, value in getattr(model, part).state_dict().items()}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    metadata = {"format": FORMAT, "model_config": json.dumps(dataclasses.asdict(model.cfg)), "recipe": recipe,
                "step": str(int(step)), "dataset": dataset, "version": __version__, "dtype": str(dtype).split(".")[1],
                **(extra or {})}
    path = Path(path)
    with atomic_open(path, "wb") as f:
        f.write(save(tensors, metadata=metadata))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a generator file, without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - any header error means "not a generator file".
        raise InputError(f"{path}: not a safetensors file ({err.__class__.__name__})") from None


def read_generator(path: str | os.PathLike) -> tuple[VDG, dict]:
    """Rebuild the generator of a .safetensors file in eval mode; returns (model, fields).

    Raises:
        InputError: missing file, not a generator file, or weights that do not fit its config.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such generator file")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a reid-augment generator (metadata format {meta.get('format')!r}, "
                         f"expected {FORMAT!r})")
    cfg = from_dict(ModelConfig, json.loads(meta["model_config"]), f"{path} model_config")
    tensors = load_file(str(path))
    model = VDG(cfg)
    for part in ("rec", "ref"):
        prefix = f"{part}."
        weights = {k[len(prefix):]: v.float() if v.is_floating_point() else v for k, v in tensors.items()
                   if k.startswith(prefix)}
        try:
            getattr(model, part).load_state_dict(weights)
        except RuntimeError as err:
            raise InputError(f"{path}: weights do not fit its model_config ({str(err).splitlines()[0]})") from None
    fields = {**meta, "model_config": dataclasses.asdict(cfg), "step": int(meta.get("step", 0))}
    return model.eval(), fields


def export_generator(run_or_checkpoint: str | os.PathLike, output: str | os.PathLike, bf16: bool = False,
                     extra: dict[str, str] | None = None) -> Path:
    """Write the generator of a run dir (its checkpoints/latest.pt) or of a checkpoint as a .safetensors file.

    `extra`: more metadata strings, e.g. a model card's provenance and scores.
    """
    from .checkpoint import load_generator

    source = Path(run_or_checkpoint)
    if source.is_dir():
        source = source / "checkpoints" / "latest.pt"
    model, state = load_generator(source)
    recipe = state.get("recipe") or {}
    return write_generator(model, output, state["step"], recipe.get("name", ""), state.get("dataset", ""), bf16, extra)
