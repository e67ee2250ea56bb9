"""The example notebooks execute end to end (with tiny settings), so they cannot rot."""

from __future__ import annotations

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


def test_notebooks_are_committed_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


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
