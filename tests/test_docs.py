"""docs/architecture.md's layout names every module of the package, so the picture cannot silently drift."""

from __future__ import annotations

import re
from pathlib import Path

import hrseg

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(hrseg.__file__).resolve().parent


def _layout_section() -> str:
    text = (REPO / "docs" / "architecture.md").read_text()
    match = re.search(r"## Layout\n\n```\n(.*?)```", text, re.S)
    assert match, "docs/architecture.md has no Layout block"
    return match.group(1)


def test_architecture_layout_names_every_module() -> None:
    layout = _layout_section()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        rel = path.relative_to(PACKAGE.parent)
        folder = f"{rel.parent.as_posix()}/"
        # a top-level module has its own line; a package's modules are named in their folder's entry
        named = (
            f"{rel.as_posix()} " in layout
            if rel.parent == Path("hrseg")
            else (folder in layout and re.search(rf"\b{re.escape(path.name)}\b", layout) is not None)
        )
        if not named:
            missing.append(rel.as_posix())
    assert not missing, f"docs/architecture.md's layout does not name: {missing}"
