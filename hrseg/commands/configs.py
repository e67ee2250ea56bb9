"""The configs shipped inside the package, and how a ``--config`` value names one.

``hrseg fit --config demo`` and ``hrseg export --calib-data cityscapes/hrnetv2_w48`` follow one rule, so an
installed ``hrseg`` finds its recipes outside a checkout. Imports nothing heavy: commands that only read a
config's ``data:`` section stay free of Lightning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hrseg.commands.options import UsageError

__all__ = [
    "CONFIG_DIR",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "ConfigFileError",
    "ConfigNotFoundError",
    "check_config_file",
    "list_configs",
    "require_config",
    "resolve_config",
    "resolve_config_args",
]

#: Shipped configs (the repository's top-level ``configs`` is a symlink to this folder).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def list_configs() -> list[str]:
    """Names of the shipped configs, e.g. ``demo``, ``cityscapes/hrnetv2_w48``."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(value: str) -> str:
    """Map a config argument to a file: an existing path wins, else a shipped config name.

    ``demo``, ``demo.yaml``, ``cityscapes/hrnetv2_w48`` and ``configs/demo.yaml`` (from any working
    directory) all resolve to files under :data:`CONFIG_DIR`. Unknown names are returned unchanged so the
    caller reports the missing file itself.
    """
    if Path(value).expanduser().exists():
        return value
    name = value.removeprefix("./").removeprefix("configs/").removeprefix("hrseg/configs/")
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    return value


class ConfigNotFoundError(UsageError, FileNotFoundError):
    """A ``--config`` value that is neither a file nor a shipped config (the error lists the shipped ones)."""


def require_config(value: str) -> str:
    """:func:`resolve_config`, failing with the list of shipped configs when nothing is found.

    Raises:
        ConfigNotFoundError: ``value`` is neither an existing file nor a shipped config name.
    """
    path = Path(resolve_config(value)).expanduser()
    if not path.is_file():
        what = "is a folder, not a config file" if path.is_dir() else "not found"
        raise ConfigNotFoundError(
            f"config {value!r} {what}; give a YAML file or a shipped config: {', '.join(list_configs())}"
        )
    check_config_file(path)
    return str(path)


#: A config is a page of settings (the shipped ones are under 4 KiB and 200 nodes); these limits leave room
#: for any real one and refuse, in well under a second, files built to exhaust time or memory.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000
"""Values a config may hold once its YAML aliases are expanded (what the parser builds and copies)."""
MAX_CONFIG_DEPTH = 64

#: the YAML tags a config may carry: plain data; ``!!python/...`` and other types are refused
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "seq", "map")
)


class ConfigFileError(UsageError):
    """A config file refused before parsing: too large, too deeply nested, an alias bomb, or a Python tag."""


def check_config_file(path: str | Path) -> None:
    """Refuse a YAML / JSON config that is not plain, reasonably sized data, before any parser reads it.

    The file is parsed with PyYAML's safe composer, which builds a node graph and constructs nothing: an
    alias is a second reference to a node, so the values it would expand to are counted without being made.
    Refused: a file over :data:`MAX_CONFIG_BYTES`, nesting deeper than :data:`MAX_CONFIG_DEPTH`, more than
    :data:`MAX_CONFIG_NODES` values once aliases are expanded (a "billion laughs" alias bomb), and tags other
    than plain data (``!!python/object/apply:os.system`` would run code under an unsafe loader).

    Raises:
        ConfigFileError: one line naming the file and the problem.
    """
    import yaml

    p = Path(path)
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigFileError(
            f"config {p} is {size / 2**20:.1f} MiB; a config holds settings (at most "
            f"{MAX_CONFIG_BYTES >> 20} MiB): refused"
        )
    try:
        text = p.read_text(encoding="utf-8")
        _check_events(yaml.parse(text, Loader=yaml.SafeLoader), p)
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except UnicodeDecodeError as err:
        raise ConfigFileError(f"config {p} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigFileError(f"config {p} is not valid YAML: {' '.join(str(err).split())}") from None
    total = _expanded_size(nodes, p)
    if total > MAX_CONFIG_NODES:
        raise ConfigFileError(
            f"config {p} expands to more than {MAX_CONFIG_NODES:,} values through its YAML aliases: an alias "
            "bomb or a generated file, refused"
        )


def _check_events(events: Iterator[Any], path: Path) -> None:
    """Refuse deep nesting and explicit tags other than plain data, from the event stream (no recursion)."""
    import yaml

    depth = 0
    for event in events:
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in _PLAIN_TAGS:
            why = (
                "Python objects would run code"
                if tag.startswith("tag:yaml.org,2002:python/")
                else "not plain data"
            )
            raise ConfigFileError(
                f"config {path}: tag {tag.replace('tag:yaml.org,2002:', '!!')} at line "
                f"{_line(event)} is refused ({why}); a config holds plain values, lists and "
                "mappings"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise ConfigFileError(
                    f"config {path} nests deeper than {MAX_CONFIG_DEPTH} levels "
                    f"(line {_line(event)}): refused"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _line(item: Any) -> str:
    """The 1-based line where a YAML event or node starts ("?" without a mark)."""
    mark = getattr(item, "start_mark", None)
    return "?" if mark is None else str(mark.line + 1)


def _expanded_size(roots: list[Any], path: Path) -> int:
    """Values in the documents with every alias expanded, each node counted once (memoised, no recursion)."""
    import yaml

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # nodes whose children are being counted: the path from a root
    stack: list[tuple[Any, bool]] = [(node, False) for node in roots]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = (
            [item for pair in node.value for item in pair]
            if isinstance(node, yaml.MappingNode)
            else node.value
        )
        if children_done:
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_CONFIG_NODES + 1)
            open_nodes.discard(id(node))
            continue
        if id(node) in open_nodes:
            raise ConfigFileError(
                f"config {path}: the alias at line {_line(node)} refers to a collection that "
                "contains it (an endless value): refused"
            )
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return min(sum(sizes[id(n)] for n in roots), MAX_CONFIG_NODES + 1)


def resolve_config_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``--config`` / ``-c`` value replaced by its file (:func:`require_config`).

    Raises:
        ConfigNotFoundError: a config value names neither a file nor a shipped config.
    """
    out: list[str] = []
    expect_value = False
    for arg in argv:
        if expect_value:
            out.append(require_config(arg))
            expect_value = False
        elif arg in ("--config", "-c"):
            out.append(arg)
            expect_value = True
        elif arg.startswith(("--config=", "-c=")):
            name, value = arg.split("=", 1)
            out.append(f"{name}={require_config(value)}")
        else:
            out.append(arg)
    return out
