import numpy as np
import pytest
import torch

from reid_augment.keypoints import (
    FLIP_PERMUTATION, JOINT_NAMES, MASK_LIMBS, NUM_JOINTS, body_mask, body_masks, coco17_to_openpose18, condition,
    draw_skeleton, joint_index, present, to_heatmaps, valid_pose_mask,
)
from reid_augment.data import flip_pose_tensor
from reid_augment.poses import read_poses


def test_layout_is_openpose18():
    assert NUM_JOINTS == 18
    assert JOINT_NAMES[:3] == ("nose", "neck", "Rsho") and JOINT_NAMES[-1] == "Lear"
    assert len(MASK_LIMBS) == 23
    # Flipping twice is the identity, and it swaps left and right.
    assert [FLIP_PERMUTATION[i] for i in FLIP_PERMUTATION] == list(range(18))
    assert JOINT_NAMES[FLIP_PERMUTATION[joint_index("Rsho")]] == "Lsho"
    with pytest.raises(ValueError, match="unknown joint"):
        joint_index("Rshoulder")


def test_coco17_to_openpose18_derives_neck_and_thresholds():
    coco = np.zeros((17, 3), np.float32)
    coco[:, 2] = 0.9
    coco[:, 0] = np.arange(17) * 2  # y encodes the COCO index.
    coco[5] = (10, 20, 0.9)  # left shoulder
    coco[6] = (30, 40, 0.8)  # right shoulder
    coco[9, 2] = 0.1  # left wrist below threshold
    poses, scores = coco17_to_openpose18(coco, score_thr=0.3)
    np.testing.assert_allclose(poses[1], (20, 30))
    assert scores[1] == pytest.approx(0.8)
    np.testing.assert_allclose(poses[joint_index("Lwri")], (-1, -1))
    assert poses[joint_index("Rsho"), 0] == 30 and poses[joint_index("Lsho"), 0] == 10
    assert poses[joint_index("Reye"), 0] == 4 and poses[joint_index("Lear"), 0] == 6
    assert poses[joint_index("Rank"), 0] == 32


def test_neck_missing_without_both_shoulders():
    coco = np.full((2, 17, 3), 0.9, np.float32)
    coco[0, 6, 2] = 0.0
    poses, _ = coco17_to_openpose18(coco, score_thr=0.5)
    assert (poses[0, 1] == -1).all() and (poses[1, 1] >= 0).all()


def test_heatmaps_match_eq1_and_zero_for_missing():
    rng = np.random.default_rng(0)
    poses = rng.uniform(0, 60, size=(3, 18, 2)).astype(np.float32)
    poses[1, 4] = -1
    maps = to_heatmaps(torch.from_numpy(poses), (128, 64)).numpy()
    assert maps.shape == (3, 18, 128, 64)
    yy, xx = np.mgrid[:128, :64]
    for n, k in [(0, 0), (2, 17), (1, 3)]:
        y, x = poses[n, k]
        ref = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 6.0**2))
        np.testing.assert_allclose(maps[n, k], ref, atol=1e-6)
    assert maps[1, 4].max() == 0
    assert maps.max() <= 1.0


def test_body_mask_covers_limbs_not_background(market_sample_dir):
    table = read_poses(market_sample_dir / "annotations.csv")
    pose = table.coords[0]
    mask = body_mask(pose, (128, 64))
    assert mask.shape == (128, 64) and mask.dtype == bool
    for y, x in pose[(pose >= 0).all(-1)].astype(int):
        assert mask[min(y, 127), min(x, 63)]
    # A person covers part of the crop, not all of it.
    assert 0.1 < mask.mean() < 0.7
    assert not body_mask(np.full((18, 2), -1.0), (128, 64)).any()


def test_flip_mirrors_x_swaps_left_and_right_and_keeps_missing_joints_missing():
    """The training's flip (data.flip_pose_tensor), batched: [N, K, 2] (y, x)."""
    pose = torch.full((2, 18, 2), -1.0)
    pose[0, joint_index("Rsho")] = torch.tensor([10.0, 5.0])
    pose[0, joint_index("nose")] = torch.tensor([3.0, 31.0])  # A centre joint keeps its index.
    pose[0, joint_index("Lank")] = torch.tensor([-1.0, 7.0])  # Half missing is missing.
    pose[1] = torch.randint(0, 60, (18, 2)).float()  # Whole pixels: mirrored twice, exactly where they were.
    flipped = flip_pose_tensor(pose, width=64)
    assert flipped.shape == pose.shape
    assert flipped[0, joint_index("Lsho")].tolist() == [10, 58] and flipped[0, joint_index("nose")].tolist() == [3, 32]
    assert (flipped[0, joint_index("Rsho")] == -1).all()  # Lsho was missing: so is its mirror.
    assert flipped[0, joint_index("Rank")].tolist() == [-1, 7]  # Not mirrored, still missing.
    assert (present(flipped[0].numpy()) == present(pose[0].numpy())[list(FLIP_PERMUTATION)]).all()
    torch.testing.assert_close(flipped[1, :, 0], pose[1, list(FLIP_PERMUTATION), 0], rtol=0, atol=0)
    torch.testing.assert_close(flipped[1, :, 1], 63 - pose[1, list(FLIP_PERMUTATION), 1], rtol=0, atol=0)
    torch.testing.assert_close(flip_pose_tensor(flipped, 64), pose, rtol=0, atol=0)  # An involution.


def test_condition_is_the_heatmaps_and_masks_of_both_poses(market_sample_dir):
    poses = torch.from_numpy(read_poses(market_sample_dir / "annotations.csv").coords[:4]).float()
    src, tgt = poses[:2], poses[2:]
    out = condition(src, tgt, (128, 64), 3.0)
    assert set(out) == {"src_maps", "tgt_maps"}
    assert torch.equal(out["src_maps"], to_heatmaps(src, (128, 64), 3.0))
    assert torch.equal(out["tgt_maps"], to_heatmaps(tgt, (128, 64), 3.0))
    with_masks = condition(src, tgt, (128, 64), 3.0, masks=True)
    assert torch.equal(with_masks["tgt_mask"], body_masks(tgt, (128, 64)))


def test_valid_pose_rule():
    poses = np.full((3, 18, 2), 5.0, np.float32)
    poses[1, joint_index("Lhip")] = -1
    poses[2, :14] = -1
    poses[2, [2, 5, 8, 11]] = 5
    assert valid_pose_mask(poses).tolist() == [True, False, True]
    assert valid_pose_mask(poses, min_joints=10).tolist() == [True, False, False]
    assert valid_pose_mask(poses, required=()).tolist() == [True, True, True]


def test_draw_skeleton_paints_joints():
    pose = np.full((18, 2), -1.0)
    pose[1], pose[2] = (20, 30), (25, 20)
    img = draw_skeleton(pose, (128, 64))
    assert img.shape == (128, 64, 3) and img.dtype == np.uint8
    assert img[20, 30].any() and img[25, 20].any() and not img[100, 5].any()


def test_batched_body_masks_agree_with_the_def_gan_mask(market_test_annotations):
    import torch

    from reid_augment.keypoints import body_masks
    from reid_augment.poses import read_poses

    poses = read_poses(market_test_annotations)
    coords = poses.coords[np.random.default_rng(0).choice(len(poses.names), 300, replace=False)]
    exact = np.stack([body_mask(c, (128, 64)) for c in coords])
    fast = body_masks(torch.from_numpy(coords), (128, 64))[:, 0].numpy() > 0.5
    inter, union = (exact & fast).sum((1, 2)), (exact | fast).sum((1, 2))
    assert inter.sum() / union.sum() >= 0.95 and (inter[union > 0] / union[union > 0]).min() >= 0.9
    assert not body_masks(torch.full((1, 18, 2), -1.0), (128, 64)).any()
