"""The package layout: layers import only downwards, commands stay apart, light imports stay light.

docs/architecture.md draws these layers; this test reads every import statement (also those inside
functions) so the drawing cannot drift from the code.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import hrseg

PACKAGE = Path(hrseg.__file__).resolve().parent

#: Lowest first; a module may import its own layer and the ones below.
LAYERS: list[tuple[str, ...]] = [
    (
        "hrseg.colors",
        "hrseg.classes",
        "hrseg.images",
        "hrseg.eval_protocol",
        "hrseg.checkpoint",
        "hrseg.hub",
        "hrseg.modelcard",
    ),
    ("hrseg.models", "hrseg.losses", "hrseg.metrics", "hrseg.viz"),
    ("hrseg.data", "hrseg.inference", "hrseg.export", "hrseg.evaluation"),
    ("hrseg.task", "hrseg.callbacks", "hrseg.checkpoint_io", "hrseg.loggers"),
    ("hrseg.commands",),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int | None:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None


def _library_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py" and p.parent != PACKAGE.parent)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module an import statement of ``path`` names, with its line (also inside functions)."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, node.lineno))
            # ``from hrseg import task`` imports a module, not just the package
            if node.module == "hrseg":
                found += [(f"hrseg.{a.name}", node.lineno) for a in node.names]
    return found


def _hrseg_imports(path: Path) -> set[str]:
    return {module for module, _ in _imports(path) if module.startswith("hrseg")}


def test_every_module_has_a_layer() -> None:
    unplaced = [_module_name(p) for p in _library_modules() if p != PACKAGE / "__init__.py"]
    assert [m for m in unplaced if _layer(m) is None] == []


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for path in _library_modules():
        module = _module_name(path)
        own = _layer(module)
        if own is None:  # the package root only re-exports lazily
            continue
        for imported in _hrseg_imports(path):
            level = _layer(imported)
            if level is not None and level > own:
                upward.append(f"{module} -> {imported}")
    assert upward == []


def test_commands_live_apart_from_the_library() -> None:
    with_main = []
    for path in _library_modules():
        module = _module_name(path)
        if module.startswith("hrseg.commands"):
            continue
        tree = ast.parse(path.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        if "main" in names or "__main__" in path.read_text():
            with_main.append(module)
    assert with_main == []


@pytest.mark.parametrize(
    "statement",
    [
        "import hrseg.colors",
        "from hrseg.inference import Segmenter, infer, prepare_for_inference, predict_folder",
        "import hrseg; hrseg.Segmenter",
        "import hrseg.checkpoint, hrseg.images",
        # hrseg predict's own path: listing a folder must not pull in the DataModules (4 s of imports)
        "import hrseg.commands.predict, hrseg.inference.writer as w, tempfile, PIL.Image as I; "
        "d = tempfile.mkdtemp(); I.new('RGB', (4, 4)).save(d + '/a.png'); assert len(w._resolve_inputs(d))",
    ],
)
def test_inference_and_colours_import_without_training_dependencies(statement: str) -> None:
    code = (
        f"import sys; {statement}; "
        "heavy = sorted(m for m in ('albumentations', 'cv2', 'lightning') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "", f"{statement} imported {out.stdout.strip()}"


def test_openvino_is_imported_only_through_import_openvino() -> None:
    """A bare ``import openvino`` elsewhere would send OpenVINO's usage telemetry (see import_openvino)."""
    offenders = [
        f"{_module_name(path)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for module, line in _imports(path)
        if module == "openvino" or module.startswith("openvino.")
    ]
    assert offenders and all(o.startswith("hrseg.checkpoint:") for o in offenders), offenders
