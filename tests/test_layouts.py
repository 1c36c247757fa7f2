"""Every common re-ID layout: detected, read, generated for, exported, and read back by the stock loaders."""

import os
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


def _one_line_error(result, *words) -> None:
    """Exit status 1 through click's error path (SystemExit): an uncaught exception would be result.exception
    itself, with its traceback; the message is one `Error:` line holding `words`."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert all(word in lines[0] for word in words), result.output


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
    assert set(images["split"]) == {"train", "val", "query", "test"} and set(images["camera_id"]) == {1, 2}
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
    _one_line_error(result, "bounding_box_train")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("train,test", [("train", "test"), ("mask_train_v2", "mask_test_v2")])
def test_half_msmt17_root_gets_the_half_layout_message(train, test, tmp_path, cuhk_dir):
    """train/ and test/ with person folders but no list files: MSMT17 without its lists, not 'no image files'."""
    root = tmp_path / "MSMT17"
    for folder in (train, test):
        (root / folder / "0000").mkdir(parents=True)
        (root / folder / "0000" / "0000_000_01_0303morning_0000_0.jpg").write_bytes(
            (cuhk_dir / "0001_c1s1_000000_00.jpg").read_bytes())
    with pytest.raises(InputError, match=f"has {train}/ and {test}/ but no list_train.txt"):
        detect_layout(root.parent)
    _one_line_error(_run("build-pairs", root, "-o", tmp_path / "w"), str(root), "list_train.txt")
    assert detect_layout(root / train, "by-person").kind == "by-person"  # One split's folder still reads.


def test_every_command_that_reads_a_data_set_takes_layout(cuhk_dir, checkpoint, market_root, tmp_path):
    """--layout reaches the layout detection of each: forcing msmt17 on a flat folder is refused there."""
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "manifest.csv").write_text("image,pid,camid,source\n")
    commands = {
        "build-pairs": ["build-pairs", cuhk_dir, "-o", tmp_path / "w"],
        "train": ["train", cuhk_dir, "-w", tmp_path / "w", "--recipe", "tiny", "--device", "cpu"],
        "generate": ["generate", cuhk_dir, "--per-id", 1, "--checkpoint", checkpoint, "-o", tmp_path / "g",
                     "--device", "cpu"],
        "evaluate": ["evaluate", cuhk_dir, "-w", tmp_path / "w", "--checkpoint", checkpoint, "--device", "cpu"],
        "export": ["export", gen, "--root", cuhk_dir, "-o", tmp_path / "e"],
        "reid-benchmark": ["reid-benchmark", cuhk_dir, "--manifest", gen, "-o", tmp_path / "b", "--device", "cpu"],
        "preview": ["preview", cuhk_dir, "-w", tmp_path / "w"],
        "estimate-poses": ["estimate-poses", cuhk_dir, "-o", tmp_path / "p.csv", "--backend", "mediapipe"],
    }
    for name, args in commands.items():
        _one_line_error(_run(*args, "--layout", "msmt17"), "--layout msmt17", str(cuhk_dir))
    assert not any((tmp_path / out).exists() for out in ("w", "g", "e", "b", "p.csv")), list(tmp_path.iterdir())
    # Detected, this folder is flat; forced, it is read as the layout asked for, here none it has.
    result = _run("preview", market_root / "bounding_box_train", "-w", tmp_path / "w", "--layout", "market1501")
    _one_line_error(result, "--layout market1501")


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
    if kind == "msmt":  # combineall adds the validation list's images (and query, gallery): all of them exist.
        combined = stock(root=str(new_root.parent.parent), verbose=False, combineall=True)
        assert len(combined.train) > len(augmented.train) and all(os.path.isfile(p) for p, *_ in combined.train)
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
    if kind == "duke":  # Crops of several sizes, each generated image exported at its own source's size.
        shapes = {load_rgb(p).shape for p, *_ in augmented.train if "_vdg" in p}
        assert len(shapes) > 1 and all(os.path.isfile(p) for p, *_ in augmented.train)


def test_msmt17_v2_whose_test_names_repeat_training_names(layout_roots, checkpoint, tmp_path):
    """MSMT17 V2: build-pairs, generate and export key only the training split by name, so test names that repeat
    training names do not stop them; build-pairs warns only of images that are missing; torchreid's MSMT17 reads
    the export, the validation list's images included."""
    pytest.importorskip("torchreid")
    root, reid_data = layout_roots["msmt2"], layout_roots["reid_data_v2"]
    with pytest.raises(InputError, match="share the name"):  # The repeat is there: all splits do collide.
        scan_images(root)
    poses = tmp_path / "poses.csv"
    rows = (root.parent / "poses.csv").read_text()
    joints = "[" + ", ".join(["10"] * 18) + "]"
    poses.write_text(f"{rows}0000_999_01_0303morning_9999_0.jpg: {joints}: {joints}\n")  # An image it lacks.
    result = _run("build-pairs", reid_data, "--poses", poses, "-o", tmp_path / "work")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "0000_999_01_0303morning_9999_0.jpg: no such image" in warnings[0], warnings
    # Rows of validation, query and gallery images: present, so left out without a warning.
    others = rows.count("\n") - 1 - (root / "list_train.txt").read_text().count("\n")
    assert others > (root / "list_val.txt").read_text().count("\n") > 0
    assert f"1 for images the folder lacks, {others} for its other splits'" in result.output, result.output
    result = _run("generate", reid_data, "--per-id", 2, "--poses", poses, "--checkpoint", checkpoint,
                  "-o", tmp_path / "gen", "--device", "cpu", "--no-score")
    assert result.exit_code == 0, result.output
    new_root = tmp_path / "exported" / "msmt17" / "MSMT17_V2"
    result = _run("export", tmp_path / "gen", "--root", reid_data, "-o", new_root)
    assert result.exit_code == 0 and "12 generated" in result.output, result.output
    stock = _torchreid_class("msmt17", "MSMT17")
    original, augmented = (stock(root=str(r), verbose=False) for r in (reid_data, new_root.parent.parent))
    assert len(augmented.train) == len(original.train) + 12 and (new_root / "mask_test_v2").is_symlink()
    combined = stock(root=str(new_root.parent.parent), verbose=False, combineall=True)
    assert all(os.path.isfile(p) for p, *_ in combined.train)
    placed = {Path(p).name for p in (new_root / "mask_train_v2").rglob("*.jpg")}
    assert {line.split()[0].split("/")[1] for line in (root / "list_val.txt").read_text().splitlines()} <= placed


def test_torchreid_cuhk03_names_are_read_and_register_feeds_its_class(cuhk03_torchreid, checkpoint, tmp_path):
    """`1_001_1_01.png` is campus pair 1, person 001, view 1, image 01: the person is `1_001`, the camera the view.
    Generated for, its images join torchreid's CUHK03 training split under their sources' labels."""
    pytest.importorskip("torchreid")
    from reid_augment.integrations.torchreid import register

    images, reid_data = cuhk03_torchreid["images"], cuhk03_torchreid["reid_data"]
    found = scan_images(images).images
    assert set(found["person_id"]) == {f"1_{p:03d}" for p in range(1, 13)} and set(found["camera_id"]) == {1, 2}
    with pytest.raises(InputError, match="images_detected and images_labeled"):
        detect_layout(images.parent)
    gen = generate(images, checkpoint, cuhk03_torchreid["poses"], tmp_path / "gen",
                   GenerateConfig(per_id=2, num_workers=0, score=False), device="cpu", progress=False)
    manifest = pd.read_csv(gen.manifest, dtype={"pid": str})
    assert len(manifest) == 24 and set(manifest["pid"]) == set(found["person_id"])
    stock_cls = _torchreid_class("cuhk03", "CUHK03")
    stock = stock_cls(root=str(reid_data), verbose=False)
    augmented = register(gen.manifest, base="cuhk03")(root=str(reid_data), verbose=False)
    generated = [item for item in augmented.train if "_vdg" in item[0]]
    # Persons 1-6 are torchreid's training persons: their 12 images join; the others' sources are test images.
    assert len(generated) == 12 and len(augmented.train) == len(stock.train) + 12
    base = {Path(p).name: (pid, cam) for p, pid, cam, *_ in stock.train}
    source_of = dict(zip(manifest["image"].map(lambda i: Path(i).name), manifest["source"]))
    for path, pid, cam, *_ in generated:
        assert (pid, cam) == base[source_of[Path(path).name]] and os.path.isfile(path)
    assert augmented.num_train_pids == stock.num_train_pids == 6


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
    pytest.importorskip("fastreid")
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
