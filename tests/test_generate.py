import numpy as np
import pandas as pd
import pytest
import torch

from reid_augment.checkpoints import CHECKPOINT_FORMAT
from reid_augment.config import GenerateConfig
from reid_augment.errors import InputError
from reid_augment.generate import generate, output_name, plan, select
from reid_augment.images import load_rgb, parse_market_name, scan_images
from reid_augment.manifest import MANIFEST_COLUMNS, merge
from reid_augment.poses import PoseTable, read_poses
from reid_augment.shards import parse_shard

def _gen(cuhk_dir, checkpoint, out, **kwargs):
    shard = kwargs.pop("shard", (0, 1))
    cfg = GenerateConfig(**{"per_id": 3, "num_workers": 0, **kwargs})
    return generate(cuhk_dir, checkpoint, cuhk_dir / "annotations.csv", out, cfg, shard, "cpu", progress=False)


def test_exact_counts_manifest_schema_and_names(cuhk_dir, checkpoint, tmp_path):
    result = _gen(cuhk_dir, checkpoint, tmp_path / "out", per_id=5)
    manifest = pd.read_csv(result.manifest, dtype={"pid": str})
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest.groupby("pid").size().eq(5).all() and manifest["pid"].nunique() == 12
    for _, row in manifest.iterrows():
        assert (tmp_path / "out" / row["image"]).is_file()
        pid, cam = parse_market_name(row["image"].split("/")[-1])
        assert (pid, cam) == (row["pid"], row["camid"]) == parse_market_name(row["source"])
        assert parse_market_name(row["pose_from"])[0] != row["pid"]  # A pose of another person.
        assert load_rgb(tmp_path / "out" / row["image"]).shape == (128, 64, 3)  # The source crop's size.
    assert manifest["step"].eq(7).all() and manifest["checkpoint"].str.len().eq(64).all()
    assert (tmp_path / "out" / "preview.png").is_file()
    assert output_name("0002_c1s1_000451_03.jpg", 7) == "0002_c1s1_000451_03_vdg07.jpg"


def test_prefix_batch_size_and_shard_independence(cuhk_dir, checkpoint, tmp_path):
    five = pd.read_csv(_gen(cuhk_dir, checkpoint, tmp_path / "a", per_id=5, batch_size=7).manifest)
    three = pd.read_csv(_gen(cuhk_dir, checkpoint, tmp_path / "b", per_id=3, batch_size=64).manifest)
    key = ["image", "source", "pose_from", "seed"]
    prefix = five[five["image"].str.extract(r"_vdg(\d+)")[0].astype(int) < 3]
    pd.testing.assert_frame_equal(prefix[key].reset_index(drop=True), three[key].reset_index(drop=True))
    for rel in three["image"]:
        a = load_rgb(tmp_path / "a" / rel).astype(int)
        b = load_rgb(tmp_path / "b" / rel).astype(int)
        assert np.abs(a - b).max() <= 2
    for i in range(2):
        _gen(cuhk_dir, checkpoint, tmp_path / "s", per_id=3, shard=(i, 2))
    merged = pd.read_csv(merge([tmp_path / "s"]))
    assert sorted(merged[key].itertuples(index=False)) == sorted(three[key].itertuples(index=False))


def test_resume_after_interruption(cuhk_dir, checkpoint, tmp_path):
    """The identity is the unit of work: one whose rows did not all land is made again, whole."""
    out = tmp_path / "out"
    first = _gen(cuhk_dir, checkpoint, out, per_id=2)
    manifest = first.manifest.read_text().splitlines()
    # Simulate kill -9: a torn last line, and an image on disk whose row never landed (identities 0011, 0012).
    (out / "manifest.csv").write_text("\n".join(manifest[:-3]) + "\n" + manifest[-3][:20])
    again = _gen(cuhk_dir, checkpoint, out, per_id=2)
    assert again.already_done == 20 and again.generated == 4
    # Killed after an identity's manifest rows but before all its candidates log rows: it is made again.
    log = (out / "candidates.csv").read_text().splitlines()
    (out / "candidates.csv").write_text("\n".join(log[:-1]) + "\n")
    third = _gen(cuhk_dir, checkpoint, out, per_id=2)
    assert third.already_done == 22 and third.generated == 2
    final = pd.read_csv(out / "manifest.csv")
    assert len(final) == 24 and not final["image"].duplicated().any()
    before = pd.DataFrame([line.split(",") for line in manifest[1:]], columns=manifest[0].split(","))
    assert sorted(final["image"]) == sorted(before["image"])
    assert not list(out.rglob("*.tmp"))
    assert _gen(cuhk_dir, checkpoint, out, per_id=2).generated == 0


def test_identities_with_one_image_and_strategies(cuhk_dir, checkpoint):
    images = scan_images(cuhk_dir)
    poses = read_poses(cuhk_dir / "annotations.csv")
    keep = ~images.images["name"].str.startswith("0003_") | (images.images["name"] == "0003_c1s1_000000_00.jpg")
    images.images = images.images[keep]
    for strategy in ("random", "kmeans", "novel"):
        requests, _ = plan(images, poses, GenerateConfig(per_id=4, strategy=strategy))
        one = requests[requests["pid"] == "0003"]
        assert len(one) == 4 and one["source"].nunique() == 1
    novel, _ = plan(images, poses, GenerateConfig(per_id=4, strategy="novel"))
    kmeans, _ = plan(images, poses, GenerateConfig(per_id=16, strategy="kmeans", kmeans_k=4))
    assert novel.groupby("pid")["pose_from"].nunique().eq(4).all()
    assert kmeans["pose_from"].nunique() <= 8  # Per canonical pose: its medoid, or for its owner the next one.


def test_empty_pose_bank_and_bad_checkpoint_are_clear_errors(cuhk_dir, checkpoint, tmp_path):
    images = scan_images(cuhk_dir)
    empty = PoseTable.from_arrays(images.images["name"], np.full((len(images.images), 18, 2), -1.0))
    with pytest.raises(InputError, match="pose bank is empty"):
        plan(images, empty, GenerateConfig())
    old = tmp_path / "old.pt"
    torch.save({"format": CHECKPOINT_FORMAT + 1}, old)
    with pytest.raises(InputError, match=f"checkpoint format {CHECKPOINT_FORMAT + 1}"):
        _gen(cuhk_dir, old, tmp_path / "out")
    with pytest.raises(InputError, match="i/n"):
        parse_shard("2")
    with pytest.raises(InputError, match="0 <= i < n"):
        parse_shard("2/2")


def test_novel_targets_are_the_poses_farthest_from_the_identity(cuhk_dir):
    from reid_augment.posebank import farthest_order, normalise

    images, poses = scan_images(cuhk_dir), read_poses(cuhk_dir / "annotations.csv")
    requests, _ = plan(images, poses, GenerateConfig(per_id=3, strategy="novel"))
    rows = requests[requests["pid"] == "0001"]
    own_names = [n for n in poses.names if n.startswith("0001_")]
    bank = normalise(poses.coords, (128, 64))
    own = bank[[list(poses.names).index(n) for n in own_names]]
    nearest = np.sqrt(((bank[:, None] - own[None]) ** 2).sum(-1)).min(1)
    chosen = nearest[[list(poses.names).index(n) for n in rows["pose_from"]]]
    others = ~np.char.startswith(poses.names.astype(str), "0001_")
    assert chosen.min() >= np.percentile(nearest[others], 90)
    # The matrix-product distance ranks like the direct one.
    direct = np.argsort(-nearest, kind="stable")
    assert (farthest_order(bank, own)[:5] == direct[:5]).all()


def test_kmeans_never_gives_a_person_their_own_pose(cuhk_dir):
    images, poses = scan_images(cuhk_dir), read_poses(cuhk_dir / "annotations.csv")
    # As many canonical poses as bank poses: every medoid is someone's own pose.
    requests, _ = plan(images, poses, GenerateConfig(per_id=40, strategy="kmeans", kmeans_k=200))
    owners = requests["pose_from"].str[:4]
    assert len(requests) == 480 and (owners != requests["pid"]).all()
    assert requests.groupby("pid")["pose_from"].nunique().min() > 10


def test_kmeans_gives_each_person_k_different_canonical_poses(cuhk_dir):
    images, poses = scan_images(cuhk_dir), read_poses(cuhk_dir / "annotations.csv")
    requests, _ = plan(images, poses, GenerateConfig(per_id=4, strategy="kmeans", kmeans_k=4))
    # Four images of one person take the four canonical poses, not a random draw of them with repeats.
    assert (requests.groupby("pid")["pose_from"].nunique() == 4).all()


def test_poses_are_scaled_into_the_model_frame_whatever_the_crop_size(cuhk_dir, trained_checkpoint, tmp_path):
    """Native 128x64 crops and the same crops at other sizes give the same images, up to resize noise."""
    from conftest import resized_copy

    poses = read_poses(cuhk_dir / "annotations.csv")
    other = resized_copy(cuhk_dir, tmp_path / "other", poses, [(192, 96), (100, 50), (160, 64)])

    def make(folder, out, seed):
        cfg = GenerateConfig(per_id=3, num_workers=0, seed=seed, out_size=(128, 64))
        result = generate(folder, trained_checkpoint, folder / "annotations.csv" if folder == other
                          else cuhk_dir / "annotations.csv", out, cfg, device="cpu", progress=False)
        table = pd.read_csv(result.manifest).sort_values("image")
        return table, np.stack([load_rgb(out / p).astype(float) for p in table["image"]])

    native_rows, native = make(cuhk_dir, tmp_path / "a", 0)
    other_rows, resized = make(other, tmp_path / "b", 0)
    moved_rows, moved = make(cuhk_dir, tmp_path / "c", 1)
    assert list(native_rows["pose_from"]) == list(other_rows["pose_from"])
    changed = (native_rows["pose_from"].to_numpy() != moved_rows["pose_from"].to_numpy())
    resize_noise = np.abs(native - resized).mean()
    pose_change = np.abs(native[changed] - moved[changed]).mean()
    print(f"resize noise {resize_noise:.2f}, pose change {pose_change:.2f} grey levels")
    assert resize_noise < 0.25 * pose_change, (resize_noise, pose_change)


def test_outputs_take_the_source_size_or_out_size(cuhk_dir, checkpoint, tmp_path):
    poses = read_poses(cuhk_dir / "annotations.csv")
    sizes = [(192, 96), (100, 50)]
    from conftest import resized_copy

    other = resized_copy(cuhk_dir, tmp_path / "other", poses, sizes)
    result = generate(other, checkpoint, other / "annotations.csv", tmp_path / "out",
                      GenerateConfig(per_id=2, num_workers=0), device="cpu", progress=False)
    for _, row in pd.read_csv(result.manifest).iterrows():
        assert load_rgb(tmp_path / "out" / row["image"]).shape[:2] == load_rgb(other / row["source"]).shape[:2]
    forced = generate(other, checkpoint, other / "annotations.csv", tmp_path / "forced",
                      GenerateConfig(per_id=1, num_workers=0, out_size=(96, 48)), device="cpu", progress=False)
    for image in pd.read_csv(forced.manifest)["image"]:
        assert load_rgb(tmp_path / "forced" / image).shape[:2] == (96, 48)


def test_no_score_leaves_the_pckh_column_empty_and_says_so(cuhk_dir, checkpoint, tmp_path):
    result = _gen(cuhk_dir, checkpoint, tmp_path / "out", per_id=1, score=False)
    assert "Not scored (--no-score)" in result.summary() and result.scored_with is None
    assert pd.read_csv(result.manifest)["pckh"].isna().all()


def test_min_pckh_keeps_n_per_identity_from_whichever_source():
    # One person, two source images with three candidates each: [0.9, 0.8, 0.1] and [0.1, 0.1, 0.1].
    scores = np.array([0.9, 0.8, 0.1, 0.1, 0.1, 0.1])
    assert select(scores, 2, 0.5).tolist() == [0, 1]  # Both from the first image: N = 2 pass, 2 kept.
    assert select(scores, 3, 0.5).tolist() == [0, 1]  # Only two pass: a shortfall of one.
    assert select(scores, 3).tolist() == [0, 1, 2]    # No gate: the best N, ties to the first.
    # A target without a head box cannot be scored (nan): the gate keeps it, after the scored ones that pass.
    unscorable = np.array([np.nan, 0.2, 0.9, np.nan])
    assert select(unscorable, 1, 0.5).tolist() == [2]
    assert select(unscorable, 2, 0.5).tolist() == [0, 2]
    assert select(unscorable, 4, 1.0).tolist() == [0, 3]
    assert select(unscorable, 3, 0.0).tolist() == [0, 1, 2]


@pytest.mark.parametrize("strategy", ["random", "kmeans", "novel"])
def test_a_candidate_does_not_depend_on_n_or_m(cuhk_dir, strategy):
    images, poses = scan_images(cuhk_dir), read_poses(cuhk_dir / "annotations.csv")
    key = ["pid", "image", "source", "pose_from", "seed"]

    def candidates(per_id, m):
        requests, _ = plan(images, poses, GenerateConfig(per_id=per_id, candidates=m, strategy=strategy))
        return requests[key]

    two_by_three = candidates(2, 3)
    assert len(two_by_three) == 12 * 6 and not two_by_three["image"].duplicated().any()
    pd.testing.assert_frame_equal(two_by_three, candidates(6, 1))  # Candidate j is the same for any N and M.
    four_by_three = candidates(4, 3)
    prefix = four_by_three.groupby("pid").head(6).reset_index(drop=True)
    pd.testing.assert_frame_equal(two_by_three, prefix)


def test_merge_refuses_shards_that_list_no_image(tmp_path):
    for i in range(2):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        (folder / f"manifest.shard-{i}-of-2.csv").write_text(",".join(MANIFEST_COLUMNS) + "\n")
    with pytest.raises(InputError, match="list no image yet"):
        merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "manifest.csv")
    assert not (tmp_path / "manifest.csv").exists()


def test_what_generate_is_not_given_comes_from_the_work_dir(cuhk_dir, checkpoint, tmp_path):
    """The newest trained checkpoint, the pose bank and generated/ of a work dir: for Python callers as for the CLI."""
    import shutil

    work = tmp_path / "work"
    with pytest.raises(InputError, match=r"work/runs: no trained checkpoint"):
        generate(cuhk_dir, workdir=work)
    with pytest.raises(InputError, match=r"generate: give checkpoint, out_dir, or a work dir to take them from"):
        generate(cuhk_dir, poses=cuhk_dir / "annotations.csv")
    (work / "runs" / "tiny" / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, work / "runs" / "tiny" / "checkpoints" / "latest.pt")
    shutil.copy(cuhk_dir / "annotations.csv", work / "poses.csv")
    result = generate(cuhk_dir, cfg=GenerateConfig(per_id=1, num_workers=0, score=False), device="cpu",
                      progress=False, workdir=work)
    assert result.manifest == work / "generated" / "manifest.csv"
    assert pd.read_csv(result.manifest)["step"].eq(7).all()  # The work dir's checkpoint made them.


def test_merge_returns_the_manifest_with_its_summary(cuhk_dir, checkpoint, tmp_path):
    for i in range(2):
        _gen(cuhk_dir, checkpoint, tmp_path / "s", per_id=1, shard=(i, 2), score=False)
    merged = merge([tmp_path / "s"], tmp_path / "all.csv")
    assert merged.path == tmp_path / "all.csv" and merged.is_file()  # Still a path to its callers.
    assert merged.summary() == f"Merged the manifests of 1 folder(s) into {tmp_path / 'all.csv'}: 12 images of 12 identities."
