"""Files built to hurt: checkpoints that carry code, config bombs, metadata that asks for absurd sizes.

Each is refused with one line that says what the file is, before anything runs or any large allocation;
a few cases run through real ``python -m hrseg`` processes, the rest through :func:`hrseg.commands.main`.
"""

from __future__ import annotations

import builtins
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from test_cli_errors import _check_one_line

from hrseg.checkpoint import CheckpointError, read_model_checkpoint, read_state_dict, refused_globals
from hrseg.commands import main
from hrseg.commands.configs import MAX_CONFIG_NODES, check_config_file, list_configs, require_config
from hrseg.deploy import Segmenter
from hrseg.inference import load_checkpoint
from hrseg.models.hrnet import get_spec

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


class Shell:
    """Pickles as a call of ``os.system`` (``posix.system`` on Linux)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class Eval:
    """Pickles as a call of ``builtins.eval``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.eval, (self.source,))


class Gadget:
    """A harmless class of the user's own: weights-only loading refuses it all the same."""

    def __init__(self) -> None:
        self.value = 1


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, Any]:
    """The demo checkpoint with one extra object of each kind, and the same file cut short three ways."""
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "code-ran"
    checkpoint = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    payloads = {  # (object, the global it pickles as, pickle protocol: 2 writes GLOBAL, 4 STACK_GLOBAL)
        "system": (Shell(f"touch {marker}"), f"{os.system.__module__}.system", 2),
        "system_protocol4": (Shell(f"touch {marker}"), f"{os.system.__module__}.system", 4),
        "eval": (Eval(f"open({str(marker)!r}, 'w')"), "builtins.eval", 2),
        "custom": (Gadget(), f"{Gadget.__module__}.Gadget", 2),
    }
    files: dict[str, Any] = {"root": root, "marker": marker, "names": {}}
    for name, (obj, global_name, protocol) in payloads.items():
        torch.save({**checkpoint, "extra": obj}, root / f"{name}.ckpt", pickle_protocol=protocol)
        files[name] = root / f"{name}.ckpt"
        files["names"][name] = global_name
    data = tiny_checkpoint.read_bytes()
    for fraction in (0.05, 0.5, 0.999):
        cut = root / f"cut{fraction}.ckpt"
        cut.write_bytes(data[: int(len(data) * fraction)])
        files[f"cut{fraction}"] = cut
    images = root / "images"
    images.mkdir()
    Image.new("RGB", (64, 48)).save(images / "street.png")
    files["images"] = images
    return files


LOADERS = {
    "read_state_dict": lambda p: read_state_dict(p),
    "read_model_checkpoint": lambda p: read_model_checkpoint(p),
    "load_checkpoint": lambda p: load_checkpoint(p),
    "Segmenter.from_checkpoint": lambda p: Segmenter.from_checkpoint(p),
}


@pytest.mark.parametrize("payload", ["system", "system_protocol4", "eval", "custom"])
def test_a_checkpoint_with_objects_is_refused_by_name_and_runs_nothing(hostile, payload):
    """Every loader names the refused global, says why, and how to make a safe file; no code runs."""
    for loader_name, load in LOADERS.items():
        with pytest.raises(CheckpointError) as info:
            load(hostile[payload])
        message = str(info.value)
        assert message.startswith(f"refused checkpoint {hostile[payload]}"), (loader_name, message)
        assert f"({hostile['names'][payload]})" in message, message
        assert "would run code" in message and "--format safetensors --trusted" in message, message
        assert "corrupt" not in message and "\n" not in message, message
    assert refused_globals(hostile[payload]) == [hostile["names"][payload]]
    assert not hostile["marker"].exists()


def test_a_trusted_file_with_a_harmless_object_still_loads(hostile):
    """The way out the message offers: trusted loading reads the file (its own class is importable here)."""
    obj, _ = read_state_dict(hostile["custom"], trusted=True)
    assert isinstance(obj["extra"], Gadget) and "state_dict" in obj


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.999])
def test_a_truncated_checkpoint_is_named_damaged_not_refused(hostile, fraction, tiny_checkpoint):
    path = hostile[f"cut{fraction}"]
    assert refused_globals(path) == [] and refused_globals(tiny_checkpoint) == []
    for load in LOADERS.values():
        with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
            load(path)
        assert "refused" not in str(info.value)


def test_commands_refuse_the_checkpoint_in_one_line(hostile, capsys, monkeypatch):
    """predict (a real process), export, validate, serve: exit 1, one line naming the global, no code run."""
    monkeypatch.chdir(hostile["root"])
    out = hostile["root"] / "predictions"
    argv = ["predict", "--ckpt_path", str(hostile["system"]), "--input", str(hostile["images"])]
    proc = subprocess.run(
        [sys.executable, "-m", "hrseg", *argv, "--output", str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    _check_one_line(proc.stderr, "hrseg predict", [str(hostile["system"]), "posix.system", "would run code"])
    for argv in (
        ["export", "--ckpt_path", str(hostile["eval"]), "--format", "safetensors"],
        ["validate", "--config", "demo", "--ckpt_path", str(hostile["custom"])],
    ):
        assert main(argv) == 1
        _check_one_line(capsys.readouterr().err, f"hrseg {argv[0]}", ["refused checkpoint", "would run code"])
    assert main(["serve", "--ckpt_path", str(hostile["system"])]) == 1  # before any server process starts
    err = capsys.readouterr().err.strip()
    assert err.startswith("hrseg serve: refused checkpoint") and "\n" not in err, err
    assert not hostile["marker"].exists() and not out.exists()
    assert not list(hostile["root"].glob("*.safetensors"))


# --- configs ----------------------------------------------------------------------------------------------


def _alias_bomb(levels: int) -> str:
    """The "billion laughs": each level a list of nine aliases of the one before (9**levels values)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(scope="module")
def bad_configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("configs")
    marker = root / "code-ran"
    texts = {
        "bomb": _alias_bomb(9),  # a few hundred bytes; 387 million values expanded
        "shallow_bomb": _alias_bomb(6),  # 531441 values: still far above any config
        "deep": "model: " + "[" * 1000 + "]" * 1000 + "\n",
        "python": f"seed_everything: !!python/object/apply:os.system ['touch {marker}']\n",
        "endless": "trainer: &t\n  callbacks: [*t]\n",
        "huge": "# padding\n" * 200_000,
        "json_deep": json.dumps({"model": _nested(100)}),
    }
    files = {name: root / f"{name}.{'json' if name.startswith('json') else 'yaml'}" for name in texts}
    for name, text in texts.items():
        files[name].write_text(text)
    files["marker"] = marker
    return files


CONFIG_CASES = {
    "bomb": ["alias bomb", f"{MAX_CONFIG_NODES:,}"],
    "shallow_bomb": ["alias bomb"],
    "deep": ["nests deeper than"],
    "python": ["!!python/object/apply:os.system", "would run code"],
    "endless": ["contains it"],
    "huge": ["MiB", "at most 1 MiB"],
    "json_deep": ["nests deeper than"],
}


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_a_hostile_config_is_refused_in_one_line_within_a_second(bad_configs, name, capsys):
    start = time.perf_counter()
    assert main(["fit", "--config", str(bad_configs[name])]) == 2
    assert time.perf_counter() - start < 1.0
    _check_one_line(capsys.readouterr().err, "hrseg fit", [str(bad_configs[name]), *CONFIG_CASES[name]])
    assert not bad_configs["marker"].exists()


def test_every_config_reader_checks_the_file(bad_configs, tmp_path, capsys):
    """``predict --config`` and ``data check -c`` go through the same check as the trainer commands."""
    bomb = str(bad_configs["bomb"])
    for argv in (
        ["predict", "--config", bomb, "--ckpt_path", str(tmp_path / "x.ckpt")],
        ["data", "check", "-c", bomb],
        ["validate", f"--config={bomb}"],
    ):
        assert main(argv) == 2
        _check_one_line(capsys.readouterr().err, f"hrseg {argv[0]}", ["alias bomb"])


def test_shipped_configs_and_plain_anchors_pass_the_limits(tmp_path):
    for name in list_configs():
        check_config_file(require_config(name))
    plain = tmp_path / "anchors.yaml"  # anchors, merge keys and dates are plain YAML and stay allowed
    plain.write_text("base: &b {lr: 0.01, date: 2024-01-01}\nfit:\n  <<: *b\n  lr: 0.1\nother: *b\n")
    check_config_file(plain)


def test_a_config_bomb_stops_a_real_process_at_once(bad_configs):
    for name, words in (("bomb", ["alias bomb"]), ("python", ["would run code"])):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "hrseg", "fit", "--config", str(bad_configs[name])],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert time.perf_counter() - start < 10  # the interpreter's start (no torch); the check takes ms
        assert proc.returncode == 2, proc.stderr
        _check_one_line(proc.stderr, "hrseg fit", words)
    assert not bad_configs["marker"].exists()


# --- sizes that weight files claim -----------------------------------------------------------------------


def _bundle(folder: Path, meta: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def _absurd(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variants of a real config.json, each asking for something absurd."""
    spec = get_spec("w18_small_v1").to_dict()
    wide_stem = {**spec, "stem_width": 1_000_000}
    wide_branch = json.loads(json.dumps(spec))
    wide_branch["stage2"]["num_channels"] = [18, 10**9]
    labels = dict(meta["labels"])
    return {
        "classes": {**meta, "labels": {**labels, "class_names": [f"c{i}" for i in range(70_000)]}},
        "ignore_index": {**meta, "labels": {**labels, "ignore_index": 2**40}},
        "stem_width": {**meta, "model_options": {**meta["model_options"], "spec": wide_stem}},
        "branch_width": {**meta, "model_options": {**meta["model_options"], "spec": wide_branch}},
        "wider_model": {**meta, "model": "hrnetv2_w64"},
        "window": {**meta, "eval_protocol": {"mode": "slide", "window": [10**9, 10**9]}},
        "scales": {**meta, "eval_protocol": {"mode": "whole", "scales": [1.0, 10_000.0]}},
    }


SIZE_WORDS = {
    "classes": ["70,000 classes", "65,536"],
    "ignore_index": ["ignore_index", "65535"],
    "stem_width": ["hrnetv2_w18_small_v1", "do not fit", "conv1.weight"],
    "branch_width": ["num_channels", "8192"],
    "wider_model": ["hrnetv2_w64", "do not fit"],
    "window": ["window", "65535"],
    "scales": ["scales", "10000.0"],
}


@pytest.fixture(scope="module")
def absurd_bundles(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("absurd")
    meta, state = read_model_checkpoint(tiny_checkpoint)
    return {name: _bundle(root / name, data, state) for name, data in _absurd(meta.to_dict()).items()}


@pytest.mark.parametrize("name", list(SIZE_WORDS))
def test_absurd_metadata_is_refused_before_the_model_is_allocated(absurd_bundles, name, capsys):
    """A hub folder asking for 70000 classes, a billion-channel branch, a giant window: one line, at once."""
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        Segmenter.from_checkpoint(absurd_bundles[name])
    assert time.perf_counter() - start < 10  # no W64 (or terabyte) network was built to find out
    assert "\n" not in str(info.value)
    for word in SIZE_WORDS[name]:
        assert word in str(info.value), str(info.value)
    images = absurd_bundles[name].parent / f"{name}-images"
    images.mkdir()
    Image.new("RGB", (64, 48)).save(images / "street.png")
    argv = ["predict", "--ckpt_path", str(absurd_bundles[name]), "--input", str(images)]
    argv += ["--output", str(images.parent / f"{name}-out")]
    assert main(argv) == 1
    _check_one_line(capsys.readouterr().err, "hrseg predict", [str(absurd_bundles[name])])


def test_a_lightning_checkpoint_with_absurd_hyper_parameters_is_refused(tiny_checkpoint, tmp_path, capsys):
    """``validate --ckpt_path``: a checkpoint's metadata must fit its weights, checked before Lightning."""
    checkpoint = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    spec = get_spec("w18_small_v1").to_dict()
    hparams = dict(checkpoint["hyper_parameters"])
    hparams["model_options"] = {**(hparams.get("model_options") or {}), "spec": {**spec, "stem_width": 10**6}}
    path = tmp_path / "wide.ckpt"
    torch.save({**checkpoint, "hyper_parameters": hparams}, path)
    assert main(["validate", "--config", "demo", "--ckpt_path", str(path)]) == 1
    _check_one_line(capsys.readouterr().err, "hrseg validate", [str(path), "do not fit"])


def test_a_safetensors_header_claiming_a_terabyte_is_refused(tmp_path, capsys):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 2**42]}}).encode()
    claims = {
        "tensor": struct.pack("<Q", len(header)) + header + bytes(64),  # a 4 TiB tensor in a tiny file
        "header": struct.pack("<Q", 2**40) + b"{}",  # a 1 TiB header
    }
    for name, data in claims.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        argv = [
            "predict",
            "--ckpt_path",
            str(path),
            "--input",
            str(tmp_path),
            "--output",
            str(tmp_path / "o"),
        ]
        assert main(argv) == 1
        _check_one_line(capsys.readouterr().err, "hrseg predict", [str(path), "safetensors"])


def test_absurd_metadata_in_a_real_process(absurd_bundles, tmp_path):
    """``python -m hrseg predict`` of a folder asking for a million-channel stem: exit 1, one line."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 48)).save(images / "street.png")
    out = tmp_path / "out"
    argv = ["predict", "--ckpt_path", str(absurd_bundles["stem_width"]), "--input", str(images)]
    proc = subprocess.run(
        [sys.executable, "-m", "hrseg", *argv, "--output", str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    _check_one_line(proc.stderr, "hrseg predict", [str(absurd_bundles["stem_width"]), "do not fit"])
    assert not out.exists()
