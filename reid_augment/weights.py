"""Shareable generators: the .safetensors files a trained generator is passed on in, the generators bundled with
the package, and `load_generator`, which takes any of them or a training checkpoint (checkpoints.py) by name or
path. Kept apart from the checkpoints so that only what builds a generator imports its network (`networks`).

A shared generator is a .safetensors file, the field's format for shared weights (Hugging Face, timm): a JSON
header and raw tensors, so loading a file from someone else can never run code. Keys are `rec.<param>` and
`ref.<param>`; the metadata (all strings) holds `format`, `model_config` (JSON), `recipe`, `step`, `dataset`,
`version`, `dtype` and `refine`. bf16 files halve the size and are widened back to float32 on load.

A bundled generator is a .safetensors file in `reid_augment/generators/`, addressable by name
(`--checkpoint cuhk03-small`, see the README's model card); its metadata records how it was made and what it scored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from . import __version__
from .checkpoints import load_checkpoint, model_config_of
from .config import ModelConfig, from_dict, validate_model
from .device import resolve_device
from .errors import InputError
from .fileio import WrittenFile, atomic_write_bytes
from .networks import VDG

GENERATOR_FORMAT = "reid-augment-generator/1"
GENERATORS_DIR = Path(__file__).resolve().parent / "generators"
# A checkpoint's training state: what a loaded generator's provenance leaves out (the weights live in the model).
_TRAINING_STATE = ("rec", "ref", "disc", "opt_rec", "opt_ref", "opt_disc", "rng")


# --- Any generator, by name or file ---------------------------------------------------------------------------

def load_generator(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[VDG, dict]:
    """The generator of a bundled name, a .safetensors file or a .pt checkpoint, in eval mode on `device`.

    The name is resolved once, here. Returns (model, provenance): the file's fields (model_config, step, recipe,
    dataset, ...; a checkpoint's without its weights, optimiser and RNG states), `path` (the file read) and `sha256`
    (of that file: what a manifest records). The model's config is `model.cfg`.

    Raises:
        InputError: an unknown name, a missing, unsafe or damaged file, or weights that do not fit its config.
    """
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    path = resolve_generator(name_or_path)
    model, fields = _read_generator(path) if path.suffix == ".safetensors" else _read_checkpoint_generator(path)
    return model.to(dev), {**fields, "path": path, "sha256": file_sha256(path)}


def file_sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256: names the exact weights that made an image, whatever the file is called."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _build(path: Path, cfg: ModelConfig, refine: bool, tensors: dict) -> VDG:
    """The model of `cfg` holding `tensors` (`rec.<param>`, `ref.<param>`): one fit check for .pt and .safetensors,
    made on the meta device first, so a forged config is refused before it can ask for memory."""
    _check_shapes(path, cfg, refine, tensors)
    model = VDG(cfg, refine=refine)
    for part in ("rec", "ref"):
        prefix = f"{part}."
        weights = {k[len(prefix):]: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                   for k, v in tensors.items() if k.startswith(prefix)}
        try:
            getattr(model, part).load_state_dict(weights)
        except RuntimeError as err:
            raise InputError(f"{path}: weights do not fit its model_config ({str(err).splitlines()[0]})") from None
    return model.eval()


def _check_shapes(path: Path, cfg: ModelConfig, refine: bool, tensors: dict) -> None:
    """The model of `cfg`, built without memory (meta device), must have exactly the file's tensors."""
    try:
        with torch.device("meta"):
            expected = {f"{part}.{name}": value.shape for part in ("rec", "ref")
                        for name, value in getattr(VDG(cfg, refine=refine), part).state_dict().items()}
    except Exception as err:  # noqa: BLE001 - sizes no network can have (0 levels, negative widths).
        raise InputError(f"{path}: its model_config describes no model ({_reason(err)})") from None
    missing = sorted(set(expected) - set(tensors))
    wrong = sorted(k for k in set(expected) & set(tensors)
                   if tuple(getattr(tensors[k], "shape", ())) != tuple(expected[k]))
    if missing or wrong:
        first = (f"{missing[0]} is missing" if missing else
                 f"{wrong[0]} is {tuple(getattr(tensors[wrong[0]], 'shape', ()))}, the config needs "
                 f"{tuple(expected[wrong[0]])}")
        raise InputError(f"{path}: weights do not fit its model_config ({len(missing)} missing, {len(wrong)} of "
                         f"another shape; {first})")


def _reason(err: Exception) -> str:
    """The first line of an error, cut short: what a one-line message can say about a bad file."""
    lines = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {lines[0][:100]}" if lines else err.__class__.__name__


# --- Bundled generators ---------------------------------------------------------------------------------------

def bundled_generators() -> dict[str, Path]:
    """Name -> file of every generator shipped in the package."""
    return {p.stem: p for p in sorted(GENERATORS_DIR.glob("*.safetensors"))}


def resolve_generator(name_or_path: str | os.PathLike) -> Path:
    """The file a `--checkpoint` value means: an existing path as given, else the bundled generator of that name.

    Raises:
        InputError: neither a file nor a bundled generator's name.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = bundled_generators()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    names = ", ".join(bundled) or "none installed"
    raise InputError(f"{name_or_path}: no such checkpoint file, and not the name of a bundled generator ({names})")


# --- Training checkpoints (.pt) as generators -----------------------------------------------------------------

def _read_checkpoint_generator(path: Path) -> tuple[VDG, dict]:
    """A .pt checkpoint's generator (on the CPU) and its fields, training state left out."""
    state = load_checkpoint(path)
    cfg = model_config_of(state)
    tensors = {}
    for part in ("rec", "ref"):
        if not isinstance(state.get(part), dict):
            raise InputError(f"{path}: weights do not fit its model_config (no {part} weights)")
        tensors.update({f"{part}.{name}": value for name, value in state[part].items()})
    model = _build(path, cfg, state.get("stage", "ref") == "ref", tensors)
    fields = {k: v for k, v in state.items() if k not in _TRAINING_STATE}
    return model, {**fields, "step": int(fields.get("step", 0))}


# --- Shared generators (.safetensors) -------------------------------------------------------------------------

def write_generator(model: VDG, path: str | os.PathLike, step: int, recipe: str = "", dataset: str = "",
                    bf16: bool = False, extra: dict[str, str] | None = None) -> Path:
    """Write `model`'s two generators to `path` atomically, with its config and provenance in the metadata."""
    from safetensors.torch import save

    dtype = torch.bfloat16 if bf16 else torch.float32
    tensors = {f"{part}.{name}": value.detach().to("cpu", dtype if value.is_floating_point() else value.dtype)
               for part in ("rec", "ref") for name, value in getattr(model, part).state_dict().items()}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    metadata = {"format": GENERATOR_FORMAT, "model_config": json.dumps(dataclasses.asdict(model.cfg)),
                "recipe": recipe, "step": str(int(step)), "dataset": dataset, "version": __version__,
                "dtype": str(dtype).split(".")[1], "refine": str(int(model.refine)), **(extra or {})}
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


def _read_generator(path: Path) -> tuple[VDG, dict]:
    """A .safetensors file's generator (on the CPU) and its fields.

    Raises:
        InputError: missing file, not a generator file, or weights that do not fit its config.
    """
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError(f"{path}: no such generator file")
    meta = read_metadata(path)
    if meta.get("format") != GENERATOR_FORMAT:
        raise InputError(f"{path}: not a reid-augment generator (metadata format {meta.get('format')!r}, "
                         f"expected {GENERATOR_FORMAT!r})")
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
    model = _build(path, cfg, refine, tensors)
    return model, {**meta, "model_config": dataclasses.asdict(cfg), "step": int(meta.get("step", 0))}


def export_generator(run_or_checkpoint: str | os.PathLike, output: str | os.PathLike, bf16: bool = False,
                     extra: dict[str, str] | None = None, refine: bool | None = None) -> WrittenFile:
    """Write the generator of a run dir (its checkpoints/latest.pt) or of a checkpoint as a .safetensors file.

    `extra`: more metadata strings, e.g. a model card's provenance and scores. `refine=False` makes the file render
    the coarse image (G_rec alone) although G_ref trained: where the refinement stage costs more pose than it adds
    texture (experiments/stage_ablation.py); None keeps the checkpoint's stage.

    Raises:
        InputError: `output` does not end in .safetensors (`load_generator` reads a file by its suffix), or the
            source is not a readable checkpoint.
    """
    if Path(output).suffix != ".safetensors":
        raise InputError(f"{output}: a generator file's name must end in .safetensors (it is read by its suffix)")
    source = Path(run_or_checkpoint)
    if source.is_dir():
        source = source / "checkpoints" / "latest.pt"
    model, state = load_generator(source)
    if refine is not None:
        model.refine = refine
    recipe = state.get("recipe") or {}
    path = write_generator(model, output, state["step"], recipe.get("name", ""), state.get("dataset", ""), bf16, extra)
    return WrittenFile(path, f"Wrote {path} ({path.stat().st_size / 2**20:.1f} MiB{', bf16' if bf16 else ''}).")
