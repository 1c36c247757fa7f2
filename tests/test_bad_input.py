"""Bad input, tried systematically (hypothesis): malformed pose CSVs, pair CSVs, manifests, MSMT17 list files,
recipe YAML, --set values and forged or truncated .safetensors files. Each reader raises an InputError that
names the file and the problem in one short line; each command exits non-zero through click's error path (no
traceback) with that line, and leaves no output behind, not even a temp file.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reid_augment.cli import cli
from reid_augment.config import load_recipe
from reid_augment.errors import InputError
from reid_augment.layouts import read_msmt_list
from reid_augment.manifest import read_generated
from reid_augment.pairs import read_pair_file
from reid_augment.poses import HEADER, read_poses
from reid_augment.weights import export_generator, load_generator

FAST = settings(max_examples=25, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CLI = settings(FAST, max_examples=8)
MAX_MESSAGE = 400


def _short_error(err: InputError, path: Path) -> None:
    text = str(err)
    assert str(path) in text and "\n" not in text and len(text) < MAX_MESSAGE + len(str(path)), text


def _fails_cleanly(result, named, folder: Path, *outputs: Path) -> None:
    """Non-zero exit through click's error path, one short `Error:` line naming `named` (the bad file or value),
    and nothing written: none of `outputs`, no temp file in `folder`."""
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(named) in errors[0] and len(errors[0]) < MAX_MESSAGE + len(str(named)), \
        result.output
    for out in outputs:
        assert not out.exists(), f"{out} was left behind"
    assert not list(folder.rglob(".*.tmp")), "a temp file was left behind"


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _fresh(tmp_path: Path, name: str) -> Path:
    """An empty folder per example (hypothesis reuses the test's tmp_path)."""
    folder = tmp_path / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


# Pose CSVs -------------------------------------------------------------------------------------------------------

NAME = "0001_c1s1_000000_00.jpg"
JOINTS = "[" + ", ".join(["10"] * 18) + "]"
ROW = f"{NAME}: {JOINTS}: {JOINTS}"
NON_NUMBERS = st.sampled_from(['"a"', "null", "true", "NaN", "Infinity", "1e999", "[1]", "{}", "x", "--1", "0x10"])


@st.composite
def malformed_pose_csv(draw) -> bytes:
    kind = draw(st.sampled_from(["empty", "bytes", "header", "count", "token", "separator", "cut", "nested"]))
    if kind == "empty":
        return b""
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=200).filter(lambda b: not b.startswith(HEADER.encode())))
    if kind == "header":
        head = draw(st.text(min_size=1, max_size=40).filter(
            lambda t: t.replace(" ", "").strip().lstrip("\ufeff") != HEADER and len(t.splitlines()) == 1))
        return f"{head}\n{ROW}\n".encode(errors="surrogatepass")
    if kind == "count":
        n = draw(st.integers(0, 40).filter(lambda n: n != 18))
        joints = "[" + ", ".join(["10"] * n) + "]"
        row = f"{NAME}: {joints}: {JOINTS}" if draw(st.booleans()) else f"{NAME}: {JOINTS}: {joints}"
    elif kind == "token":
        values = ["10"] * 18
        values[draw(st.integers(0, 17))] = draw(NON_NUMBERS)
        row = f"{NAME}: [{', '.join(values)}]: {JOINTS}"
    elif kind == "separator":
        sep = draw(st.sampled_from([";", ",", "\t", " | ", " "]))
        row = f"{NAME}{sep} {JOINTS}{sep} {JOINTS}".replace(":", sep)
    elif kind == "cut":
        row = ROW[: draw(st.integers(1, len(ROW) - 1))]
    else:
        row = f"{NAME}: {'[' * draw(st.integers(2000, 5000))}: {JOINTS}"
    good = [f"0001_c1s1_00000{i}_00.jpg: {JOINTS}: {JOINTS}" for i in range(1, draw(st.integers(0, 3)) + 1)]
    rows = good + [row]
    draw(st.randoms()).shuffle(rows)
    return f"{HEADER}\n" + "\n".join(rows) + "\n"


def _as_bytes(content) -> bytes:
    return content if isinstance(content, bytes) else content.encode()


@FAST
@given(content=malformed_pose_csv())
def test_a_malformed_pose_csv_is_one_short_error(content, tmp_path):
    path = tmp_path / "poses.csv"
    path.write_bytes(_as_bytes(content))
    with pytest.raises(InputError) as err:
        read_poses(path)
    _short_error(err.value, path)


@CLI
@given(content=malformed_pose_csv(), as_test=st.booleans())
def test_build_pairs_refuses_a_malformed_pose_csv(content, as_test, cuhk_dir, tmp_path):
    folder = _fresh(tmp_path, "case")
    path = folder / "poses.csv"
    path.write_bytes(_as_bytes(content))
    poses = ["--poses", cuhk_dir / "annotations.csv", "--test-poses", path] if as_test else ["--poses", path]
    _fails_cleanly(_run("build-pairs", cuhk_dir, *poses, "-o", folder / "work"), path, folder, folder / "work")


# Pair CSVs -------------------------------------------------------------------------------------------------------

@st.composite
def malformed_pairs_csv(draw) -> bytes:
    kind = draw(st.sampled_from(["empty", "bytes", "columns", "ragged", "quote"]))
    if kind == "empty":
        return b"" if draw(st.booleans()) else b"\n\n"
    if kind == "bytes":
        return b"\xff\xfe" + draw(st.binary(max_size=100))
    if kind == "columns":
        header = draw(st.lists(st.sampled_from(["src", "dst", "pid", "a", "FROM", "To", "from"]), min_size=1,
                               max_size=4, unique=True).filter(lambda h: not {"from", "to"} <= set(h)))
        return (",".join(header) + "\n" + ",".join(["x"] * len(header)) + "\n").encode()
    if kind == "ragged":
        extra = ",".join(["x"] * draw(st.integers(3, 6)))
        return f"from,to\n{NAME},{NAME}\n{extra}\n".encode()
    return f'from,to\n"{NAME},{NAME}\n'.encode()


@FAST
@given(content=malformed_pairs_csv())
def test_a_malformed_pairs_csv_is_one_short_error(content, tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_pair_file(path)
    _short_error(err.value, path)


@CLI
@given(content=malformed_pairs_csv())
def test_train_and_preview_refuse_a_malformed_pairs_csv(content, cuhk_dir, tmp_path):
    folder = _fresh(tmp_path, "case")
    path = folder / "pairs.csv"
    path.write_bytes(content)
    poses = cuhk_dir / "annotations.csv"
    _fails_cleanly(_run("train", cuhk_dir, "-w", folder, "--recipe", "tiny", "--pairs", path, "--poses", poses,
                        "-o", folder / "run", "--device", "cpu"), path, folder, folder / "run")
    _fails_cleanly(_run("preview", cuhk_dir, "--pairs", path, "--poses", poses, "-o", folder / "p.png"), path,
                   folder, folder / "p.png")


# Manifests -------------------------------------------------------------------------------------------------------

@st.composite
def malformed_manifest(draw) -> bytes:
    kind = draw(st.sampled_from(["empty", "bytes", "columns", "ragged", "quote", "torn", "gone"]))
    if kind == "empty":
        return b""
    if kind == "bytes":
        return b"\xff" + draw(st.binary(max_size=100))
    if kind == "columns":
        header = draw(st.lists(st.sampled_from(["img", "pid", "camid", "src", "image", "pose_from"]), min_size=1,
                               max_size=5, unique=True).filter(lambda h: not {"image", "source"} <= set(h)))
        return (",".join(header) + "\n" + ",".join(["x"] * len(header)) + "\n").encode()
    if kind == "ragged":
        return f"image,pid,source\nimages/a.jpg,0001,{NAME}\n{','.join(['x'] * 6)}\n".encode()
    if kind == "quote":
        return f'image,pid,source\n"images/a.jpg,0001,{NAME}\n'.encode()
    if kind == "torn":  # A header cut by a kill: no whole line at all.
        return b"image,pid,cam"
    return f"image,pid,source\nimages/{draw(st.sampled_from(['gone.jpg', '../x.jpg', '']))},0001,{NAME}\n".encode()


@FAST
@given(content=malformed_manifest())
def test_a_malformed_manifest_is_one_short_error(content, tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_generated(path)
    _short_error(err.value, path)


@CLI
@given(content=malformed_manifest())
def test_export_and_merge_refuse_a_malformed_manifest(content, market_root, tmp_path):
    folder = _fresh(tmp_path, "case")
    path = folder / "gen" / "manifest.csv"
    path.parent.mkdir()
    path.write_bytes(content)
    _fails_cleanly(_run("export", path.parent, "--root", market_root, "-o", folder / "new"), path, folder,
                   folder / "new")
    if content in (b"", b"image,pid,cam") or content.startswith(b"image,pid,source\nimages/"):
        return  # Empty, torn by a kill, or images not on disk: merge joins what is there, as after killed runs.
    _fails_cleanly(_run("merge", path.parent, "-o", folder / "merged.csv"), path, folder, folder / "merged.csv")


# MSMT17 list files -----------------------------------------------------------------------------------------------

MSMT_NAME = "0000_000_01_0303morning_0000_0.jpg"


@st.composite
def malformed_list_line(draw) -> bytes:
    kind = draw(st.sampled_from(["fields", "slash", "label", "absolute", "parent", "bytes"]))
    if kind == "fields":
        return " ".join([f"0000/{MSMT_NAME}"] + ["0"] * draw(st.sampled_from([0, 2, 3]))).encode()
    if kind == "slash":
        return f"{MSMT_NAME} 0".encode()
    if kind == "label":
        return f"0000/{MSMT_NAME} {draw(st.sampled_from(['x', '-1', '1.5', '0x1', '²', 'nan']))}".encode()
    if kind == "absolute":
        return f"/etc/{MSMT_NAME} 0".encode()
    if kind == "parent":
        return f"{draw(st.sampled_from(['../0000', '0000/..', '0000/./x', '0000//x']))}/{MSMT_NAME} 0".encode()
    return b"0000/" + draw(st.binary(min_size=1, max_size=20).filter(_not_utf8)) + b" 0"


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _msmt_root(folder: Path, cuhk_dir: Path) -> Path:
    """A tiny MSMT17 V1 root: person 0000 in train/ and in test/."""
    root = folder / "MSMT17_V1"
    sources = sorted(cuhk_dir.glob("0001_*.jpg"))[:4]
    lines = {"list_train.txt": [], "list_val.txt": [], "list_query.txt": [], "list_gallery.txt": []}
    for i, src in enumerate(sources):
        split, sub = [("list_train.txt", "train"), ("list_train.txt", "train"), ("list_query.txt", "test"),
                      ("list_gallery.txt", "test")][i]
        name = f"0000_{i:03d}_0{1 + i % 2}_0303morning_{i:04d}_0.jpg"
        (root / sub / "0000").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / sub / "0000" / name)
        lines[split].append(f"0000/{name} 0")
    for list_name, rows in lines.items():
        (root / list_name).write_text("".join(f"{row}\n" for row in rows))
    return root


@FAST
@given(line=malformed_list_line(), at=st.integers(0, 2))
def test_a_malformed_msmt17_list_file_is_one_short_error(line, at, tmp_path):
    path = tmp_path / "list_train.txt"
    rows = [f"0000/{MSMT_NAME} 0".encode()] * 2
    rows.insert(at, line)
    path.write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(InputError) as err:
        read_msmt_list(path)
    _short_error(err.value, path)


@CLI
@given(line=malformed_list_line(), list_name=st.sampled_from(["list_train.txt", "list_val.txt", "list_query.txt",
                                                               "list_gallery.txt"]))
def test_commands_refuse_an_msmt17_root_with_a_malformed_list_file(line, list_name, cuhk_dir, tmp_path):
    folder = _fresh(tmp_path, "case")
    root = _msmt_root(folder, cuhk_dir)
    path = root / list_name
    path.write_bytes(path.read_bytes() + line + b"\n")
    poses = cuhk_dir / "annotations.csv"
    _fails_cleanly(_run("build-pairs", root, "--poses", poses, "-o", folder / "work"), path, folder,
                   folder / "work")
    if list_name in ("list_train.txt", "list_val.txt"):  # What export reads and copies.
        gen = folder / "gen"
        gen.mkdir()
        shutil.copy(cuhk_dir / "0001_c1s1_000000_00.jpg", gen / "a.jpg")
        (gen / "manifest.csv").write_text(f"image,pid,source\na.jpg,0000,{MSMT_NAME}\n")
        _fails_cleanly(_run("export", gen, "--root", root, "-o", folder / "new"), path, folder, folder / "new")


# Recipe YAML and --set values ------------------------------------------------------------------------------------

BAD_VALUES = {
    "train.batch_size": ["0", "-1", "x", "1.5", "true", "[", "{a: 1}", ".nan", "''"],
    "train.lr": ["-1", "0", ".nan", "abc", "[1, 2]"],
    "train.rec_steps": ["-5", "1e3", "null"],
    "model.image_size": ["[0, 0]", "[64]", "5", "[64, x]", "[-128, 64]", "[65, 64]"],
    "model.num_levels": ["0", "1000000000", "-3"],
    "model.base_channels": ["0", "2.5"],
    "loss.ref_loss": ["ssim", "1", "[l1]"],
    "loss.alpha": ["1.5", "-0.1", ".nan"],
    "train.beta1": ["1", "2"],
}


@st.composite
def malformed_override(draw) -> str:
    kind = draw(st.sampled_from(["value", "form", "unknown", "yaml"]))
    if kind == "value":
        key = draw(st.sampled_from(sorted(BAD_VALUES)))
        return f"{key}={draw(st.sampled_from(BAD_VALUES[key]))}"
    if kind == "form":
        return draw(st.sampled_from(["train", "train.batch_size", "=1", "batch_size=8", "train=1", ".x=1"]))
    if kind == "unknown":
        return draw(st.sampled_from(["train.nope=1", "nosection.key=1", "model.image_size.h=3", "name.x=1"]))
    return "train.batch_size=" + draw(st.sampled_from(["[", "{", "!!python/object:os.system x", "*a", ": :", '"']))


@st.composite
def malformed_recipe(draw) -> bytes:
    kind = draw(st.sampled_from(["syntax", "not-mapping", "section", "override", "bytes", "deep"]))
    if kind == "syntax":
        return draw(st.sampled_from([b"train: [", b"train:\n  batch_size: 4\n bad: 1", b"a: b: c", b"\t- x",
                                     b"!!python/object/apply:os.system ['true']", b"train: {lr: 1"]))
    if kind == "not-mapping":
        return draw(st.sampled_from([b"- 1\n- 2\n", b"42", b"just text", b"[train]"]))
    if kind == "section":
        return draw(st.sampled_from([b"train: 5\n", b"model: [1, 2]\n", b"nope: {a: 1}\n", b"1: {a: 1}\n",
                                     b"train: {1: 2, lr: x}\n"]))
    if kind == "override":
        key, value = draw(malformed_override().filter(lambda o: "=" in o and "." in o.split("=")[0]
                                                      and o.split("=")[0].count(".") == 1)).split("=", 1)
        section, leaf = key.split(".")
        return f"{section}:\n  {leaf}: {value}\n".encode()
    if kind == "bytes":
        return b"\xff\xfe" + draw(st.binary(max_size=60))
    return b"train: " + b"[" * draw(st.integers(2000, 4000))


@FAST
@given(override=malformed_override())
def test_a_malformed_set_value_is_one_short_error(override):
    """The message names the override (and the recipe it was applied to, when the value is the problem)."""
    with pytest.raises(InputError) as err:
        load_recipe("tiny", [override])
    text = str(err.value)
    assert "\n" not in text and len(text) < MAX_MESSAGE and override in text, text


@FAST
@given(content=malformed_recipe())
def test_a_malformed_recipe_file_is_one_short_error(content, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_recipe(path)
    _short_error(err.value, path)


@CLI
@given(content=malformed_recipe(), override=malformed_override())
def test_train_refuses_a_malformed_recipe_or_set_value(content, override, cuhk_dir, tmp_path):
    folder = _fresh(tmp_path, "case")
    path = folder / "recipe.yaml"
    path.write_bytes(content)
    result = _run("train", cuhk_dir, "-w", folder, "--recipe", path, "-o", folder / "run", "--device", "cpu")
    _fails_cleanly(result, path, folder, folder / "run")
    result = _run("train", cuhk_dir, "-w", folder, "--recipe", "tiny", "--set", override, "-o", folder / "run",
                  "--device", "cpu")
    _fails_cleanly(result, override, folder, folder / "run")  # The override is what the message names.


@FAST
@given(value=st.text(max_size=30))
def test_any_set_value_loads_or_is_one_clean_line(value, cuhk_dir):
    """Fuzz: whatever follows `train.batch_size=` or `model.image_size=`, the dry run prints a recipe or fails
    through click's error path with one line."""
    for key in ("train.batch_size", "model.image_size"):
        result = _run("train", cuhk_dir, "--recipe", "tiny", "--set", f"{key}={value}", "--dry-run")
        if result.exit_code == 0:
            assert "batch_size:" in result.output
        else:
            assert isinstance(result.exception, SystemExit) and result.exit_code in (1, 2), result.exception
            assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1


# Forged and truncated .safetensors --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generator_bytes(checkpoint, tmp_path_factory) -> bytes:
    return export_generator(checkpoint, tmp_path_factory.mktemp("gen") / "g.safetensors").read_bytes()


@st.composite
def forged_safetensors(draw, good: bytes) -> bytes:
    size = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8:8 + size])
    body = good[8 + size:]
    kind = draw(st.sampled_from(["cut", "size", "text", "tensor", "metadata", "config"]))
    if kind == "cut":
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind == "size":
        forged = draw(st.integers(0, 2**64 - 1).filter(lambda n: n != size))
        return struct.pack("<Q", forged) + good[8:]
    if kind == "text":
        text = draw(st.binary(min_size=1, max_size=80))
        return struct.pack("<Q", len(text)) + text + body
    head = json.loads(json.dumps(header))
    names = sorted(k for k in head if k != "__metadata__")
    if kind == "tensor":
        name, field = draw(st.sampled_from(names)), draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        head[name][field] = draw({"dtype": st.sampled_from(["F64", "I8", "XX", "", 5]),
                                  "shape": st.lists(st.integers(-2, 10**12), max_size=5),
                                  "data_offsets": st.lists(st.integers(-5, 10**12), min_size=0, max_size=3)}[field])
        if head[name][field] == header[name][field]:
            head[name]["dtype"] = "XX"
    elif kind == "metadata":
        meta = head["__metadata__"]
        change = draw(st.sampled_from(["format", "drop-config", "drop-all"]))
        if change == "format":
            meta["format"] = draw(st.text(max_size=20).filter(lambda t: t != meta["format"]))
        elif change == "drop-config":
            del meta["model_config"]
        else:
            del head["__metadata__"]
    else:
        config = json.loads(head["__metadata__"]["model_config"])
        change = draw(st.sampled_from(["text", "type", "unknown", "size"]))
        if change == "text":
            head["__metadata__"]["model_config"] = draw(st.text(max_size=30).filter(lambda t: not _is_json_dict(t)))
        else:
            if change == "type":
                config[draw(st.sampled_from(sorted(config)))] = draw(st.sampled_from(["x", None, [1, 2, 3], {}]))
            elif change == "unknown":
                config["no_such_field"] = 1
            else:
                key = draw(st.sampled_from(["num_levels", "base_channels", "ref_channels", "ref_levels"]))
                config[key] = draw(st.integers(-(10**9), 10**9).filter(lambda n, old=config[key]: n != old))
            head["__metadata__"]["model_config"] = json.dumps(config)
    text = json.dumps(head).encode()
    return struct.pack("<Q", len(text)) + text + body


def _is_json_dict(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


@FAST
@given(data=st.data())
def test_a_forged_or_truncated_generator_file_is_one_short_error(data, generator_bytes, tmp_path):
    path = tmp_path / "forged.safetensors"
    path.write_bytes(data.draw(forged_safetensors(generator_bytes)))
    with pytest.raises(InputError) as err:
        load_generator(path)
    _short_error(err.value, path)


@CLI
@given(data=st.data())
def test_generate_refuses_a_forged_generator_file(data, generator_bytes, cuhk_dir, tmp_path):
    folder = _fresh(tmp_path, "case")
    path = folder / "forged.safetensors"
    path.write_bytes(data.draw(forged_safetensors(generator_bytes)))
    result = _run("generate", cuhk_dir, "--per-id", 1, "--checkpoint", path, "--poses", cuhk_dir / "annotations.csv",
                  "-o", folder / "out", "--device", "cpu", "--no-score")
    _fails_cleanly(result, path, folder, folder / "out")


def _one_line(result, code: int = 1) -> str:
    assert result.exit_code == code and isinstance(result.exception, SystemExit), result.output
    last = result.output.splitlines()[-1]  # Progress bars may come before it.
    assert last.startswith("Error: ") and result.output.count("\nError: ") + result.output.startswith("Error: ") == 1
    assert "Traceback" not in result.output
    return last


@pytest.mark.parametrize("command", [["train", "IMAGES", "--recipe", "tiny"], ["generate", "IMAGES", "--per-id", "1"],
                                     ["evaluate", "IMAGES"], ["estimate-poses", "IMAGES"]])
def test_an_unknown_device_is_one_line_in_every_command(command, cuhk_dir, tmp_path):
    args = [str(cuhk_dir) if a == "IMAGES" else a for a in command]
    result = CliRunner().invoke(cli, args + ["-w" if command[0] != "estimate-poses" else "-o", str(tmp_path / "w"),
                                             "--device", "gpu"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.output.splitlines() if line]  # click's usage error: Usage, Try, Error.
    assert len(lines) <= 3 and lines[-1].startswith("Error: Invalid value for '--device': not a device; use auto")
    assert not (tmp_path / "w").exists()


def test_a_path_under_a_regular_file_is_one_line_with_the_io_exit_code(cuhk_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(cli, ["build-pairs", str(cuhk_dir), "--poses", str(cuhk_dir / "annotations.csv"),
                                      "-o", str(blocker / "work")])
    out = _one_line(result, code=74)
    assert str(blocker) in out and ("Not a directory" in out or "File exists" in out)


def test_preview_refuses_pairs_of_another_data_set_and_an_empty_pairs_file(cuhk_dir, tmp_path):
    poses = str(cuhk_dir / "annotations.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("from,to\n")
    other = tmp_path / "other.csv"
    other.write_text("from,to\n9999_c1s1_000000_00.jpg,9999_c1s1_000001_00.jpg\n")
    args = ["preview", str(cuhk_dir), "--poses", poses, "-o", str(tmp_path / "p.png"), "--pairs"]
    assert "lists no pair" in _one_line(CliRunner().invoke(cli, args + [str(empty)]))
    assert "9999_c1s1_000000_00.jpg" in _one_line(CliRunner().invoke(cli, args + [str(other)]))
    assert not (tmp_path / "p.png").exists()


def test_a_pose_config_that_is_not_a_config_is_one_line(cuhk_dir, tmp_path):
    pytest.importorskip("mmpose")
    bogus = tmp_path / "bogus.py"
    bogus.write_text("this is not = a config (\n")
    result = CliRunner().invoke(cli, ["estimate-poses", str(cuhk_dir), "-o", str(tmp_path / "p.csv"),
                                      "--pose-config", str(bogus), "--device", "cpu"])
    assert "not an mmpose model config" in _one_line(result) and str(bogus) in result.output
