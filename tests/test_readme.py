"""Every code block of the README runs, in order, in one scratch folder: a newcomer can follow it as written.

What runs, and the documented substitutions that keep it small and offline:

- ``bash`` blocks run line by line; ``hrseg ...`` runs through :func:`hrseg.commands.main` in this process
  (one start-up for all of them), a leading ``VAR=value`` sets that variable for the command;
- ``hrseg fit|validate|test`` get small sizes appended (:data:`TINY`: a step or two on a few tiny images,
  one device, no pretrained download; the GPU recipes train W18-Small-v1 instead of their model), so they
  check what the line does rather than train for real;
- ``/data/cityscapes`` is a generated Cityscapes tree in the real layout (``hrseg data synth``);
- ``make demo`` / ``make test`` run as ``make -n`` in the checkout (their recipes must be the commands the
  README describes; running them would build a virtual environment);
- ``pip install`` lines are checked against ``pyproject.toml`` and the Makefile's torch pins, not run (no
  network in tests);
- ``python`` blocks run in the same folder after the blocks above them;
- blocks after ``<!-- readme-test: released-weights -->`` (released checkpoint to predictions) run in
  :func:`test_released_weights_blocks`, on a state dict in the official layout built by the test;
- blocks after ``<!-- readme-test: serve -->`` run in :func:`test_serving_blocks`: ``hrseg serve`` starts
  in the background on a free loopback port (``best.ckpt`` is the suite's tiny checkpoint), ``curl`` lines
  and the Python client run against it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

import hrseg.commands.lightning  # noqa: F401 - imported at collection: Lightning logs to the real stderr
from hrseg.commands import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = "<!-- readme-test: released-weights -->"
SERVE_MARKER = "<!-- readme-test: serve -->"

TRAINER = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.sync_batchnorm=false",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
#: appended to `hrseg fit|validate|test` lines, by the data they train on
TINY = {
    "demo": [
        *TRAINER,
        "--trainer.max_epochs=1",
        "--data.init_args.num_train=4",
        "--data.init_args.num_val=2",
        "--data.init_args.image_size=[32, 64]",
        "--data.init_args.batch_size=2",
        "--data.init_args.eval_batch_size=2",
    ],
    "folder": [
        *TRAINER,
        "--trainer.max_epochs=1",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ],
    "recipe": [
        *TRAINER,
        "--trainer.max_steps=1",
        "--model.weights=null",
        "--model.model=hrnetv2_w18_small_v1",
        "--data.init_args.crop_size=[32, 64]",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
    ],
}


def blocks(marker: str | None = None) -> list[tuple[str, str, bool]]:
    """The README's ``bash`` / ``python`` blocks in order: ``(language, code, released_weights)``.

    With ``marker``, only the blocks after that marker; without, the serving blocks are left out (they run in
    :func:`test_serving_blocks`).
    """
    found = []
    for match in re.finditer(
        r"(<!-- readme-test: [\w-]+ -->\n)?```(bash|python)\n(.*?)```", README.read_text(), re.S
    ):
        tag = match.group(1) or ""
        if marker is not None and marker not in tag:
            continue
        if marker is None and SERVE_MARKER in tag:
            continue
        found.append((match.group(2), match.group(3), MARKER in tag))
    return found


def _pins() -> str:
    return (REPO / "Makefile").read_text()


def _check_pip(args: list[str]) -> None:
    """A ``pip install`` line: the torch pair is the Makefile's, extras exist in pyproject.toml."""
    pyproject = (REPO / "pyproject.toml").read_text()
    for arg in args[2:]:
        if arg.startswith(("torch==", "torchvision==")):
            assert arg in _pins(), f"{arg} is not the Makefile's pin"
        elif arg.startswith("."):
            for extra in re.findall(r"\[(.*?)\]", arg):
                for name in extra.split(","):
                    assert re.search(rf"^{name} = \[", pyproject, re.M), (
                        f"extra {name!r} not in pyproject.toml"
                    )
        elif not arg.startswith("-"):
            raise AssertionError(f"pip install {arg}: not a package this project pins")


def _tiny(argv: list[str]) -> list[str]:
    if argv[0] not in ("fit", "validate", "test"):
        return argv
    if "FolderDataModule" in argv:
        return [*argv, *TINY["folder"]]
    config = argv[argv.index("--config") + 1]
    return [*argv, *TINY["demo" if config.startswith("demo") else "recipe"]]


def run_bash(code: str, scratch: Path, datasets: Path) -> None:
    for line in code.splitlines():
        line = line.replace("/data/", f"{datasets}/")
        words = shlex.split(line, comments=True)
        if not words:
            continue
        env = {}
        while "=" in words[0] and not words[0].startswith("-"):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        if words[0] == "make":
            out = subprocess.run(
                ["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True, check=True
            )
            expected = {"demo": "hrseg fit --config demo", "test": "pytest"}[words[1]]
            assert expected in out.stdout, out.stdout
            continue
        if words[0] == "pip":
            _check_pip(words)
            continue
        assert words[0] == "hrseg", f"README runs {words[0]!r}: add a rule for it to this test"
        with _environ(env):
            try:
                status = main(_tiny(words[1:]))
            except SystemExit as exc:  # --print_config and argparse exit
                status = exc.code or 0
        assert status == 0, f"README line failed ({status}): {line}"


@contextlib.contextmanager
def _environ(env: dict[str, str]):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    common = ["--num", "2", "--num-val", "2", "--size", "64x128", "--no-progress"]
    assert (
        main(["data", "synth", "--layout", "cityscapes", "--output", str(root / "cityscapes"), *common]) == 0
    )
    return root


def test_readme_blocks_are_found():
    found = blocks()
    assert sum(1 for lang, _, _ in found if lang == "bash") >= 4
    assert sum(1 for _, _, released in found if released) == 2
    assert all("--ckpt " not in code and " --out " not in code for _, code, _ in found)  # one vocabulary


@pytest.mark.slow  # a dozen hrseg commands, two ONNX exports and four tiny fits
def test_readme_blocks_run(tmp_path, datasets, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ran = 0
    for language, code, released in blocks():
        if released:
            continue
        if language == "bash":
            run_bash(code, tmp_path, datasets)
        else:
            exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
        ran += 1
    assert ran >= 6
    assert (tmp_path / "figures" / "predictions.png").is_file()
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "my-model" / "config.json").is_file()
    assert any((tmp_path / "predictions").glob("*_overlay.png"))
    assert any((tmp_path / "runs" / "mine").rglob("last.ckpt"))


@pytest.mark.slow  # builds and runs HRNet-OCR W48 (70 M parameters) on the CPU
def test_released_weights_blocks(tmp_path, monkeypatch, datasets):
    """The README's released-checkpoint commands on a state dict laid out as the official HRNet-OCR file."""
    from PIL import Image

    import hrseg

    monkeypatch.chdir(tmp_path)
    model = hrseg.build_model("hrnetv2_w48_ocr", num_classes=19, align_corners=True)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["loss.criterion.weight"] = torch.ones(19)  # the official training checkpoints carry their loss
    torch.save(state, tmp_path / "hrnet_ocr_cs_8162_torch11.pth")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (128, 64), (128, 64, 128)).save(tmp_path / "imgs" / "street.png")
    released = [(lang, code) for lang, code, flag in blocks() if flag]
    for language, code in released:
        if language == "bash":
            run_bash(code, tmp_path, datasets)
        else:
            exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert any((tmp_path / "out").glob("street*"))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow  # starts a LitServe server (a few seconds) and sends it the README's requests
def test_serving_blocks(tmp_path, tiny_checkpoint):
    """The README's serving section as written: the server, the curl lines and the Python client."""
    import sys
    import time
    import urllib.request

    import numpy as np
    from PIL import Image

    from hrseg.data.scenes import generate_scene

    found = blocks(SERVE_MARKER)
    assert [lang for lang, _, _ in found] == ["bash", "python"]
    port = _free_port()
    Image.fromarray(generate_scene(1, size=(64, 96))[0]).save(tmp_path / "street.png")
    server = None
    lines = [line for line in found[0][1].splitlines() if line.strip() and not line.startswith("#")]
    try:
        for line in lines:
            line = line.replace("best.ckpt", str(tiny_checkpoint)).replace(":8000", f":{port}")
            words = [w for w in shlex.split(line.replace("--port 8000", f"--port {port}"), comments=True)]
            if words[0] == "pip":
                _check_pip(words)
            elif words[:2] == ["hrseg", "serve"]:
                assert words[-1] == "&", "the README starts the server in the background"
                args = [sys.executable, "-m", "hrseg", *words[1:-1], "--device", "cpu"]
                server = subprocess.Popen(args, cwd=tmp_path)
                deadline = time.monotonic() + 120
                while True:
                    assert server.poll() is None, "hrseg serve exited"
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                        break
                    except OSError:
                        assert time.monotonic() < deadline, "hrseg serve did not answer /health"
                        time.sleep(0.5)
            else:
                assert words[0] == "curl", f"README runs {words[0]!r} in the serving section"
                subprocess.run(words, cwd=tmp_path, check=True, timeout=60)
        labels = np.asarray(Image.open(tmp_path / "street_trainIds.png"))
        assert labels.shape == (64, 96) and labels.max() < 19
        code = found[1][1].replace(":8000", f":{port}")
        with contextlib.chdir(tmp_path):
            exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
        assert Image.open(tmp_path / "street_overlay.png").size == (96, 64)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
