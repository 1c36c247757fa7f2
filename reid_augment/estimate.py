"""Stage 1: 18-joint poses for every image, with mmpose (default) or an offline MediaPipe backend.

The only module that imports mmpose or mediapipe, lazily. An estimator is any callable that maps a list
of [H, W, 3] uint8 RGB crops to [B, 17, 3] COCO-17 keypoints (y, x, score); `estimate_poses` converts
them to the OpenPose-18 layout and writes the Def-GAN annotation CSV, resumably.
"""

from __future__ import annotations

import importlib.machinery
import json
import re
import os
import sys
import tempfile
import time
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .device import resolve_device
from .errors import InputError
from .fileio import atomic_open, atomic_write_text
from .images import ImageSet, scan_images, try_load_rgb
from .keypoints import coco17_to_openpose18
from .poses import HEADER, PoseTable, format_pose_rows, read_poses

Estimator = Callable[[Sequence[np.ndarray]], np.ndarray]
BACKENDS = ("mmpose", "mediapipe")

# mmpose's own RTMPose-m COCO-17 config (shipped in the package) and its official checkpoint.
MMPOSE_CONFIG = "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py"
MMPOSE_CHECKPOINT = ("https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/"
                     "rtmpose-m_simcc-coco_pt-aic-coco_420e-256x192-d8dd5ca4_20230127.pth")
# BlazePose-33 landmark of each COCO-17 joint.
BLAZEPOSE_TO_COCO17 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
DEFAULT_SCORE_THR = {"mmpose": 0.3, "mediapipe": 0.5}


def install_mmcv_ext_stub() -> None:
    """Let mmpose import under mmcv-lite, which lacks the compiled `mmcv._ext`.

    mmpose imports `mmcv.ops` at start-up; top-down models never call those ops. The stand-in answers
    every op with a function that raises a clear error if it is ever called. A compiled mmcv wins.
    """
    try:
        import mmcv._ext  # noqa: F401
        return
    except ImportError:
        pass
    stub = types.ModuleType("mmcv._ext")

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*_args, **_kwargs):
            raise RuntimeError(f"mmcv op {name!r} needs a compiled mmcv; mmcv-lite is installed")

        return unavailable

    stub.__getattr__ = __getattr__
    # No loader: mmcv's check_ops_exist() then answers False, as it should.
    stub.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", loader=None)
    sys.modules["mmcv._ext"] = stub


def _mmpose_config_path(config: str | None) -> str:
    if config and Path(config).is_file():
        return config
    import mmpose

    shipped = Path(mmpose.__file__).parent / ".mim" / "configs" / (config or MMPOSE_CONFIG)
    if not shipped.is_file():
        raise InputError(f"{config or MMPOSE_CONFIG}: no such mmpose config (a path, or one inside mmpose/.mim/configs)")
    return str(shipped)


def _openmmlab_globals() -> list:
    """The numpy objects OpenMMLab checkpoints keep in their metadata, allowed in a weights_only load."""
    import numpy as np

    multiarray = getattr(np, "_core", np.core).multiarray
    names = [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
             (multiarray.scalar, "numpy.core.multiarray.scalar")]
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "uint8", "bool")]
    return [np.ndarray, np.dtype, *names, multiarray._reconstruct, multiarray.scalar, *dtypes]


def _load_mmpose_checkpoint(model, checkpoint: str) -> None:
    """Load an OpenMMLab checkpoint with weights_only=True: only tensors, plain data and numpy arrays; no code."""
    import pickle

    import torch

    with torch.serialization.safe_globals(_openmmlab_globals()):
        try:
            if checkpoint.startswith(("http://", "https://")):
                try:
                    state = torch.hub.load_state_dict_from_url(checkpoint, map_location="cpu", weights_only=True)
                except pickle.UnpicklingError:
                    raise
                except Exception as err:  # noqa: BLE001 - any download failure has the same two ways out.
                    raise InputError(f"cannot fetch the mmpose checkpoint ({err.__class__.__name__}); pass a "
                                     f"local file with --pose-checkpoint PATH, or use --backend mediapipe "
                                     f"(offline)") from None
            else:
                if not Path(checkpoint).is_file():
                    raise InputError(f"{checkpoint}: no such pose checkpoint (or use --backend mediapipe)")
                state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            from .checkpoints import blocked_global

            needs = blocked_global(err)
            raise InputError(f"{checkpoint}: refused, the pose checkpoint holds pickled objects beyond tensors, plain "
                             f"data and numpy arrays{f' (it asks for {needs})' if needs else ''}; nothing in it was "
                             f"run") from None
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001 - a zip, pickle or safetensors format error: not a torch file.
            raise InputError(f"{checkpoint}: not a torch checkpoint ({err.__class__.__name__}); pass an mmpose .pth "
                             f"with --pose-checkpoint, or use --backend mediapipe") from None
    weights = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise InputError(f"{checkpoint}: not an mmpose checkpoint (no state_dict of tensors)")
    try:
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise InputError(f"{checkpoint}: its weights do not fit the mmpose model of the config "
                         f"({' '.join(str(err).split())[:120]})") from None


def make_mmpose_estimator(config: str | None = None, checkpoint: str | None = MMPOSE_CHECKPOINT,
                          device: str = "cpu") -> tuple[Estimator, str]:
    """A batched top-down mmpose estimator whose person box is the whole crop (no detector).

    `checkpoint=None` keeps random weights: for tests only. Returns (estimator, model description).
    """
    install_mmcv_ext_stub()
    try:
        import torch

        with warnings.catch_warnings():  # The mm stack's deprecation notices say nothing a user can act on.
            warnings.simplefilter("ignore")
            from mmengine.dataset import Compose, pseudo_collate
            from mmengine.registry import init_default_scope
            from mmpose.apis import init_model
    except ImportError as err:
        raise InputError(f"the mmpose backend is not installed ({err}); run `make pose` or use --backend mediapipe"
                         ) from None
    config_path = _mmpose_config_path(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = init_model(config_path, checkpoint=None, device="cpu")
        except Exception as err:  # noqa: BLE001 - a user's file: mmengine's parse errors have no common base.
            raise InputError(f"{config_path}: not an mmpose model config ({type(err).__name__}: "
                             f"{' '.join(str(err).split())[:120]})") from None
    if checkpoint is not None:
        _load_mmpose_checkpoint(model, checkpoint)
    model = model.to(device).eval()
    init_default_scope(model.cfg.get("default_scope", "mmpose"))
    pipeline = Compose(model.cfg.test_dataloader.dataset.pipeline)

    def estimate(images: Sequence[np.ndarray]) -> np.ndarray:
        batch = []
        for rgb in images:
            h, w = rgb.shape[:2]
            info = {"img": np.ascontiguousarray(rgb[..., ::-1]), "bbox": np.array([[0, 0, w, h]], np.float32),
                    "bbox_score": np.ones(1, np.float32), **model.dataset_meta}
            batch.append(pipeline(info))
        with torch.no_grad():
            results = model.test_step(pseudo_collate(batch))
        out = np.zeros((len(images), 17, 3), np.float32)
        for i, sample in enumerate(results):
            xy = np.asarray(sample.pred_instances.keypoints)[0]
            out[i, :, 0], out[i, :, 1] = xy[:, 1], xy[:, 0]
            out[i, :, 2] = np.asarray(sample.pred_instances.keypoint_scores)[0]
        return out

    return estimate, f"mmpose {Path(config_path).name} ({checkpoint or 'random weights'})"


# MediaPipe's (absl's) native start-up lines: info and warnings that say nothing a user can act on.
_NATIVE_NOISE = re.compile(r"^(?:[IW]\d{4} \d|INFO: Created TensorFlow Lite|WARNING: All log messages before absl)")


@contextmanager
def _native_log_filtered():
    """Run the block with file descriptor 2 captured, then replay what native code wrote there except
    `_NATIVE_NOISE`: MediaPipe's C++ logging ignores Python's, so its start-up warnings would land between the
    progress bars; its errors (E/F lines, anything else) still show."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _NATIVE_NOISE.match(line):
                    sys.stderr.write(line)


def make_mediapipe_estimator(upscale: float = 2.0, pad: float = 0.5) -> tuple[Estimator, str]:
    """MediaPipe Pose (BlazePose, model_complexity 1, bundled in the wheel: no network).

    Re-ID crops are small and tight, so each crop is upscaled and padded with a grey border before
    detection (BlazePose's detector wants context around the person); coordinates are mapped back.
    Measured on the 18 bundled Market-1501 crops against the field's OpenPose annotations: untouched
    crops 10/18 detected, 93% of shared joints within 6 px; upscale 2 + pad 0.5: 17/18 and 94%.
    """
    os.environ.setdefault("GLOG_minloglevel", "2")  # Quiet MediaPipe's C++ start-up log.
    try:
        import mediapipe as mp
    except ImportError as err:
        raise InputError(f"the mediapipe backend is not installed ({err}); run `make pose`") from None
    from PIL import Image

    # Its start-up log comes at creation and with the first person found: both happen here, on a bundled crop.
    with _native_log_filtered():
        pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False)
        warm = Path(__file__).parent / "sample" / "cuhk03" / "0001_c1s1_000000_00.jpg"
        if warm.is_file():
            with Image.open(warm) as img:
                pose.process(np.asarray(img.convert("RGB").resize((256, 512))))

    def estimate(images: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(images), 17, 3), np.float32)
        for i, rgb in enumerate(images):
            h, w = rgb.shape[:2]
            big = np.asarray(Image.fromarray(rgb).resize((round(w * upscale), round(h * upscale)), Image.BICUBIC))
            py, px = round(big.shape[0] * pad), round(big.shape[1] * pad)
            canvas = np.pad(big, ((py, py), (px, px), (0, 0)), constant_values=128)
            result = pose.process(canvas)
            if result.pose_landmarks is None:
                continue
            marks = result.pose_landmarks.landmark
            for j, b in enumerate(BLAZEPOSE_TO_COCO17):
                out[i, j] = ((marks[b].y * canvas.shape[0] - py) / upscale,
                             (marks[b].x * canvas.shape[1] - px) / upscale, marks[b].visibility)
        return out

    return estimate, f"mediapipe {mp.__version__} BlazePose model_complexity=1 (upscale {upscale}, pad {pad})"


def make_estimator(backend: str, config: str | None = None, checkpoint: str | None = MMPOSE_CHECKPOINT,
                   device: str = "cpu") -> tuple[Estimator, str]:
    if backend == "mmpose":
        return make_mmpose_estimator(config, checkpoint, device)
    if backend == "mediapipe":
        return make_mediapipe_estimator()
    raise InputError(f"unknown pose backend {backend!r}; known: {', '.join(BACKENDS)}")


@dataclass
class EstimateResult:
    output: Path
    estimated: int
    already_done: int
    no_person: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.estimated / self.seconds if self.seconds else 0.0
        return (f"Estimated poses of {self.estimated} images ({rate:.1f} images/s); {self.already_done} were "
                f"already in the file; {self.no_person} have no person (all joints -1); {len(self.skipped)} "
                f"unreadable images skipped. Poses: {self.output}; scores: {scores_path(self.output)}.")


def scores_path(output: str | os.PathLike) -> Path:
    """The sidecar of a pose file: per-joint scores and the backend, model and threshold used."""
    output = Path(output)
    return output.with_name(output.stem + ".scores.json")


def _clip_to_frame(poses: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Joints that fall outside the crop are missing: the annotation CSV is in the image's pixel frame."""
    h, w = shape
    outside = (poses[:, 0] < 0) | (poses[:, 0] > h - 1) | (poses[:, 1] < 0) | (poses[:, 1] > w - 1)
    poses[outside] = -1
    return poses


def estimate_arrays(crops: Sequence[np.ndarray], estimator: Estimator, backend: str = "mediapipe",
                    score_thr: float | None = None) -> np.ndarray:
    """18-joint poses ([N, 18, 2], (y, x) in each crop's frame, -1 missing) of decoded crops."""
    score_thr = DEFAULT_SCORE_THR.get(backend, 0.3) if score_thr is None else score_thr
    if not len(crops):
        return np.zeros((0, 18, 2), np.float32)
    poses, _ = coco17_to_openpose18(np.asarray(estimator(crops), dtype=np.float32), score_thr)
    return np.stack([_clip_to_frame(p, c.shape[:2]) for p, c in zip(poses, crops)])


def estimate_poses(images: str | os.PathLike | ImageSet, output: str | os.PathLike, backend: str = "mmpose",
                   estimator: Estimator | None = None, model_name: str = "", batch_size: int = 16,
                   score_thr: float | None = None, pose_config: str | None = None,
                   pose_checkpoint: str | None = MMPOSE_CHECKPOINT, device: str = "cpu",
                   progress: bool = True) -> EstimateResult:
    """Estimate 18-joint poses of every image and write them as a Def-GAN annotation CSV.

    A rerun skips images already in `output`; the file is rewritten atomically after each chunk, so an
    interrupted run leaves a valid file. Unreadable images are reported and skipped (no row).

    Args:
        estimator: inject any COCO-17 estimator (tests, custom models); else built from `backend`.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    image_set = images if isinstance(images, ImageSet) else scan_images(images)
    output = Path(output)
    score_thr = DEFAULT_SCORE_THR.get(backend, 0.3) if score_thr is None else score_thr
    done = read_poses(output) if output.is_file() else PoseTable.from_arrays([], np.zeros((0, 18, 2)))
    sidecar = scores_path(output)
    scores: dict[str, list[float]] = json.loads(sidecar.read_text())["scores"] if sidecar.is_file() else {}
    todo = image_set.images[~image_set.images["name"].isin(set(done.names))]
    if estimator is None and len(todo):
        device = str(resolve_device(device)) if backend == "mmpose" else "cpu"  # MediaPipe runs on the CPU.
        estimator, model_name = make_estimator(backend, pose_config, pose_checkpoint, device)
    rows = format_pose_rows(done)
    skipped: list[tuple[str, str]] = []
    no_person = 0
    meta = {"backend": backend, "model": model_name, "score_thr": score_thr}

    def flush() -> None:
        with atomic_open(output, "w", encoding="utf-8", newline="") as f:
            f.write(HEADER + "\n")
            f.writelines(rows)
        atomic_write_text(sidecar, json.dumps({**meta, "scores": scores}) + "\n")

    names, paths = todo["name"].tolist(), todo["path"].tolist()
    chunk = max(64, batch_size)
    with ThreadPoolExecutor(max_workers=4) as pool:
        # Decoding runs ahead in threads while the model works on the previous batch.
        decoded = pool.map(try_load_rgb, paths)
        bar = tqdm(total=len(names), desc=f"poses ({backend})", unit="img", disable=not progress)
        since_flush = 0
        for offset in range(0, len(names), batch_size):
            batch_names, crops = [], []
            for name in names[offset:offset + batch_size]:
                rgb, problem = next(decoded)
                if problem:
                    skipped.append((name, problem))
                else:
                    batch_names.append(name)
                    crops.append(rgb)
            if crops:
                coco = np.asarray(estimator(crops), dtype=np.float32)
                poses, joint_scores = coco17_to_openpose18(coco, score_thr)
                for name, crop, pose, s in zip(batch_names, crops, poses, joint_scores):
                    pose = _clip_to_frame(pose, crop.shape[:2])
                    no_person += bool((pose < 0).all())
                    scores[name] = [round(float(v), 4) for v in s]
                    rows.extend(format_pose_rows(PoseTable.from_arrays([name], pose[None])))
            bar.update(len(names[offset:offset + batch_size]))
            since_flush += batch_size
            if since_flush >= max(chunk, len(rows) // 10):
                flush()
                since_flush = 0
        bar.close()
    if len(todo) or not output.is_file():
        flush()
    return EstimateResult(output, len(todo) - len(skipped), len(done), no_person, skipped,
                          time.perf_counter() - start)
