"""Typed, immutable configuration: one frozen dataclass per stage, recipes loaded from YAML."""

from __future__ import annotations

import dataclasses
import os
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import InputError
from .keypoints import DEFAULT_REQUIRED_JOINTS


@dataclass(frozen=True)
class PairConfig:
    """How build-pairs filters images and pairs them."""

    require_joints: tuple[str, ...] = DEFAULT_REQUIRED_JOINTS  # Joints an image must have (Ma et al./Def-GAN rule).
    min_joints: int = 0              # And at least this many joints in all.
    cross_camera: bool = False       # Only pair images from different cameras.
    max_pairs_per_id: int = 0        # Cap on pairs per identity, sampled with the seed; 0 = no cap.
    test_ids: int = 0                # Identities held out for test when no separate test poses are given.
    num_test_pairs: int = 12000      # Test pairs drawn, as Def-GAN does for Market-1501.
    seed: int = 0                    # Def-GAN's random_state; reproduces the field's test pairs.


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the VDG networks; saved in every checkpoint so generation can rebuild them."""

    image_size: tuple[int, int] = (128, 64)  # (H, W) of person crops; Market-1501 is 128x64.
    num_joints: int = 18            # OpenPose-18 layout, see keypoints.JOINT_NAMES.
    heatmap_sigma: float = 6.0      # Eq. 1's sigma in pixels of image_size (6 at 128x64, as Def-GAN).
    num_levels: int = 5             # N: residual levels of G_rec's encoders and decoder (PG2: log2(H) - 2).
    base_channels: int = 128        # G_rec level i has base_channels * (i + 1) channels (PG2).
    z_dim: int = 64                 # Fully connected bottleneck of G_rec, per branch (PG2's z); 0: none.
    ref_levels: int = 5             # Levels of G_ref (the paper: N in both stages).
    ref_channels: int = 128         # G_ref's fixed width (PG2's G2).
    disc_channels: int = 64         # DCGAN discriminator base width (PG2).
    disc_levels: int = 4            # Stride-2 convs of the discriminator.
    pose_skips: bool = False        # Decoder skips from both branches (the paper: the image branch only).
    pose_to_decoder: bool = False   # Target heatmaps joined to every decoder level (not in the paper).
    deform_skips: bool = False      # Def-GAN's deformable skips: each image skip also warped per body part.
    ref_input: str = "source"       # What G_ref sees beside the coarse image: the source crop I_a (the paper), or
                                    # "warped": I_a moved per body part to the target pose (Def-GAN's part affine
                                    # transforms, from the keypoints; no learnt warp), real pixels where they go.
    disc_pose: bool = False         # D also sees the target heatmaps, and real targets under another pair's pose
                                    # count as fakes (GAN-CLS's mismatch term), so its verdict includes the pose.

    @property
    def needs_flow(self) -> bool:
        """Whether the networks take the part flow (`keypoints.part_flows`) beside the heatmaps."""
        return self.deform_skips or self.ref_input == "warped"


@dataclass(frozen=True)
class LossConfig:
    """Losses of the refinement stage (the reconstruction stage always uses L1, Eq. 2)."""

    ref_loss: str = "weighted"      # l1 | mask_l1 | mask_ssim | weighted (Eq. 8).
    alpha: float = 0.9              # Eq. 8: alpha * mask-SSIM + (1 - alpha) * mask-L1; 0.9 is the paper's best.
    lambda_img: float = 10.0        # Eq. 6 weight of L_img against the adversarial term; PG2's 10.
    r1_gamma: float = 0.0           # R1 penalty (Mescheder et al. 2018), gamma / 2 * |grad D(real)|^2; 0: off.
    identity_weight: float = 0.0    # Weight of an identity term (not in the paper): the cosine distance between a
                                    # frozen re-ID model's features of the refined image and of the real target.
    identity_model: str = ""        # That re-ID model: a torchreid checkpoint trained on the data set's training
                                    # people (e.g. a reid-benchmark baseline arm's checkpoint.pt).
    ssim_window: int = 11           # Gaussian SSIM window (Wang et al.).
    ssim_sigma: float = 1.5


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    batch_size: int = 16            # The paper: 16 on Market-1501, 6 on DeepFashion.
    rec_steps: int = 22000          # Reconstruction-stage iterations (paper: 22k Market, 40k DeepFashion).
    ref_steps: int = 14000          # Refinement-stage iterations (paper: 14k Market, 30k DeepFashion).
    lr: float = 2e-5                # Adam, for G_rec, G_ref and D (paper).
    beta1: float = 0.5
    beta2: float = 0.999
    flip: bool = True               # Horizontal flips of both images and both poses.
    log_every: int = 50             # Steps between loss-log lines.
    sample_every: int = 1000        # Steps between sample grids.
    checkpoint_every: int = 1000    # Steps between checkpoints.
    seed: int = 0
    amp: str = "auto"               # auto: bf16 autocast on CUDA and on CPUs where it measures faster
                                    # (device.fast_bf16); bf16: forced; float32. A resume keeps the checkpoint's.
    channels_last: bool = True      # NHWC activations and weights (CUDA and CPU).
    compile: bool = False           # torch.compile the generators on CUDA.
    ref_zero_init: bool = False     # G_ref's last convolution starts at zero, so the refined image starts as the
                                    # coarse one (its pose) and the refinement stage adds detail from there.


@dataclass(frozen=True)
class Recipe:
    """Everything `reid-augment train` needs besides data."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class GenerateConfig:
    """How `generate` picks sources and target poses, and how it batches."""

    per_id: int = 10                # New images per identity.
    strategy: str = "random"        # random | kmeans | novel: how target poses are drawn from the pose bank.
    kmeans_k: int = 8               # Canonical poses for the kmeans strategy (PN-GAN uses 8).
    seed: int = 0                   # Each image's seed derives from (seed, person id, k).
    batch_size: int = 64
    num_workers: int = 2            # Decoding workers.
    jpeg_quality: int = 95
    out_size: tuple[int, int] | None = None  # (H, W) of every output; None: the size of its source crop.
    layout: str | None = None       # The data set's layout (see reid_augment.layouts); None: detected.
    candidates: int = 1             # M: N x M candidates per identity; the N best by PCKh are kept.
    min_pckh: float | None = None   # Keep only candidates scoring at least this PCKh (unscorable ones are kept).
    score: bool = True              # Score images by pose consistency when the offline pose backend is installed.
    score_processes: int | None = None  # Scoring processes; None: one per core (none for small runs); 0: none.


REF_LOSSES = ("l1", "mask_l1", "mask_ssim", "weighted")
REF_INPUTS = ("source", "warped")


def _short(value, limit: int = 60) -> str:
    """repr of `value`, cut to `limit` characters: error messages stay one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _yaml_error(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong, and where."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _coerce(value, annotation, where: str):
    """Check `value` against a field annotation; lists become tuples."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {_short(value)}")
        args = typing.get_args(annotation)
        item = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, item, where) for v in value)
        if len(value) != len(args):
            raise InputError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is str and isinstance(value, bool) and where.endswith("train.amp"):  # Recipes before 0.4.
        return "auto" if value else "float32"
    if annotation in (int, float, str, bool) and (type(value) is not annotation):
        raise InputError(f"{where}: expected {annotation.__name__}, got {_short(value)}")
    return value


# Keys that older recipes (and the recipe.yaml of older runs) set and that are no longer fields: (dataclass, key) ->
# why. They are dropped with a warning, so an old run dir still resumes; every other unknown key is an error.
_REMOVED = {("TrainConfig", "num_workers"): "nothing read it: training batches are gathered on the device"}


def from_dict(cls, data, where: str = "recipe"):
    """Build dataclass `cls` from a mapping; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {_short(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in [k for k in data if (cls.__name__, k) in _REMOVED]:
        warnings.warn(f"{where}: {key} was removed ({_REMOVED[cls.__name__, key]}); ignored", stacklevel=2)
        data = {k: v for k, v in data.items() if k != key}
    unknown = sorted((k for k in data if k not in names), key=str)
    if unknown:
        raise InputError(f"{where}: unknown key {_short(unknown[0])}; known: {', '.join(names)}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def recipe_dirs() -> list[Path]:
    """Where named recipes live: the installed package, then a source checkout."""
    here = Path(__file__).resolve().parent
    return [here / "recipes", here.parent / "recipes"]


def find_recipe(name_or_path: str | os.PathLike) -> Path:
    """A YAML path as given, or a recipe name such as `market1501` or `tiny`."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise InputError(f"{path}: no such recipe file")
        return path
    for folder in recipe_dirs():
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in recipe_dirs() if d.is_dir() for p in d.glob("*.yaml")})
    raise InputError(f"unknown recipe {str(name_or_path)!r}; known: {', '.join(known)} (or a path to a .yaml)")


def load_recipe(name_or_path: str | os.PathLike, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Load a recipe, then apply `section.key=value` overrides (values parsed as YAML).

    Examples:
        >>> load_recipe("tiny", ["train.rec_steps=5"]).train.rec_steps
        5
    """
    path = find_recipe(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a UTF-8 text file (byte {err.start}); a recipe is YAML") from None
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({_yaml_error(err)})") from None
    except RecursionError:
        raise InputError(f"{path}: not a recipe (nested too deeply)") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe is a mapping of sections, got {_short(data)}")
    data.setdefault("name", path.stem)
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, leaf = key.partition(".")
        if not sep or not dot:
            raise InputError(f"--set {_short(item)}: expected section.key=value, e.g. train.batch_size=8")
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise InputError(f"--set {_short(item)}: {_short(section)} is not a section")
        data[section][leaf] = parse_value(value, f"--set {_short(item)}")
    where = f"{path}{' with --set ' + ', '.join(overrides) if overrides else ''}"
    recipe = from_dict(Recipe, data, _short_text(where))
    validate_recipe(recipe, _short_text(where))
    return recipe


def parse_value(text: str, where: str):
    """A `--set` value as YAML, except that `3e-3` is a float (YAML 1.1 reads it as a string, which no field wants)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"{where}: the value is not valid YAML ({_yaml_error(err)})") from None
    except RecursionError:
        raise InputError(f"{where}: the value is nested too deeply") from None
    if isinstance(value, str) and "e" in value.lower() and any(c.isdigit() for c in value):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _short_text(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def validate_recipe(recipe: Recipe, where: str = "recipe") -> None:
    """Checks across fields that types alone cannot express."""
    loss = recipe.loss
    validate_model(recipe.model, where)
    _check_ranges(recipe, ("loss", "train"), where)
    if loss.ref_loss not in REF_LOSSES:
        raise InputError(f"{where}: loss.ref_loss must be one of {', '.join(REF_LOSSES)}, got {_short(loss.ref_loss)}")
    if not 0.0 <= loss.alpha <= 1.0:
        raise InputError(f"{where}: loss.alpha must lie in [0, 1], got {loss.alpha}")
    if loss.identity_weight > 0 and not loss.identity_model:
        raise InputError(f"{where}: loss.identity_weight={loss.identity_weight} needs loss.identity_model, a re-ID "
                         f"checkpoint of the training people (e.g. a reid-benchmark baseline arm's checkpoint.pt)")


def validate_model(m: ModelConfig, where: str = "model") -> None:
    """A model config that networks can be built from: sizes positive, image size divisible by every level's
    stride. Also guards configs read from others' files, before any network is built."""
    _check_ranges(Recipe(model=m), ("model",), where)
    if len(m.image_size) != 2 or min(m.image_size) < 1:
        raise InputError(f"{where}: model.image_size must be two positive sizes [H, W], got "
                         f"{_short(list(m.image_size))}")
    h, w = m.image_size
    for levels, what in ((m.num_levels, "model.num_levels"), (m.ref_levels, "model.ref_levels"),
                         (m.disc_levels, "model.disc_levels")):
        halvings = levels - 1 if what != "model.disc_levels" else levels
        if halvings >= min(h, w).bit_length() or h % 2**halvings or w % 2**halvings:  # No 2**(10**9) computed.
            raise InputError(f"{where}: image_size {h}x{w} is not divisible by 2^{halvings}, as {what}={levels} "
                             f"needs")
    if m.ref_input not in REF_INPUTS:
        raise InputError(f"{where}: model.ref_input must be one of {', '.join(REF_INPUTS)}, got {_short(m.ref_input)}")


# Fields whose values would only fail later, mid-run or inside torch: (section, field, lowest, highest or None).
_RANGES = [("model", "num_joints", 18, 18), ("model", "heatmap_sigma", 1e-6, None), ("model", "num_levels", 1, None),
           ("model", "base_channels", 1, None), ("model", "z_dim", 0, None), ("model", "ref_levels", 1, None),
           ("model", "ref_channels", 1, None), ("model", "disc_channels", 1, None), ("model", "disc_levels", 1, None),
           ("loss", "lambda_img", 0, None), ("loss", "r1_gamma", 0, None),
           ("loss", "identity_weight", 0, None),
           ("loss", "ssim_window", 1, None), ("loss", "ssim_sigma", 1e-6, None),
           ("train", "batch_size", 1, None), ("train", "rec_steps", 0, None), ("train", "ref_steps", 0, None),
           ("train", "lr", 1e-12, None), ("train", "beta1", 0, 0.999999), ("train", "beta2", 0, 0.999999),
           ("train", "log_every", 1, None), ("train", "sample_every", 1, None), ("train", "checkpoint_every", 1, None)]


def _check_ranges(recipe: Recipe, sections: tuple[str, ...], where: str) -> None:
    """The numbers of `sections` in their ranges (NaN in none)."""
    for section, name, low, high in _RANGES:
        if section not in sections:
            continue
        value = getattr(getattr(recipe, section), name)
        if not (value >= low and (high is None or value <= high)):  # Written so that NaN fails too.
            span = f"= {low}" if low == high else f">= {low}" if high is None else f"in [{low}, {high}]"
            raise InputError(f"{where}: {section}.{name} must be {span}, got {_short(value)}")


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain-Python form of a recipe (tuples as lists), for YAML and checkpoints."""

    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(recipe))


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
