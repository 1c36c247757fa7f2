"""Every common re-ID layout: detected, read, generated for, exported, and read back by the stock loaders."""

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.config import GenerateConfig
from reid_augment.errors import InputError
from reid_augment.generate import generate
from reid_augment.images import load_rgb, scan_images
from reid_augment.layouts import detect_layout


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _torchreid_class(module: str, name: str):
    try:
        mod = __import__(f"torchreid.reid.data.datasets.image.{module}", fromlist=[name])
    except ImportError:
        mod = __import__(f"torchreid.data.datasets.image.{module}", fromlist=[name])
    return getattr(mod, name)


def test_layouts_are_detected_from_the_data_set_or_its_parent(layout_roots, market_root, cuhk_dir):
    assert detect_layout(market_root.parent.parent) == detect_layout(market_root)
    assert detect_layout(market_root).kind == "market1501"
    assert detect_layout(layout_roots["duke"].parent).kind == "market1501"
    msmt = detect_layout(layout_roots["msmt"].parent)
    assert msmt.kind == "msmt17" and msmt.root == layout_roots["msmt"]
    assert detect_layout(cuhk_dir).kind == "flat"
    images = scan_images(layout_roots["msmt"]).images
    # The training split is what list_train.txt says; MSMT17's person 0000 is a person, not a distractor.
    train = images[images["split"] == "train"]
    assert len(train) == (layout_roots["msmt"] / "list_train.txt").read_text().count("\n")
    assert set(train["person_id"]) == {f"{i:04d}" for i in range(6)}
    assert set(images["split"]) == {"train", "query", "test"} and set(images["camera_id"]) == {1, 2}
    duke = scan_images(layout_roots["duke"]).images
    assert duke["name"].str.match(r"^\d{4}_c[12]_f\d{7}\.jpg$").all() and set(duke["camera_id"]) == {1, 2}


def test_half_layouts_unknown_layouts_and_shared_names_are_one_line_errors(tmp_path, cuhk_dir):
    (tmp_path / "half" / "query").mkdir(parents=True)
    with pytest.raises(InputError, match="no bounding_box_train/"):
        detect_layout(tmp_path / "half")
    (tmp_path / "msmt").mkdir()
    (tmp_path / "msmt" / "list_train.txt").write_text("0000/a.jpg 0\n")
    with pytest.raises(InputError, match="no train/ or mask_train_v2/"):
        detect_layout(tmp_path / "msmt")
    with pytest.raises(InputError, match="--layout msmt17"):
        detect_layout(cuhk_dir, "msmt17")
    for person in ("0001", "0002"):
        (tmp_path / "people" / person).mkdir(parents=True)
        (tmp_path / "people" / person / "a.jpg").write_bytes((cuhk_dir / "0001_c1s1_000000_00.jpg").read_bytes())
    assert len(scan_images(tmp_path / "people").images) == 2  # Keyed as <person>/<image>: unique.
    (tmp_path / "flatdup" / "bounding_box_train").mkdir(parents=True)
    (tmp_path / "flatdup" / "query").mkdir()
    for sub in ("bounding_box_train", "query"):
        (tmp_path / "flatdup" / sub / "0001_c1s1_000000_00.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="two images share the name '0001_c1s1_000000_00.jpg'"):
        scan_images(tmp_path / "flatdup")
    result = _run("build-pairs", tmp_path / "half", "-o", tmp_path / "w")
    assert result.exit_code == 1 and "Traceback" not in result.output and "bounding_box_train" in result.output


@pytest.mark.parametrize("kind", ["duke", "msmt"])
def test_generate_and_export_in_the_data_sets_own_layout(kind, layout_roots, checkpoint, tmp_path):
    """build-pairs, generate and export on DukeMTMC-reID and MSMT17 roots; torchreid's stock class reads the
    result as more images of the same people."""
    pytest.importorskip("torchreid")
    root = layout_roots[kind]
    poses = root.parent / "poses.csv"
    result = _run("build-pairs", root.parent, "--poses", poses, "-o", tmp_path / "work")
    assert result.exit_code == 0, result.output
    pairs = pd.read_csv(tmp_path / "work" / "pairs-train.csv", dtype={"pid": str})
    assert len(pairs) and set(pairs["pid"]) == ({f"{i:04d}" for i in range(1, 7)} if kind == "duke"
                                                 else {f"{i:04d}" for i in range(6)})
    gen = generate(root.parent, checkpoint, poses, tmp_path / "gen", GenerateConfig(per_id=2, num_workers=0),
                   device="cpu", progress=False)
    manifest = pd.read_csv(gen.manifest, dtype={"pid": str})
    assert len(manifest) == 12
    new_root = layout_roots["reid_data"].parent / f"exported-{kind}" / root.relative_to(layout_roots["reid_data"])
    result = _run("export", tmp_path / "gen", "--root", root, "-o", new_root)
    assert result.exit_code == 0, result.output
    stock = _torchreid_class(*{"duke": ("dukemtmcreid", "DukeMTMCreID"), "msmt": ("msmt17", "MSMT17")}[kind])
    original = stock(root=str(layout_roots["reid_data"]), verbose=False)
    augmented = stock(root=str(new_root.parent.parent), verbose=False)
    assert len(augmented.train) == len(original.train) + 12
    assert augmented.num_train_pids == original.num_train_pids
    assert len(augmented.query) == len(original.query) and len(augmented.gallery) == len(original.gallery)
    by_name = {Path(p).name: (pid, cam) for p, pid, cam, *_ in original.train}
    parsed = {Path(p).name: (pid, cam) for p, pid, cam, *_ in augmented.train}
    for image, source in zip(manifest["image"], manifest["source"]):
        name = Path(image).name
        if kind == "msmt":  # No relabelling in MSMT17: the list's label and the name's camera.
            assert parsed[name] == by_name[source]
        else:  # Duke relabels; the person's label is shared with its source's and the camera is the same.
            assert parsed[name][1] == by_name[source][1]
            assert parsed[name][0] == parsed[source][0]
        assert load_rgb(new_root / ("train/" + source[:4] if kind == "msmt" else "bounding_box_train") / name).shape \
            == load_rgb(next(root.rglob(source))).shape


@pytest.fixture(scope="module")
def manifests(tmp_path_factory, layout_roots, market_root, checkpoint, cuhk_dir):
    out = {}
    for kind, root, poses in (("market", market_root, cuhk_dir / "annotations.csv"),
                              ("duke", layout_roots["duke"], layout_roots["duke"].parent / "poses.csv"),
                              ("msmt", layout_roots["msmt"], layout_roots["msmt"].parent / "poses.csv")):
        out[kind] = generate(root, checkpoint, poses, tmp_path_factory.mktemp(f"gen-{kind}"),
                             GenerateConfig(per_id=3, num_workers=0), device="cpu", progress=False).manifest
    return out


def _check_augmented(dataset_train, base_train, manifest, pid_of=lambda item: item[1]):
    generated = [item for item in dataset_train if "_vdg" in item[0]]
    table = pd.read_csv(manifest)
    assert len(generated) == len(table) == 18 and len(dataset_train) == len(base_train) + 18
    source_of = {Path(i).name: s for i, s in zip(table["image"], table["source"])}
    base = {Path(item[0]).name: item for item in base_train}
    for item in generated:
        assert tuple(item[1:]) == tuple(base[source_of[Path(item[0]).name]][1:])  # Its source's labels.
    assert {pid_of(i) for i in dataset_train} == {pid_of(i) for i in base_train}


@pytest.mark.parametrize("base,module,name,kind", [("market1501", "market1501", "Market1501", "market"),
                                                    ("dukemtmcreid", "dukemtmcreid", "DukeMTMCreID", "duke"),
                                                    ("msmt17", "msmt17", "MSMT17", "msmt")])
def test_torchreid_register_augments_any_stock_data_set(base, module, name, kind, manifests, layout_roots,
                                                        market_root):
    pytest.importorskip("torchreid")
    from reid_augment.integrations.torchreid import register

    root = str(market_root.parent.parent if kind == "market" else layout_roots["reid_data"])
    cls = register(manifests[kind], base=base)
    stock = _torchreid_class(module, name)(root=root, verbose=False)
    _check_augmented(cls(root=root, verbose=False).train, stock.train, manifests[kind])
    try:
        import torchreid.reid.data as tdata
    except ImportError:
        import torchreid.data as tdata
    manager = tdata.ImageDataManager(root=root, sources=f"{base}_vdg", height=64, width=32, batch_size_train=4,
                                     workers=0, train_sampler="RandomSampler")
    assert manager.num_train_pids == stock.num_train_pids
    with pytest.raises(InputError, match="unknown torchreid image data set 'nope'"):
        register(manifests[kind], base="nope")


@pytest.mark.parametrize("base,kind", [("Market1501", "market"), ("DukeMTMC", "duke"), ("MSMT17", "msmt")])
def test_fastreid_register_augments_any_stock_data_set(base, kind, manifests, layout_roots, market_root):
    pytest.importorskip("fastreid", reason="installed by the README's set-up (pip install --no-deps fastreid)")
    from reid_augment.integrations.fastreid import register

    from fastreid.data.datasets import DATASET_REGISTRY

    root = str(market_root.parent if kind == "market" else layout_roots[kind].parent)
    cls = register(manifests[kind], base=base)
    assert DATASET_REGISTRY.get(f"{base}VDG") is cls
    stock = DATASET_REGISTRY.get(base)(root=root, verbose=False)
    augmented = cls(root=root, verbose=False)
    _check_augmented(augmented.train, stock.train, manifests[kind])
    assert all(str(pid).startswith(stock.dataset_name + "_") for _, pid, _ in augmented.train)
    assert len(augmented.query) == len(stock.query)


def test_export_gives_generated_images_their_sources_size_or_out_size(market_root, checkpoint, cuhk_dir, tmp_path):
    gen = generate(market_root, checkpoint, cuhk_dir / "annotations.csv", tmp_path / "gen",
                   GenerateConfig(per_id=1, num_workers=0, out_size=(64, 32)), device="cpu", progress=False)
    images = pd.read_csv(gen.manifest)["image"]
    result = _run("export", tmp_path / "gen", "--market-root", market_root, "-o", tmp_path / "a")
    assert result.exit_code == 0 and "6 of them resized" in result.output, result.output
    result = _run("export", tmp_path / "gen", "--root", market_root, "-o", tmp_path / "b", "--out-size", "96x48")
    assert result.exit_code == 0, result.output
    for image in images:
        name = Path(image).name
        assert load_rgb(tmp_path / "a" / "bounding_box_train" / name).shape[:2] == (128, 64)
        assert load_rgb(tmp_path / "b" / "bounding_box_train" / name).shape[:2] == (96, 48)
    assert (tmp_path / "a" / "query").is_symlink()
    result = _run("export", tmp_path / "gen", "--root", market_root, "-o", tmp_path / "c", "--out-size", "96")
    assert result.exit_code == 2 and "HxW" in result.output
