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
#: the benchmark scripts (``python -m benchmarks.run``): a package of their own beside hrseg, held to the same
#: "no import circle" and "no private name from another module" rules (not to the layers: they sit above all)
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
TREES = (PACKAGE, BENCHMARKS)

#: Lowest first; a module may import its own layer and the ones below. A module belongs to the layer of the
#: longest prefix that names it. The inference runtime is below the exporter (which runs and reads what it
#: writes through the runtime and the loader), the deployment API above both (its backend builder exports on
#: demand).
LAYERS: list[tuple[str, ...]] = [
    ("hrseg.labelsets", "hrseg.registry", "hrseg.plain_data", "hrseg.eval_protocol", "hrseg.metadata"),
    (
        "hrseg._version",
        "hrseg.colors",
        "hrseg.images",
        "hrseg.rasters",
        "hrseg.checkpoint",
        "hrseg.files",
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


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
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


def _library_modules(package: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if p.name != "__main__.py" and p.parent != package.parent)


def _is_module(name: str, package: Path = PACKAGE) -> bool:
    """``name`` is a module or package of ``package`` (a file under it)."""
    if not (name == package.name or name.startswith(package.name + ".")):
        return False
    base = package.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _from_module(node: ast.ImportFrom, path: Path, package: Path) -> str:
    """The absolute module of ``from X import ...`` in ``path`` (``from . import x`` resolved in the tree)."""
    if not node.level:
        return node.module or ""
    here = _module_name(path, package).split(".")
    base = here if path.name == "__init__.py" else here[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(path: Path, package: Path = PACKAGE) -> list[tuple[str, int]]:
    """Every module an import statement of ``path`` names, with its line (also inside functions)."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _from_module(node, path, package)
            found.append((module, node.lineno))
            # ``from hrseg import task`` / ``from hrseg.export import cache`` import a module, not a name
            found += [
                (f"{module}.{a.name}", node.lineno)
                for a in node.names
                if _is_module(f"{module}.{a.name}", package)
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


def test_no_module_imports_the_package_root() -> None:
    """``hrseg`` is the façade above every layer: modules take the version from ``hrseg._version``."""
    found = [
        f"{_module_name(path)}:{line}"
        for path in _library_modules()
        if path != PACKAGE / "__init__.py"
        for module, line in _imports(path)
        if module == "hrseg"
    ]
    assert found == []


def test_the_version_is_the_package_metadata() -> None:
    from importlib.metadata import version

    assert hrseg.__version__ == version("hrseg")


def _import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module of ``package`` -> the modules of it its import statements name (module level and in functions).

    Module granularity: ``import hrseg.a.b`` is an edge to ``hrseg.a.b`` only (Python also runs
    ``hrseg/a/__init__.py`` first, but that package file's own imports are its own edges). The package root
    is left out: ``hrseg`` is the public façade above every layer, importing its modules lazily on attribute
    access (its import statements are for type checkers), so importing it (for ``__version__``) runs none of
    them; ``benchmarks/__init__.py`` holds only a docstring.
    """
    root = package.name
    graph: dict[str, set[str]] = {}
    for path in _library_modules(package):
        module = _module_name(path, package)
        if module == root:
            continue
        graph[module] = {
            m for m, _ in _imports(path, package) if m not in (module, root) and _is_module(m, package)
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


def test_the_import_reader_resolves_relative_imports(tmp_path: Path) -> None:
    """``from . import b`` and ``from .b import x`` in a tree are edges like their absolute spelling."""
    tree = tmp_path / "pkg"
    (tree / "sub").mkdir(parents=True)
    for name in ("__init__.py", "b.py", "sub/__init__.py", "sub/c.py"):
        (tree / name).write_text("")
    (tree / "a.py").write_text("from . import b\nfrom .sub.c import x\n\ndef f():\n    from .sub import c\n")
    (tree / "sub" / "c.py").write_text("from .. import a\n")
    assert _import_graph(tree) == {
        "pkg.a": {"pkg.b", "pkg.sub", "pkg.sub.c"},
        "pkg.b": set(),
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.a"},
    }
    assert _circles(_import_graph(tree)) == [["pkg.a", "pkg.sub.c"]]


@pytest.mark.parametrize("package", TREES, ids=lambda p: p.name)
def test_no_import_circle(package: Path) -> None:
    """No group of modules of hrseg (or of the benchmark scripts) imports each other round in a circle, at
    module level or inside functions: a lazy import is still a dependency, only a later one."""
    graph = _import_graph(package)
    assert len(graph) > 5  # the tree was read
    assert _circles(graph) == []


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


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")  # ``__version__`` is public


def _private_uses(path: Path, package: Path) -> list[str]:
    """Private names of another module of ``package`` that ``path`` uses: ``from m import _x`` and ``m._x`` /
    ``alias._x`` on a module it imported (``import hrseg.a.b``, ``import ... as alias``, ``from hrseg.a import
    b``), also inside functions. Each as ``line: module._x``."""
    own = _module_name(path, package)
    tree = ast.parse(path.read_text())
    found: list[str] = []
    bound: dict[str, str] = {}  # a local name -> the module of the tree it names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_module(alias.name, package):
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            module = _from_module(node, path, package)
            if not _is_module(module, package) or module == own:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"{node.lineno}: {module}.{alias.name}")
                elif _is_module(f"{module}.{alias.name}", package):
                    bound[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain: list[str] = []
        value: ast.expr = node
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if not (isinstance(value, ast.Name) and value.id in bound):
            continue
        module = bound[value.id]
        while chain and _is_module(f"{module}.{chain[0]}", package):  # ``hrseg.hub.references._x``
            module = f"{module}.{chain.pop(0)}"
        if chain and chain[0] == node.attr and _is_private(node.attr) and module != own:
            found.append(f"{node.lineno}: {module}.{node.attr}")
    return found


def test_the_private_name_reader_finds_both_spellings(tmp_path: Path) -> None:
    """The checker itself: ``from``-imported, attribute-accessed (module, alias, package path, inside a
    function) private names of a sibling are found; public names, dunders and a module's own are not."""
    tree = tmp_path / "pkg"
    (tree / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "sub/b.py"):
        (tree / name).write_text("")
    (tree / "a.py").write_text(
        "import pkg.sub.b\nimport pkg.sub.b as bb\nfrom pkg.sub import b\nfrom pkg import __version__, sub\n"
        "from .sub.b import _x, y\n_own = 1\n\n\ndef f():\n    from pkg.sub.b import _z\n"
        "    return pkg.sub.b._p, bb._q, b._r, b.s, sub.b._t, b._u._v, _own\n"
    )
    assert sorted(_private_uses(tree / "a.py", tree)) == sorted(
        [
            "5: pkg.sub.b._x",
            "10: pkg.sub.b._z",
            "11: pkg.sub.b._p",
            "11: pkg.sub.b._q",
            "11: pkg.sub.b._r",
            "11: pkg.sub.b._t",
            "11: pkg.sub.b._u",
        ]
    )


@pytest.mark.parametrize("package", TREES, ids=lambda p: p.name)
def test_no_module_uses_a_private_name_of_another(package: Path) -> None:
    """A leading underscore means "this module's own": a name another module needs is a shared concept, so it
    is public and documented (or lives where it belongs). Tests may reach in; the package trees may not.
    Third-party private names are not this rule's business."""
    offenders = [
        f"{_module_name(path, package)}:{use}"
        for path in _library_modules(package)
        for use in _private_uses(path, package)
    ]
    assert offenders == []


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

    root = tmp_path_factory.mktemp("cs")
    write_cityscapes(root, 0, 2, num_test=0, size=(64, 128), progress=False)
    return root


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
    tiny_calibration = ["--num-calib", "2", "--num-val", "2"]
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
