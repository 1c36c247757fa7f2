"""The one definition of the OpenPose-18 joint layout, and what is computed from a pose.

Shapes: N batch, K = 18 joints, H x W crop. A pose is a float array [K, 2] of (y, x) pixel
coordinates in the image's own frame; a missing joint is (-1, -1) in files and NaN nowhere.
"""

from __future__ import annotations

import numpy as np
import torch

JOINT_NAMES: tuple[str, ...] = (
    "nose", "neck", "Rsho", "Relb", "Rwri", "Lsho", "Lelb", "Lwri", "Rhip",
    "Rkne", "Rank", "Lhip", "Lkne", "Lank", "Reye", "Leye", "Rear", "Lear",
)
NUM_JOINTS = len(JOINT_NAMES)
MISSING = -1
HEATMAP_SIGMA = 6.0  # Eq. 1 of the paper, the value of Def-GAN.

# The 23 limbs of PG2/Def-GAN's body mask (0-based), torso diagonals included.
MASK_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (1, 16), (1, 17), (8, 11), (11, 5),
    (8, 2), (16, 17),
)
# The skeleton drawn in previews: OpenPose's 17 bones.
SKELETON: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
# Index of each joint's mirror image, for horizontal flips.
FLIP_PERMUTATION: tuple[int, ...] = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)
# OpenPose-18 joint j comes from COCO-17 joint COCO17_INDEX[j]; the neck (-1) is derived.
COCO17_INDEX: tuple[int, ...] = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
# The paper's filter (Ma et al. / Def-GAN): both shoulders and both hips present.
DEFAULT_REQUIRED_JOINTS: tuple[str, ...] = ("Rsho", "Lsho", "Rhip", "Lhip")
# One colour per joint for skeleton drawings (RGB).
JOINT_COLORS = np.array(
    [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0],
     [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255],
     [0, 0, 255], [85, 0, 255], [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]],
    dtype=np.uint8,
)


def joint_index(name: str) -> int:
    """Index of a joint by its name (case-insensitive), with a clear error for typos."""
    lookup = {n.lower(): i for i, n in enumerate(JOINT_NAMES)}
    if name.lower() not in lookup:
        raise ValueError(f"unknown joint {name!r}; known: {', '.join(JOINT_NAMES)}")
    return lookup[name.lower()]


def present(poses: np.ndarray) -> np.ndarray:
    """Boolean mask of present joints; [..., K, 2] -> [..., K]."""
    return (poses[..., 0] >= 0) & (poses[..., 1] >= 0)


def scale_pose(pose: np.ndarray, frame: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A [K, 2] (y, x) pose from an image of size `frame` = (H, W) into one of size `size`; -1 stays -1."""
    scale = np.array([size[0] / frame[0], size[1] / frame[1]], dtype=np.float32)
    return np.where(present(pose)[:, None], pose * scale, pose).astype(np.float32)


def valid_pose_mask(poses: np.ndarray, required: tuple[str, ...] = DEFAULT_REQUIRED_JOINTS,
                    min_joints: int = 0) -> np.ndarray:
    """Which poses pass the filter rule: all `required` joints present and >= `min_joints` joints.

    Args:
        poses: [N, K, 2] (y, x) with -1 for missing joints.
    Returns:
        [N] bool.
    """
    vis = present(poses)
    keep = vis.sum(-1) >= min_joints
    if required:
        keep &= vis[:, [joint_index(n) for n in required]].all(-1)
    return keep


def coco17_to_openpose18(coco: np.ndarray, score_thr: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Map COCO-17 keypoints to the OpenPose-18 layout.

    The neck is the midpoint of the shoulders when both pass the threshold, else missing; its
    score is the smaller of the two shoulder scores.

    Args:
        coco: [..., 17, 3] rows of (y, x, score).
        score_thr: joints scoring below it become missing (-1).
    Returns:
        poses [..., 18, 2] (y, x) with -1 for missing joints, and scores [..., 18].
    """
    coco = np.asarray(coco, dtype=np.float32)
    if coco.shape[-2:] != (17, 3):
        raise ValueError(f"expected [..., 17, 3] COCO keypoints, got {coco.shape}")
    idx = np.array(COCO17_INDEX)
    out = coco[..., np.where(idx < 0, 0, idx), :].copy()
    shoulders = coco[..., [5, 6], :]
    out[..., 1, :2] = shoulders[..., :2].mean(-2)
    out[..., 1, 2] = shoulders[..., 2].min(-1)
    scores = out[..., 2]
    poses = out[..., :2]
    poses[scores < score_thr] = MISSING
    return poses, scores


def to_heatmaps(poses: torch.Tensor, size: tuple[int, int], sigma: float = HEATMAP_SIGMA) -> torch.Tensor:
    """Gaussian joint heatmaps of Eq. 1: H_j(p) = exp(-|p - P_j|^2 / (2 sigma^2)).

    Separable: exp(-(dy^2 + dx^2)/2s^2) = exp(-dy^2/2s^2) * exp(-dx^2/2s^2), so it costs one
    outer product per joint and runs on whatever device `poses` lives on.

    Args:
        poses: [N, K, 2] (y, x) pixel coordinates, negative for missing joints.
        size: (H, W) of the maps.
    Returns:
        [N, K, H, W] float in [0, 1]; a missing joint gives an all-zero channel.
    """
    if poses.ndim != 3 or poses.shape[-1] != 2:
        raise ValueError(f"expected poses of shape [N, K, 2], got {tuple(poses.shape)}")
    poses = poses.float()
    h, w = size
    ys = torch.arange(h, device=poses.device, dtype=torch.float32)
    xs = torch.arange(w, device=poses.device, dtype=torch.float32)
    gy = torch.exp(-((ys - poses[..., 0:1]) ** 2) / (2 * sigma**2))  # [N, K, H]
    gx = torch.exp(-((xs - poses[..., 1:2]) ** 2) / (2 * sigma**2))  # [N, K, W]
    vis = ((poses[..., 0] >= 0) & (poses[..., 1] >= 0)).float()  # [N, K]
    return gy.unsqueeze(-1) * gx.unsqueeze(-2) * vis[..., None, None]


def body_mask(pose: np.ndarray, size: tuple[int, int], radius: int = 4) -> np.ndarray:
    """Body mask of PG2/Def-GAN for mask-SSIM and mask-IS, from one (target) pose.

    Each limb of MASK_LIMBS with both ends present is a rectangle of half-width `radius`, each
    present joint a disk of `radius`; then a 5x5 morphological closing.

    Args:
        pose: [K, 2] (y, x), -1 for missing joints.
        size: (H, W).
    Returns:
        [H, W] bool.
    """
    from skimage.draw import disk, polygon
    from skimage.morphology import dilation, erosion

    pose = np.asarray(pose, dtype=np.float64)
    vis = present(pose)
    mask = np.zeros(size, dtype=bool)
    for a, b in MASK_LIMBS:
        if not (vis[a] and vis[b]):
            continue
        d = pose[a] - pose[b]
        length = np.hypot(*d)
        if length == 0:
            continue
        normal = radius * np.array([-d[1], d[0]]) / length
        corners = np.stack([pose[a] + normal, pose[a] - normal, pose[b] - normal, pose[b] + normal])
        mask[polygon(corners[:, 0], corners[:, 1], shape=size)] = True
    for y, x in pose[vis]:
        mask[disk((y, x), radius, shape=size)] = True
    square = np.ones((5, 5), dtype=bool)
    return erosion(dilation(mask, square), square)


def body_masks(poses: torch.Tensor, size: tuple[int, int], radius: float = 4.0) -> torch.Tensor:
    """`body_mask` for a batch, on the poses' device: [N, K, 2] -> [N, 1, H, W] float in {0, 1}.

    Limb rectangles plus joint disks are the points within `radius` of a limb segment or a joint, computed by
    distance for every pixel at once; the 5x5 closing is a max-pool and a min-pool. For the training loss;
    the metrics keep the Def-GAN-exact `body_mask` (the two agree to IoU >= 0.95 on the field's annotations).
    """
    poses = poses.float()
    n, h, w = len(poses), *size
    ys = torch.arange(h, device=poses.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=poses.device, dtype=torch.float32).view(1, 1, w)
    vis = (poses[..., 0] >= 0) & (poses[..., 1] >= 0)  # [N, K]
    inside = torch.zeros(n, h, w, dtype=torch.bool, device=poses.device)
    r2 = radius**2
    for j in range(poses.shape[1]):  # Joint disks (strict, as skimage.draw.disk).
        y, x = poses[:, j, 0, None, None], poses[:, j, 1, None, None]
        inside |= (((ys - y) ** 2 + (xs - x) ** 2) < r2) & vis[:, j, None, None]
    for a, b in MASK_LIMBS:  # Limb rectangles: within `radius` of the segment a-b.
        ay, ax = poses[:, a, 0, None, None], poses[:, a, 1, None, None]
        dy, dx = poses[:, b, 0, None, None] - ay, poses[:, b, 1, None, None] - ax
        length2 = dy**2 + dx**2
        py, px = ys - ay, xs - ax
        t = ((py * dy + px * dx) / length2.clamp_min(1e-6)).clamp(0, 1)
        ok = (vis[:, a] & vis[:, b] & (length2[:, 0, 0] > 0))[:, None, None]
        inside |= (((py - t * dy) ** 2 + (px - t * dx) ** 2) <= r2) & ok
    mask = inside.float().view(n, 1, h, w)
    closed = torch.nn.functional.max_pool2d(mask, 5, stride=1, padding=2)  # Dilation...
    return -torch.nn.functional.max_pool2d(-closed, 5, stride=1, padding=2)  # ...then erosion.


def condition(src_pose: torch.Tensor, tgt_pose: torch.Tensor, size: tuple[int, int], sigma: float = HEATMAP_SIGMA,
              masks: bool = False, flow: bool = False) -> dict[str, torch.Tensor]:
    """The pose conditioning of a batch, drawn on the poses' device: what VDG takes besides the source image.

    The one place poses become model inputs, for training (`train.prepare_batch`), generation (`generate.render`)
    and the benchmarks alike.

    Args:
        src_pose, tgt_pose: [N, K, 2] (y, x) in the model's frame, negative for missing joints.
        size: (H, W) of the model's crops; sigma: the heatmaps' (ModelConfig.heatmap_sigma).
        masks: also the target body masks of the refinement stage's masked losses.
        flow: also the part flow of the deformable skips (`ModelConfig.deform_skips`).
    Returns:
        src_maps, tgt_maps [N, K, H, W] (`to_heatmaps`); with `masks`, tgt_mask [N, 1, H, W] (`body_masks`); with
        `flow`, flow [N, H, W, 2] (`part_flows`).
    """
    out = {"src_maps": to_heatmaps(src_pose, size, sigma), "tgt_maps": to_heatmaps(tgt_pose, size, sigma)}
    if masks:
        out["tgt_mask"] = body_masks(tgt_pose, size)
    if flow:
        out["flow"] = part_flows(src_pose, tgt_pose, size)
    return out


def part_flows(src_pose: torch.Tensor, tgt_pose: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per pair, where each target pixel's body part lies in the source (`partwarp.part_flow`: Def-GAN's per-part
    affine transforms from the keypoints, nothing learnt): [N, K, 2] x 2 -> [N, H, W, 2] on the poses' device."""
    from .partwarp import part_flow  # partwarp builds on this module's joint layout.

    src, tgt = src_pose.cpu().numpy(), tgt_pose.cpu().numpy()
    flows = np.stack([part_flow(a, b, size) for a, b in zip(src, tgt)]) if len(src) else np.zeros((0, *size, 2))
    return torch.from_numpy(flows).to(src_pose.device, torch.float32)


def draw_skeleton(pose: np.ndarray, size: tuple[int, int], radius: int = 2) -> np.ndarray:
    """An RGB drawing of a pose on black, for previews and sample grids; returns [H, W, 3] uint8."""
    from skimage.draw import disk, line_aa

    pose = np.asarray(pose, dtype=np.float64)
    vis = present(pose)
    canvas = np.zeros((*size, 3), dtype=np.uint8)
    for a, b in SKELETON:
        if not (vis[a] and vis[b]):
            continue
        rr, cc, val = line_aa(*np.round(pose[a]).astype(int), *np.round(pose[b]).astype(int))
        inside = (rr >= 0) & (rr < size[0]) & (cc >= 0) & (cc < size[1])
        colour = (JOINT_COLORS[a].astype(np.float32) + JOINT_COLORS[b]) / 2
        canvas[rr[inside], cc[inside]] = (val[inside, None] * colour).astype(np.uint8)
    for j in np.flatnonzero(vis):
        canvas[disk(tuple(pose[j]), radius, shape=size)] = JOINT_COLORS[j]
    return canvas
