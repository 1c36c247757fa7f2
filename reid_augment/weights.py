"""Everything that reads or writes weights, in one place: training checkpoints (.pt), shared generators
(.safetensors), the generators bundled with the package, and `load_generator`, which takes any of the three.

Checkpoint format 2 (a dict written with one torch.save): format, package_version, model_config, recipe, stage, step,
rec, ref, disc (state_dicts), opt_rec, opt_ref, opt_disc, rng {python, numpy, torch, cuda} (as tensors and
plain numbers). Nothing in a checkpoint is ever unpickled as code: a file that needs more is refused.
Format 1 (RNG states as pickled numpy objects) is converted only on request, by `convert_checkpoint(trust=True)`.

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
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import ModelConfig, from_dict, validate_model
from .device import resolve_device
from .errors import InputError
from .fileio import atomic_open, atomic_write_bytes
from .networks import VDG

CHECKPOINT_FORMAT = 2
GENERATOR_FORMAT = "reid-augment-generator/1"
GENERATORS_DIR = Path(__file__).resolve().parent / "generators"
# A checkpoint's training state: what a loaded generator's provenance leaves out (the weights live in the model).
_TRAINING_STATE = ("rec", "ref", "disc", "opt_rec", "opt_ref", "opt_disc", "rng")
# torch names a refused global in two wordings: "Unsupported global: GLOBAL io.open was not an allowed global"
# and "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


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


# --- Training checkpoints (.pt) -------------------------------------------------------------------------------

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


def convert_checkpoint(old: str | os.PathLike, new: str | os.PathLike, trust: bool = False) -> Path:
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
    return new


def model_config_of(state: dict) -> ModelConfig:
    """A checkpoint's model_config as a validated ModelConfig: a bad one is an InputError, not a crash later."""
    cfg = from_dict(ModelConfig, state.get("model_config"), "checkpoint model_config")
    validate_model(cfg, "checkpoint model_config")
    return cfg


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
                     extra: dict[str, str] | None = None, refine: bool | None = None) -> Path:
    """Write the generator of a run dir (its checkpoints/latest.pt) or of a checkpoint as a .safetensors file.

    `extra`: more metadata strings, e.g. a model card's provenance and scores. `refine=False` makes the file render
    the coarse image (G_rec alone) although G_ref trained: where the refinement stage costs more pose than it adds
    texture (experiments/stage_ablation.py); None keeps the checkpoint's stage.
    """
    source = Path(run_or_checkpoint)
    if source.is_dir():
        source = source / "checkpoints" / "latest.pt"
    model, state = load_generator(source)
    if refine is not None:
        model.refine = refine
    recipe = state.get("recipe") or {}
    return write_generator(model, output, state["step"], recipe.get("name", ""), state.get("dataset", ""), bf16, extra)
