import json

import numpy as np
import pandas as pd
import pytest

from reid_augment.errors import InputError
from reid_augment.poses import HEADER, PoseTable, read_poses, write_poses


def _field_reader(path):
    """How Def-GAN and PATN read the file."""
    df = pd.read_csv(path, sep=":")
    return {r["name"]: (json.loads(r["keypoints_y"]), json.loads(r["keypoints_x"])) for _, r in df.iterrows()}


def test_round_trip_of_the_field_file(market_test_annotations, tmp_path):
    table = read_poses(market_test_annotations)
    assert len(table) == 19732
    out = tmp_path / "poses.csv"
    write_poses(out, table)
    assert _field_reader(out) == _field_reader(market_test_annotations)
    assert out.read_bytes() == market_test_annotations.read_bytes()


def test_malformed_rows_are_reported_with_line_numbers(tmp_path):
    good = "0002_c1s1_000451_03.jpg: " + json.dumps([1] * 18) + ": " + json.dumps([2] * 18)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([HEADER, good, "0003_c1s1_1.jpg: [1, 2]: [3, 4]", "0004_c1.jpg: [a]: [b]", good]))
    with pytest.raises(InputError) as err:
        read_poses(bad)
    msg = str(err.value)
    assert "bad.csv" in msg and "line 3: 2 joints" in msg and "line 4" in msg and "line 5" in msg
    assert "\n" not in msg


def test_header_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such pose file"):
        read_poses(tmp_path / "nope.csv")
    f = tmp_path / "h.csv"
    f.write_text("from,to\n")
    with pytest.raises(InputError, match="line 1: expected the header"):
        read_poses(f)


def test_fractional_coordinates_are_rounded_and_missing_kept(tmp_path):
    coords = np.full((1, 18, 2), -1.0)
    coords[0, 0] = (10.6, 3.2)
    write_poses(tmp_path / "p.csv", PoseTable.from_arrays(["0001_c1s1_0.jpg"], coords))
    back = read_poses(tmp_path / "p.csv")
    np.testing.assert_allclose(back.coords[0, 0], (11, 3))
    assert (back.coords[0, 1:] == -1).all()
    assert back.lines.tolist() == [2]
