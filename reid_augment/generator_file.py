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
from .config import ModelConfig, from_dict, validate_model
from .errors import InputError
from .fileio import atomic_write_bytes
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
                "refine": str(int(model.refine)), **(extra or {})}
    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a generator file, without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - any header error means "not a generator file".
        raise InputError(f"{path}: not a safetensors file ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    """The first line of an error, cut short: what a one-line message can say about a bad file."""
    lines = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {lines[0][:100]}" if lines else err.__class__.__name__


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
    try:
        config = json.loads(meta["model_config"])
    except (KeyError, ValueError, RecursionError) as err:
        raise InputError(f"{path}: its metadata has no readable model_config ({_reason(err)})") from None
    cfg = from_dict(ModelConfig, config, f"{path}: model_config")
    validate_model(cfg, f"{path}: model_config")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - a header that lies about its tensors, or a truncated file.
        raise InputError(f"{path}: its tensors cannot be read ({_reason(err)}); the file is damaged or "
                         f"truncated") from None
    refine = meta.get("refine", "1") == "1"  # Files before 0.3 had trained both stages.
    _check_shapes(path, cfg, refine, tensors)
    model = VDG(cfg, refine=refine)
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


def _check_shapes(path: Path, cfg: ModelConfig, refine: bool, tensors: dict[str, torch.Tensor]) -> None:
    """The model of `cfg`, built without memory (meta device), must have exactly the file's tensors: a forged
    config is refused before it can ask for more memory than the file holds."""
    try:
        with torch.device("meta"):
            expected = {f"{part}.{name}": value.shape for part in ("rec", "ref")
                        for name, value in getattr(VDG(cfg, refine=refine), part).state_dict().items()}
    except Exception as err:  # noqa: BLE001 - sizes no network can have (0 levels, negative widths).
        raise InputError(f"{path}: its model_config describes no model ({_reason(err)})") from None
    missing = sorted(set(expected) - set(tensors))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k]))
    if missing or wrong:
        first = (f"{missing[0]} is missing" if missing else
                 f"{wrong[0]} is {tuple(tensors[wrong[0]].shape)}, the config needs {tuple(expected[wrong[0]])}")
        raise InputError(f"{path}: weights do not fit its model_config ({len(missing)} missing, {len(wrong)} of "
                         f"another shape; {first})")


def export_generator(run_or_checkpoint: str | os.PathLike, output: str | os.PathLike, bf16: bool = False,
                     extra: dict[str, str] | None = None, refine: bool | None = None) -> Path:
    """Write the generator of a run dir (its checkpoints/latest.pt) or of a checkpoint as a .safetensors file.

    `extra`: more metadata strings, e.g. a model card's provenance and scores. `refine=False` makes the file render
    the coarse image (G_rec alone) although G_ref trained: where the refinement stage costs more pose than it adds
    texture (benchmarks/stage_ablation.py); None keeps the checkpoint's stage.
    """
    from .checkpoint import load_generator

    source = Path(run_or_checkpoint)
    if source.is_dir():
        source = source / "checkpoints" / "latest.pt"
    model, state = load_generator(source)
    if refine is not None:
        model.refine = refine
    recipe = state.get("recipe") or {}
    return write_generator(model, output, state["step"], recipe.get("name", ""), state.get("dataset", ""), bf16, extra)
