"""Checkpoints and shared generators: nothing in a file from someone else ever runs."""

import random

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from reid_augment.cli import cli
from reid_augment.config import GenerateConfig
from reid_augment.errors import InputError
from reid_augment.generate import generate
from reid_augment.images import load_rgb
from reid_augment.checkpoints import CHECKPOINT_FORMAT, load_checkpoint, rng_state, set_rng_state
from reid_augment.weights import export_generator, load_generator, read_metadata


class _Payload:
    """Unpickling this creates the marker file: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(path, marker) -> None:
    torch.save({"format": CHECKPOINT_FORMAT, "step": 1, "payload": _Payload(marker)}, path)


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _refused(result, marker) -> None:
    # click's error path exits with SystemExit(1); an uncaught error would be result.exception itself.
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "refused" in result.output and "nothing in it was run" in result.output
    assert "it asks for io.open" in result.output  # The blocked global, named.
    assert len(result.output.strip().splitlines()) == 1
    assert not marker.exists()


def test_crafted_checkpoint_is_refused_by_generate_evaluate_and_train(cuhk_dir, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    _evil(evil, marker)
    annotations = cuhk_dir / "annotations.csv"
    _refused(_run("generate", cuhk_dir, "--per-id", 1, "--checkpoint", evil, "--poses", annotations,
                  "-o", tmp_path / "gen", "--device", "cpu"), marker)
    work = tmp_path / "work"
    assert _run("build-pairs", cuhk_dir, "--poses", annotations, "--test-ids", 2, "-o", work).exit_code == 0
    _refused(_run("evaluate", cuhk_dir, "-w", work, "--checkpoint", evil, "--device", "cpu"), marker)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    _evil(run / "checkpoints" / "latest.pt", marker)
    _refused(_run("train", cuhk_dir, "-w", work, "--recipe", "tiny", "-o", run, "--device", "cpu"), marker)


def test_refusal_names_the_blocked_global_in_either_of_torchs_wordings(tmp_path):
    import os

    class System:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"format": CHECKPOINT_FORMAT, "payload": System()}, tmp_path / "system.pt")
    with pytest.raises(InputError, match=r"refused.*\(it asks for posix\.system\); nothing in it was run"):
        load_checkpoint(tmp_path / "system.pt")


def test_every_format_1_file_gets_the_convert_hint(checkpoint, cuhk_dir, tmp_path):
    """With numpy RNG states (refused by weights_only) or without (it loads, but is format 1 all the same)."""
    state = torch.load(checkpoint, weights_only=True)
    plain = tmp_path / "plain.pt"
    torch.save({**state, "format": 1}, plain)
    with_numpy = tmp_path / "numpy.pt"
    torch.save({**state, "format": 1, "rng": {"numpy": np.random.get_state()}}, with_numpy)
    legacy = tmp_path / "legacy.pt"
    torch.save({**state, "format": 1, "rng": {"numpy": np.random.get_state()}}, legacy,
               _use_new_zipfile_serialization=False)
    for path in (plain, with_numpy, legacy):
        with pytest.raises(InputError, match=rf"format 1 .*convert-checkpoint {path} NEW.pt --trust"):
            load_checkpoint(path)
    result = _run("generate", cuhk_dir, "--per-id", 1, "--checkpoint", plain, "-o", tmp_path / "g")
    assert result.exit_code == 1 and "--trust" in result.output, result.output


def test_rng_states_round_trip_as_plain_data(tmp_path):
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    np.random.standard_normal()  # A cached gaussian in numpy's state.
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(), torch.rand(1).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.standard_normal(), torch.rand(1).item()) == expected


def test_format_1_checkpoint_is_refused_then_converted_on_trust(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)
    state.update(format=1, rng={"python": random.getstate(), "numpy": np.random.get_state(),
                                "torch": torch.get_rng_state()})
    old = tmp_path / "old.pt"
    torch.save(state, old)
    with pytest.raises(InputError, match=r"format 1 .* reid-augment convert-checkpoint .* --trust"):
        load_checkpoint(old)
    result = _run("convert-checkpoint", old, tmp_path / "new.pt")
    assert result.exit_code == 1 and "--trust" in result.output and not (tmp_path / "new.pt").exists()
    result = _run("convert-checkpoint", old, tmp_path / "new.pt", "--trust")
    assert result.exit_code == 0, result.output
    new = load_checkpoint(tmp_path / "new.pt")
    assert new["format"] == CHECKPOINT_FORMAT and new["step"] == 7
    set_rng_state(new["rng"])  # The converted RNG states are usable.
    for name, tensor in state["rec"].items():
        assert torch.equal(tensor, new["rec"][name])


def test_pt_and_safetensors_give_identical_images(cuhk_dir, checkpoint, tmp_path):
    shared = tmp_path / "gen.safetensors"
    result = _run("export-generator", checkpoint, "-o", shared)
    assert result.exit_code == 0, result.output
    meta = read_metadata(shared)
    assert meta["step"] == "7" and meta["version"] and "image_size" in meta["model_config"]
    cfg = GenerateConfig(per_id=2, num_workers=0)
    outs = [generate(cuhk_dir, ckpt, cuhk_dir / "annotations.csv", tmp_path / name, cfg, device="cpu", progress=False)
            for name, ckpt in (("pt", checkpoint), ("st", shared))]
    a, b = (pd.read_csv(o.manifest) for o in outs)
    assert len(a) == 24 and list(a["image"]) == list(b["image"]) and b["step"].eq(7).all()
    for rel in a["image"]:
        assert np.array_equal(load_rgb(tmp_path / "pt" / rel), load_rgb(tmp_path / "st" / rel))


def test_bf16_generator_is_half_the_size_and_close(checkpoint, tmp_path):
    full = export_generator(checkpoint, tmp_path / "f32.safetensors")
    half = export_generator(checkpoint, tmp_path / "bf16.safetensors", bf16=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size and read_metadata(half)["dtype"] == "bfloat16"
    assert full.summary() == f"Wrote {tmp_path / 'f32.safetensors'} ({full.stat().st_size / 2**20:.1f} MiB)."
    assert half.summary().endswith(" MiB, bf16).")
    (m32, _), (m16, _) = load_generator(full), load_generator(half)
    torch.manual_seed(0)
    x, maps = torch.rand(2, 3, 64, 32) * 2 - 1, torch.rand(2, 18, 64, 32)
    with torch.no_grad():
        assert (m32(x, maps, maps)[1] - m16(x, maps, maps)[1]).abs().max() < 0.1


def test_forged_generator_files_are_one_clear_error(checkpoint, tmp_path):
    """A header that lies about its tensors, a truncated file, a config the weights do not fit or no model can
    have: each an InputError naming the file, before any memory is asked for."""
    import json
    import struct

    good = export_generator(checkpoint, tmp_path / "good.safetensors").read_bytes()
    size = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8:8 + size])

    def forged(name, change):
        head = json.loads(json.dumps(header))
        change(head)
        text = json.dumps(head).encode()
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(struct.pack("<Q", len(text)) + text + good[8 + size:])
        return path

    first = next(k for k in header if k != "__metadata__")
    cases = {
        tmp_path / "cut.safetensors": "not a safetensors file",
        forged("offsets", lambda h: h[first].update(data_offsets=[0, 10**9])): "not a safetensors file",
        forged("shape", lambda h: h[first].update(shape=[10**6])): "not a safetensors file",
        forged("config", lambda h: h["__metadata__"].update(model_config="{not json")): "no readable model_config",
        forged("levels", lambda h: h["__metadata__"].update(
            model_config=h["__metadata__"]["model_config"].replace('"base_channels": 8', '"base_channels": 1000000'))):
            "weights do not fit its model_config",
        forged("nomodel", lambda h: h["__metadata__"].update(
            model_config=h["__metadata__"]["model_config"].replace('"num_levels": 3', '"num_levels": -2'))):
            "model.num_levels must be >= 1",
    }
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 2])
    for path, problem in cases.items():
        with pytest.raises(InputError, match=rf"{path.name}: .*({problem})"):
            load_generator(path)


def test_not_a_generator_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(InputError, match="bad.safetensors"):
        load_generator(bad)
    with pytest.raises(InputError, match="no such"):
        load_generator(tmp_path / "missing.safetensors")


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_one_clear_error(checkpoint, tmp_path):
    state = load_checkpoint(checkpoint)
    state["model_config"] = {**state["model_config"], "base_channels": state["model_config"]["base_channels"] * 2}
    torch.save(state, tmp_path / "grown.pt")
    with pytest.raises(InputError, match="grown.pt: weights do not fit its model_config"):
        load_generator(tmp_path / "grown.pt")


def test_a_generator_file_must_be_named_as_it_is_read(checkpoint, tmp_path):
    from reid_augment.errors import InputError
    from reid_augment.weights import export_generator

    with pytest.raises(InputError, match=r"x.pt: a generator file's name must end in .safetensors"):
        export_generator(checkpoint, tmp_path / "x.pt")  # From Python too, not only from the CLI.
    assert not (tmp_path / "x.pt").exists()
