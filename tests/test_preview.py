import numpy as np
import pandas as pd
from PIL import Image

from reid_augment.keypoints import NUM_JOINTS, draw_skeleton
from reid_augment.poses import read_poses
from reid_augment.preview import GAP, fit, pair_sheet, sheet, skeleton


def test_sheet_fits_tiles_to_one_cell_pads_short_rows_and_draws_gaps():
    a = np.full((8, 4, 3), 10, np.uint8)
    big = np.full((16, 8, 3), 200, np.uint8)
    out = sheet([[a, big, a], [None, a]], gap_after=1, group=2)
    assert out.shape == (2 * 8 + GAP, 3 * 4 + GAP, 3)
    assert (out[:8, 4:4 + GAP] == 255).all() and (out[16:] == 255).all()  # Column gap; strip under the group.
    assert (out[:8, 4 + GAP:8 + GAP] == 200).all()  # The big tile, fitted to the first tile's cell.
    assert (out[8:16, :4] == 0).all() and (out[8:16, 8 + GAP:] == 0).all()  # None and the padding are blank.
    assert np.array_equal(sheet([[a, a]]), np.concatenate([a, a], axis=1))
    assert fit(a, (8, 4)) is a


def test_skeleton_scales_a_pose_from_its_frame():
    pose = np.full((NUM_JOINTS, 2), -1, np.float32)
    pose[1], pose[2] = (10, 10), (20, 10)
    assert np.array_equal(skeleton(pose, (32, 16), (64, 32)), draw_skeleton(pose / 2, (32, 16)))


def test_pair_sheet_fits_a_target_of_another_size(cuhk_dir, tmp_path):
    names = sorted(p.name for p in cuhk_dir.glob("0001_*.jpg"))[:2]
    paths = {n: str(cuhk_dir / n) for n in names}
    Image.open(paths[names[1]]).resize((32, 64)).save(tmp_path / "small.png")
    paths[names[1]] = str(tmp_path / "small.png")
    poses = read_poses(cuhk_dir / "annotations.csv")
    out = pair_sheet(pd.DataFrame({"from": names[:1], "to": names[1:]}), poses, paths)
    assert out.shape == (128, 4 * 64, 3)


def test_preview_pairs_writes_the_sheet_a_python_caller_asked_for(cuhk_dir, tmp_path):
    from reid_augment.pairs import preview_pairs

    names = sorted(p.name for p in cuhk_dir.glob("0001_*.jpg"))[:4]
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"from": names[:-1], "to": names[1:]}).to_csv(pairs, index=False)
    result = preview_pairs(cuhk_dir, pairs, cuhk_dir / "annotations.csv", tmp_path / "sheet.png", count=2)
    width, height = Image.open(result.output).size
    assert result.rows == 2 and width == 4 * 64 and height >= 2 * 128
    assert str(tmp_path / "sheet.png") in result.summary()
