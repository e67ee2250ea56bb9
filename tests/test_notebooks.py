"""The example notebooks execute end to end (with tiny settings), so they cannot rot."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    monkeypatch.setenv("HRSEG_NB_FAST", "1")
    monkeypatch.setenv("HRSEG_NB_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The kernel is another process: give it this worker's share of the cores, not all of them.
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or "".join(str(v) for v in out.get("data", {}).values()))
    return "\n".join(parts)


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_inference_and_export.ipynb"])
def test_notebooks_are_stored_executed_from_the_generator(name: str) -> None:
    """Stored as ``make notebooks`` writes them: the generator's cells, every one run, figures included."""
    stored = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(stored)
    generated = _generator().build(name)
    assert [c.source for c in stored.cells] == [c.source for c in generated.cells], "run `make notebooks`"
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "a cell was not executed"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure in the stored outputs"
    assert "SMALL=True" in _text(stored)  # executed with the small settings, not the tests' tiny ones


def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = _run("01_quickstart.ipynb", tmp_path, monkeypatch)
    text = _text(nb)
    assert "checkpoint:" in text and "mIoU" in text
    assert any(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", []))


def test_inference_and_export_notebook_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path
) -> None:
    nb = _run("02_inference_and_export.ipynb", tmp_path, monkeypatch, HRSEG_NB_CKPT=str(tiny_checkpoint))
    text = _text(nb)
    assert "max |onnx - eager|" in text and "ONNX Runtime" in text
    assert (tmp_path / "work" / "model.onnx").is_file()
    assert os.environ["HRSEG_NB_FAST"] == "1"
