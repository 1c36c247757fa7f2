import numpy as np
import pandas as pd
import pytest

from reid_augment.config import PairConfig
from reid_augment.errors import InputError
from reid_augment.images import identities
from reid_augment.pairs import build_pairs, ordered_pairs, read_pair_file
from reid_augment.poses import PoseTable, read_poses


def test_ordered_pairs_follow_defgan_order():
    src, tgt = ordered_pairs(np.array(["b", "a", "b", "b", "c", "a"]))
    got = list(zip(src.tolist(), tgt.tolist()))
    # Persons in order of first appearance (b, a, c), each person's images in file order.
    assert got == [(0, 2), (0, 3), (2, 0), (2, 3), (3, 0), (3, 2), (1, 5), (5, 1)]


def test_reproduces_the_field_market_test_pairs(market_test_annotations, market_test_pairs, cuhk_dir):
    test = read_poses(market_test_annotations)
    train = read_poses(cuhk_dir / "annotations.csv")
    pair_set = build_pairs(train, PairConfig(), test_poses=test)
    reference = pd.read_csv(market_test_pairs)
    assert len(pair_set.test) == 12000
    assert (pair_set.test[["from", "to"]].to_numpy() == reference[["from", "to"]].to_numpy()).all()


def test_pair_invariants_on_real_poses(cuhk_dir):
    poses = read_poses(cuhk_dir / "annotations.csv")
    pair_set = build_pairs(poses, PairConfig(test_ids=3))
    train, test = pair_set.train, pair_set.test
    for pairs in (train, test):
        assert (identities(pairs["from"])[0] == identities(pairs["to"])[0]).all()
        assert (pairs["from"] != pairs["to"]).all()
        assert not pairs.duplicated(["from", "to"]).any()
    assert not set(train["pid"]) & set(test["pid"])
    assert pair_set.stats["test_identities"] == 3
    # Every kept training image of an identity pairs with every other one: n * (n - 1) pairs.
    sizes = pd.Series(identities(train["from"].drop_duplicates())[0]).value_counts()
    assert len(train) == int((sizes * (sizes - 1)).sum())


def test_all_cuhk_pairs_match_the_data_readme(tmp_path):
    from pathlib import Path

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk03-dev" / "annotations.csv"
    if not shared.is_file():
        pytest.skip("../shared/data is not beside this checkout")
    pair_set = build_pairs(read_poses(shared), PairConfig())
    assert pair_set.stats["kept"] == 1743 and pair_set.stats["train_identities"] == 200
    assert len(pair_set.train) == 13930


def _synthetic(n_ids=4, per_id=5):
    names, coords = [], np.full((n_ids * per_id, 18, 2), 10.0, np.float32)
    for pid in range(n_ids):
        for k in range(per_id):
            names.append(f"{pid + 1:04d}_c{k % 2 + 1}s1_{k:06d}_00.jpg")
    return PoseTable.from_arrays(names, coords)


def test_cross_camera_cap_and_determinism():
    poses = _synthetic()
    cross = build_pairs(poses, PairConfig(cross_camera=True)).train
    assert (cross["from"].str[6] != cross["to"].str[6]).all()
    assert len(cross) == 4 * (3 * 2 * 2)
    capped = build_pairs(poses, PairConfig(max_pairs_per_id=7, seed=3)).train
    assert capped.groupby("pid").size().eq(7).all()
    again = build_pairs(poses, PairConfig(max_pairs_per_id=7, seed=3)).train
    other = build_pairs(poses, PairConfig(max_pairs_per_id=7, seed=4)).train
    pd.testing.assert_frame_equal(capped, again)
    assert not capped.equals(other)


def test_distractors_and_pose_less_are_dropped():
    poses = _synthetic(2, 3)
    names = list(poses.names) + ["-1_c1s1_000001_00.jpg", "0000_c1s1_000001_00.jpg"]
    coords = np.concatenate([poses.coords, np.full((2, 18, 2), 10.0, np.float32)])
    coords[0, 8] = -1  # Rhip missing
    pair_set = build_pairs(PoseTable.from_arrays(names, coords), PairConfig())
    assert pair_set.stats["distractors"] == 2 and pair_set.stats["pose_less"] == 1
    assert names[0] not in set(pair_set.train["from"]) | set(pair_set.train["to"])
    assert len(pair_set.train) == 2 * 1 + 3 * 2


def test_too_many_test_ids_is_a_clear_error():
    with pytest.raises(InputError, match="only 4 identities"):
        build_pairs(_synthetic(), PairConfig(test_ids=4))


def test_read_pair_file_errors(tmp_path):
    with pytest.raises(InputError, match="no such pairs file"):
        read_pair_file(tmp_path / "x.csv")
    (tmp_path / "p.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="columns 'from' and 'to'"):
        read_pair_file(tmp_path / "p.csv")


def test_unparseable_names_in_a_pose_file_are_a_clear_error():
    poses = PoseTable.from_arrays(["0001_c1s1_000001_00.jpg", "frame12.jpg"], np.full((2, 18, 2), 10.0))
    with pytest.raises(InputError, match="frame12.jpg: image name is neither a re-ID file name"):
        build_pairs(_synthetic(2, 2), PairConfig(), test_poses=poses)


def test_identities_of_both_layouts():
    names = ["0002_c1s1_000451_03.jpg", "-1_c5s3_086412_11.jpg", "alice/0007_c3s1_1.jpg", "bob/img.png"]
    pids, cams = identities(names)
    assert pids.tolist() == ["0002", "-1", "alice", "bob"] and cams.tolist() == [1, 5, 3, -1]
