"""The package layout: layers import only downwards, no import circle, commands stay apart, light stays light.

docs/architecture.md draws these layers; this test reads every import statement (also those inside
functions) so the drawing cannot drift from the code. The deployment path (``hrseg predict``, ``evaluate``,
``export``) is run in fresh processes to check that no code path pulls in the training stack.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import hrseg

PACKAGE = Path(hrseg.__file__).resolve().parent

#: Lowest first; a module may import its own layer and the ones below. A module belongs to the layer of the
#: longest prefix that names it. The inference runtime is below the exporter (which runs and reads what it
#: writes through the runtime and the loader), the deployment API above both (its backend builder exports on
#: demand).
LAYERS: list[tuple[str, ...]] = [
    (
        "hrseg.colors",
        "hrseg.classes",
        "hrseg.images",
        "hrseg.plain_data",
        "hrseg.eval_protocol",
        "hrseg.checkpoint",
        "hrseg.hub",
        "hrseg.modelcard",
        "hrseg.plugins",
    ),
    ("hrseg.models", "hrseg.losses", "hrseg.optim", "hrseg.metrics", "hrseg.viz"),
    (
        "hrseg.data",
        "hrseg.evaluation",
        "hrseg.inference",
    ),
    ("hrseg.export",),
    ("hrseg.deploy", "hrseg.serve"),
    ("hrseg.task", "hrseg.callbacks", "hrseg.checkpoint_io", "hrseg.loggers"),
    ("hrseg.commands",),
]

#: what a deployment must never load: the training stack
TRAINING_STACK = ("albumentations", "cv2", "lightning")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int | None:
    """The layer of the longest prefix in :data:`LAYERS` that names ``module`` (None: not placed)."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for level, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[0]):
                best = (len(p), level)
    return None if best is None else best[1]


def _library_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py" and p.parent != PACKAGE.parent)


def _is_hrseg_module(name: str) -> bool:
    """``name`` is a module or package of hrseg (a file under the package)."""
    if not (name == "hrseg" or name.startswith("hrseg.")):
        return False
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module an import statement of ``path`` names, with its line (also inside functions)."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, node.lineno))
            # ``from hrseg import task`` / ``from hrseg.export import cache`` import a module, not a name
            found += [
                (f"{node.module}.{a.name}", node.lineno)
                for a in node.names
                if _is_hrseg_module(f"{node.module}.{a.name}")
            ]
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


def _import_graph() -> dict[str, set[str]]:
    """hrseg module -> the hrseg modules its import statements name (module level and inside functions).

    Module granularity: ``import hrseg.a.b`` is an edge to ``hrseg.a.b`` only (Python also runs
    ``hrseg/a/__init__.py`` first, but that package file's own imports are its own edges). The package root
    ``hrseg`` is left out: it is the public façade above every layer, importing its modules lazily on
    attribute access (its import statements are for type checkers), so importing it (for ``__version__``)
    runs none of them.
    """
    graph: dict[str, set[str]] = {}
    for path in _library_modules():
        module = _module_name(path)
        if module == "hrseg":
            continue
        graph[module] = {
            m for m in _hrseg_imports(path) if m not in (module, "hrseg") and _is_hrseg_module(m)
        }
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_circle_finder_finds_circles() -> None:
    """The checker itself: a three-module loop and a self-contained pair are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"a"}}
    assert _circles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert _circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circle_inside_hrseg() -> None:
    """No group of hrseg modules imports each other round in a circle, at module level or inside functions."""
    assert _circles(_import_graph()) == []


def _top_level(module: str) -> str:
    """The top-level package or module of hrseg that holds ``module`` (``hrseg.a.b.c`` -> ``hrseg.a``)."""
    return ".".join(module.split(".")[:2])


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` with every module collapsed to its top-level package, edges inside one package left out."""
    packages: dict[str, set[str]] = {}
    for module, imported in graph.items():
        own = _top_level(module)
        packages.setdefault(own, set()).update(_top_level(m) for m in imported if _top_level(m) != own)
    return packages


def test_the_package_graph_collapses_modules() -> None:
    """``hrseg.a.x -> hrseg.b.y`` and ``hrseg.b.z -> hrseg.a``: a package circle, though no module circle."""
    graph = {
        "hrseg.a.x": {"hrseg.b.y", "hrseg.a.w"},
        "hrseg.b.y": set(),
        "hrseg.b.z": {"hrseg.a"},
        "hrseg.a.w": set(),
    }
    assert _circles(graph) == []
    assert _package_graph(graph) == {"hrseg.a": {"hrseg.b"}, "hrseg.b": {"hrseg.a"}}
    assert _circles(_package_graph(graph)) == [["hrseg.a", "hrseg.b"]]


def test_no_two_top_level_packages_import_each_other() -> None:
    """The house drawn from the imports between top-level packages (``hrseg.inference``, ``hrseg.export``,
    ...) has no circle either: a module-level acyclic graph can still tie two packages together (a module of
    one imports the other package, a module of that one imports back), and then neither can be understood,
    tested or shipped without the other."""
    assert _circles(_package_graph(_import_graph())) == []


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
        "from hrseg.inference import infer, prepare_for_inference",
        "from hrseg.deploy import Segmenter, predict_folder",
        "import hrseg; hrseg.Segmenter",
        "import hrseg.checkpoint, hrseg.images",
        # hrseg serve runs on the deployment path too (LitServe, no Lightning)
        "import hrseg.commands.serve, hrseg.serve.server, hrseg.serve.api",
        # hrseg predict's own path: listing a folder must not pull in the DataModules (4 s of imports)
        "import hrseg.commands.predict, hrseg.deploy.writer as w, tempfile, PIL.Image as I; "
        "d = tempfile.mkdtemp(); I.new('RGB', (4, 4)).save(d + '/a.png'); assert len(w._resolve_inputs(d))",
    ],
)
def test_inference_and_colours_import_without_training_dependencies(statement: str) -> None:
    code = (
        f"import sys; {statement}; "
        f"heavy = sorted(m for m in {TRAINING_STACK!r} if m in sys.modules); "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "", f"{statement} imported {out.stdout.strip()}"


@pytest.fixture(scope="module")
def cityscapes_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two generated Cityscapes val images with their label-id ground truth (written by this process)."""
    from hrseg.data import write_cityscapes

    return write_cityscapes(tmp_path_factory.mktemp("cs"), 0, 2, 0, size=(64, 128), progress=False)


@pytest.mark.slow
def test_deployment_commands_load_no_training_stack(
    tiny_checkpoint: Path, cityscapes_val: Path, tmp_path: Path
) -> None:
    """``predict`` (bare --ckpt_path, cityscapes ids so the label tables are read), ``evaluate``, ``export``
    (parity check) and ``export --precision int8`` (calibration on generated scenes, accuracy check on others:
    the scene generator must stay light too) run without Lightning's ~10 s import or the augmentation stack.

    All four run in ONE fresh interpreter (one start-up and torch import instead of four); the training-stack
    modules are listed after each command, so a command that pulls one in is named.
    """
    images = str(cityscapes_val / "leftImg8bit" / "val" / "*" / "*_leftImg8bit.png")
    pred, gt = tmp_path / "pred", str(cityscapes_val / "gtFine" / "val")
    onnx, int8 = tmp_path / "model.onnx", tmp_path / "model_int8.onnx"
    predict = ["predict", "--ckpt_path", str(tiny_checkpoint), "--input", images]
    export = ["export", "--ckpt_path", str(tiny_checkpoint), "--size", "64x96"]
    tiny_calibration = ["--calib-num", "2", "--val-num", "2"]
    commands = [
        [*predict, "--output", str(pred), "--format", "cityscapes", "--no-progress"],
        ["evaluate", "--pred", str(pred), "--gt", gt, "--json", str(tmp_path / "scores.json")],
        [*export, "--output", str(onnx), "--format", "onnx"],
        [
            *export,
            "--output",
            str(int8),
            "--format",
            "onnx",
            "--precision",
            "int8",
            "--warn-only",
            *tiny_calibration,
        ],
    ]
    code = (
        "import sys\n"
        "from hrseg.commands import main\n"
        f"for argv in {commands!r}:\n"
        "    code = main(argv)\n"
        f"    heavy = sorted(m for m in {TRAINING_STACK!r} if m in sys.modules)\n"
        "    print(f'{argv[0]} EXIT {code} LOADED [{\",\".join(heavy)}]')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    reports = [line for line in out.stdout.splitlines() if " EXIT " in line]
    expected = [f"{argv[0]} EXIT 0 LOADED []" for argv in commands]
    assert reports == expected, out.stdout[-3000:]
    assert len(list(pred.rglob("*_labelIds.png"))) == 2
    assert (tmp_path / "scores.json").is_file() and "mIoU" in out.stdout
    assert onnx.is_file() and int8.is_file()


def test_openvino_is_imported_only_through_import_openvino() -> None:
    """A bare ``import openvino`` elsewhere would send OpenVINO's usage telemetry (see import_openvino)."""
    offenders = [
        f"{_module_name(path)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for module, line in _imports(path)
        if module == "openvino" or module.startswith("openvino.")
    ]
    assert offenders and all(o.startswith("hrseg.checkpoint:") for o in offenders), offenders
