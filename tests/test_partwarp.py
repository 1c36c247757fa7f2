"""The learning-free part warp: its transforms, what it does to pixels, and the `warp` verb's manifest."""

import numpy as np
import pandas as pd
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.images import load_rgb
from reid_augment.partwarp import _affine, part_flow, part_layers, warp_to_pose
from reid_augment.poses import read_poses


def test_part_transforms_map_target_joints_onto_source_joints():
    target, source = np.array([[10.0, 5.0], [20.0, 15.0]]), np.array([[30.0, 7.0], [30.0, 27.0]])
    m = _affine(target, source, full=False)  # Two joints: rotation, scale (here 20/14.1) and shift, exact.
    assert np.allclose(target @ m[:, :2].T + m[:, 2], source)
    quad = np.array([[1.0, 2.0], [3.0, 5.0], [7.0, 1.0], [4.0, 4.0]])
    a = np.array([[1.1, 0.2, 3.0], [-0.1, 0.9, -2.0]])
    assert np.allclose(_affine(quad, quad @ a[:, :2].T + a[:, 2], full=True), a)
    assert _affine(np.array([[1.0, 1.0], [1.0, 1.0]]), source, full=False) is None  # Degenerate: no transform.


def test_warp_moves_the_parts_with_the_pose_and_keeps_the_rest(cuhk_dir):
    poses = read_poses(cuhk_dir / "annotations.csv")
    name = poses.names[0]
    image = load_rgb(cuhk_dir / name)
    pose = poses.lookup([name])[0]
    assert np.array_equal(warp_to_pose(image, pose, pose), image)  # Same pose: the crop itself.
    moved = pose.copy()
    moved[pose[:, 0] >= 0] += [0, 6]  # The whole person 6 px to the right.
    out = warp_to_pose(image, pose, moved)
    _, masks = part_layers(pose, moved, image.shape[:2])
    grow = lambda m: np.pad(m, 1)[:-2, 1:-1] | np.pad(m, 1)[2:, 1:-1] | np.pad(m, 1)[1:-1, :-2] | np.pad(m, 1)[1:-1, 2:] | m  # noqa: E731
    torso = masks[0] > 0
    inner = ~grow(~torso)  # The torso away from its soft edge ...
    later = grow(np.any(masks[1:] > 0, axis=0))  # ... and from every part painted after it (head, limbs).
    ys, xs = np.nonzero(inner & ~later)
    ys, xs = ys[xs >= 6], xs[xs >= 6]
    assert len(ys) > 30
    assert np.abs(out[ys, xs].astype(int) - image[ys, xs - 6]).max() <= 1  # Torso pixels moved 6 px right.
    far = pose.copy()
    far[:] = -1  # No joint in the target: nothing to move.
    assert np.array_equal(warp_to_pose(image, pose, far), image)


def test_part_flow_moves_what_the_warp_moves_and_leaves_the_background(cuhk_dir):
    poses = read_poses(cuhk_dir / "annotations.csv")
    pose = poses.lookup([poses.names[0]])[0]
    h, w = 128, 64
    ys, xs = np.mgrid[0:h, 0:w]
    flow = part_flow(pose, pose, (h, w))  # Same pose: every pixel samples itself.
    assert np.allclose((flow[..., 0] + 1) / 2 * (w - 1), xs, atol=1e-3)
    assert np.allclose((flow[..., 1] + 1) / 2 * (h - 1), ys, atol=1e-3)
    moved = pose.copy()
    moved[pose[:, 0] >= 0] += [0, 6]
    flow = part_flow(pose, moved, (h, w))
    covered = np.any(part_layers(pose, moved, (h, w))[1] > 0, axis=0)
    source_x = (flow[..., 0] + 1) / 2 * (w - 1)
    assert covered.sum() > 500 and (~covered).sum() > 500
    assert np.allclose(source_x[covered], xs[covered] - 6, atol=1e-3)  # Body: from 6 px to the left.
    assert np.allclose(source_x[~covered], xs[~covered], atol=1e-3)  # Background: where it was.


def test_the_warp_verb_writes_generates_manifest_and_resumes(cuhk_dir, tmp_path):
    args = ["warp", str(cuhk_dir), "--poses", str(cuhk_dir / "annotations.csv"), "-o", str(tmp_path / "w")]
    first = CliRunner().invoke(cli, args + ["--per-id", "2"])
    assert first.exit_code == 0, first.output
    table = pd.read_csv(tmp_path / "w" / "manifest.csv")
    assert len(table) == 24 and (table["checkpoint"] == "partwarp").all() and table["image"].str.contains("_warp").all()
    assert all(load_rgb(tmp_path / "w" / p).shape == (128, 64, 3) for p in table["image"])
    more = CliRunner().invoke(cli, args + ["--per-id", "3"])
    assert more.exit_code == 0 and "Warped 12 images" in more.output and "24 were already done" in more.output
    grown = pd.read_csv(tmp_path / "w" / "manifest.csv")
    assert len(grown) == 36 and grown.iloc[:24].equals(table)
