"""``hrseg data synth`` (generated scenes in real layouts), ``check`` (validate) and ``convert`` (labels).

``check`` scans whole splits and reports every missing pair, unreadable file, size mismatch and out-of-range
label with its path, plus a per-class pixel histogram; it exits 1 when anything is wrong, 2 on usage errors.
``convert`` runs a dataset's label converter (PASCAL-Context's ``.mat`` release -> PNG masks) and names every
file it could not convert (exit 1).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from hrseg.commands.configs import require_config
from hrseg.commands.options import EXIT_DATA, EXIT_USAGE, CommandParser, size_type
from hrseg.data.checks import CheckReport, DatasetError, Problem
from hrseg.data.registry import get_dataset, list_datasets

EXIT_OK, EXIT_PROBLEMS = 0, EXIT_DATA

#: the parameters every layout writer takes (``hrseg data synth``'s common options)
_WRITER_COMMON = ("out", "num_train", "num_val", "seed", "size", "progress")
#: DataModule parameters ``hrseg data check`` never offers: loading, not reading or checking, concerns
_CHECK_SKIPPED = ("batch_size", "num_workers", "crop_size", "train_resize", "kwargs")
#: converter parameters every converter takes (``hrseg data convert``'s common options)
_CONVERT_COMMON = ("progress",)


def _convertible() -> list[str]:
    """The registered datasets with a label converter."""
    return [name for name in list_datasets() if get_dataset(name).convert is not None]


def _option_type(hint: Any) -> dict[str, Any] | None:
    """Argparse keywords for a parameter's type hint; None for types the command line does not offer."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in (Union, UnionType) and len(args) == 1:
        hint = args[0]
    if hint in (str, int, float, Path):
        return {"type": hint}
    if get_origin(hint) is Literal:
        return {"choices": list(get_args(hint))}
    if get_origin(hint) is tuple and get_args(hint) == (int, int):
        return {"type": size_type(1), "metavar": "HxW"}
    return None


def add_signature_options(
    parser: argparse.ArgumentParser, func: Any, skip: tuple[str, ...], title: str
) -> list[str]:
    """Add one ``--kebab-case`` option per simply typed parameter of ``func``; returns the parameter names.

    A parameter without a default is required; a bool with default False is a flag. Types the command line
    cannot spell (lists, dicts) are left to ``--config``.
    """
    group = parser.add_argument_group(title)
    hints = get_type_hints(getattr(func, "__init__") if isinstance(func, type) else func)  # noqa: B009
    names = []
    for name, param in inspect.signature(func).parameters.items():
        if name in skip or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        flag = "--" + name.replace("_", "-")
        hint = hints.get(name)
        required = param.default is inspect.Parameter.empty
        if hint is bool:
            group.add_argument(flag, dest=name, action="store_true", default=None)
        else:
            kwargs = _option_type(hint)
            if kwargs is None:
                continue
            text = "required" if required else f"default: {param.default}"
            group.add_argument(flag, dest=name, default=None, help=text, **kwargs)
        names.append(name)
    return names


def _option_text(name: str, value: Any) -> str:
    """How ``name=value`` is spelled on the command line (for the check hint after ``synth``)."""
    flag = "--" + name.replace("_", "-")
    if value is True:
        return flag
    if isinstance(value, tuple | list) and len(value) == 2:
        return f"{flag} {value[0]}x{value[1]}"
    return f"{flag} {value}"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``hrseg data`` parser; the options of the named dataset (``--layout`` / ``--datamodule``) included.

    The datasets and their options come from the registry (:mod:`hrseg.data.registry`): ``synth`` offers the
    options of the dataset's layout writer, ``check`` those of its DataModule.
    """
    datasets = list_datasets()
    parser = CommandParser(prog="hrseg data", description="Generate demo datasets or validate datasets.")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser(
        "synth",
        help="write generated street scenes in a real dataset layout",
        description="Write generated street scenes in the exact on-disk layout of a registered dataset "
        f"({', '.join(datasets)}), so its DataModule reads them. The dataset's own options follow "
        "`--layout NAME --help`.",
    )
    synth.add_argument("--layout", choices=datasets, required=True)
    synth.add_argument("--output", dest="out", required=True, help="output root directory")
    synth.add_argument("--num", type=int, required=True, help="number of training images")
    synth.add_argument(
        "--num-val", type=int, default=None, help="validation images (default: max(1, num // 4))"
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--size", type=size_type(16), default=(128, 256), help="image size HxW (default 128x256)"
    )
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    check = sub.add_parser(
        "check",
        help="validate a dataset split by split",
        description="Scan a dataset and report missing pairs, unreadable or corrupt files, image/mask size "
        "mismatches, label values outside [0, num_classes) and the ignore value, and a per-class pixel "
        "histogram. Exits 1 when a problem is found. The dataset's own options follow "
        "`--datamodule NAME --help`.",
    )
    src = check.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "-c",
        "--config",
        help="a YAML config (file or shipped name) whose `data:` section has class_path / init_args",
    )
    src.add_argument("--datamodule", choices=datasets, help="a registered dataset, with its options")
    check.add_argument(
        "--split",
        action="append",
        default=None,
        help="split to check (repeatable; default: every split the DataModule uses)",
    )
    check.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    convertible = _convertible()
    convert = sub.add_parser(
        "convert",
        help="convert a dataset's distributed label files into the masks its DataModule reads",
        description="Convert the label files a dataset is distributed in into the PNG masks its DataModule "
        f"reads ({', '.join(convertible) or 'no dataset needs it'}). Every file that cannot be converted is "
        "named and leaves no output file; exits 1 when any was found. The dataset's own options follow "
        "`--datamodule NAME --help`.",
    )
    convert.add_argument("--datamodule", choices=convertible, required=True, help="a registered dataset")
    convert.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    # the named dataset's own options (a first, lenient pass finds the name)
    known, _ = _name_parser().parse_known_args(argv or [])
    if known.layout in datasets:
        writer = get_dataset(known.layout).write_layout
        add_signature_options(synth, writer, _WRITER_COMMON, f"{known.layout} layout options")
    if known.datamodule in datasets:
        cls = get_dataset(known.datamodule).datamodule
        add_signature_options(check, cls, _CHECK_SKIPPED, f"{known.datamodule} options")
    if known.datamodule in convertible:
        converter = get_dataset(known.datamodule).convert
        add_signature_options(convert, converter, _CONVERT_COMMON, f"{known.datamodule} conversion options")
    return parser


def _name_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--layout")
    parser.add_argument("--datamodule")
    return parser


def _given(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _synth(args: argparse.Namespace) -> int:
    if args.num < 1:
        print("hrseg data synth: error: --num must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    entry = get_dataset(args.layout)
    extra = inspect.signature(entry.write_layout).parameters
    options = _given(args, [n for n in extra if n not in _WRITER_COMMON])
    num_val = max(1, args.num // 4) if args.num_val is None else args.num_val
    out = Path(args.out)
    reader = entry.write_layout(
        out, args.num, num_val, seed=args.seed, size=args.size, progress=not args.no_progress, **options
    )
    options_text = [_option_text(k, v) for k, v in reader.items()]
    hint = " ".join([f"hrseg data check --datamodule {entry.name}", *options_text])
    print(f"wrote a {entry.name} layout to {out}")
    if entry.convert is not None:  # the layout holds the distributed label files, not yet the masks
        print(f"convert its labels with: hrseg data convert --datamodule {entry.name} --root {out}")
    print(f"check it with: {hint}")
    return EXIT_OK


def _resolve_class(path: str) -> type:
    """Import ``pkg.mod.Class``, or find a registered dataset's DataModule by name or class name."""
    if "." in path:
        module_name, _, cls_name = path.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError):
            raise DatasetError(f"data class {path!r} not found") from None
    for name in list_datasets():
        cls = get_dataset(name).datamodule
        if path in (name, cls.__name__):
            return cls
    raise DatasetError(f"data class {path!r} not found; registered datasets: {', '.join(list_datasets())}")


def datamodule_from_config(config: str | Path) -> Any:
    """Instantiate the DataModule of a LightningCLI-style YAML config (its ``data:`` section)."""
    from omegaconf import OmegaConf

    path = Path(require_config(str(config))).expanduser()
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:  # YAML syntax or interpolation errors: report them as config problems
        raise DatasetError(f"{path}: cannot read config ({exc})") from None
    data = cfg.get("data") if isinstance(cfg, dict) else None
    if not isinstance(data, dict) or "class_path" not in data:
        raise DatasetError(f"{path}: no `data:` section with `class_path` (and `init_args`)")
    cls = _resolve_class(str(data["class_path"]))
    init_args = dict(data.get("init_args") or {})
    init_args["num_workers"] = 0
    return cls(**init_args)


def datamodule_from_args(args: argparse.Namespace) -> Any:
    """Instantiate the registered DataModule of ``--datamodule`` with its options."""
    cls = get_dataset(args.datamodule).datamodule
    params = inspect.signature(cls).parameters
    missing = [
        "--" + n.replace("_", "-")
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        and getattr(args, n, None) is None
    ]
    if missing:
        raise DatasetError(f"--datamodule {args.datamodule} needs " + ", ".join(missing))
    options = _given(args, [n for n in params if n not in _CHECK_SKIPPED])
    if "num_workers" in params:
        options["num_workers"] = 0
    return cls(**options)


def default_splits(dm: Any) -> list[str]:
    """Every split the DataModule would read: train, val, test and the prediction split, deduplicated."""
    splits: list[str] = []
    for name in ("train_split", "val_split", "test_split", "predict_split"):
        value = getattr(dm, name, None)
        if value and value not in splits:
            splits.append(value)
    return splits


def run_check(dm: Any, splits: list[str], progress: bool = True) -> list[CheckReport]:
    """Check each split; a split that cannot even be listed becomes a report with that one problem."""
    reports = []
    for split in splits:
        try:
            reports.append(dm.check(split, progress=progress))
        except DatasetError as exc:
            report = CheckReport(split=split, class_names=list(dm.labels.class_names))
            report.problems.append(Problem(f"split {split!r}", str(exc)))
            reports.append(report)
    return reports


def _check(args: argparse.Namespace) -> int:
    try:
        dm = datamodule_from_config(args.config) if args.config else datamodule_from_args(args)
    except (DatasetError, TypeError, ValueError) as exc:
        print(f"hrseg data check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    splits = args.split or default_splits(dm)
    print(
        f"checking {type(dm).__name__}: splits {', '.join(splits)}; {dm.labels.num_classes} classes, "
        f"ignore {dm.labels.ignore_index}"
    )
    reports = run_check(dm, splits, progress=not args.no_progress)
    for report in reports:
        print(report.format())
    total = sum(len(r.problems) for r in reports)
    if total:
        print(f"FAILED: {total} problem(s) found")
        return EXIT_PROBLEMS
    print("OK: no problems found")
    return EXIT_OK


def _convert(args: argparse.Namespace) -> int:
    convert = get_dataset(args.datamodule).convert
    assert convert is not None  # --datamodule only offers datasets with a converter
    params = inspect.signature(convert).parameters
    missing = [
        "--" + n.replace("_", "-")
        for n, p in params.items()
        if p.default is inspect.Parameter.empty and getattr(args, n, None) is None
    ]
    if missing:
        print(
            f"hrseg data convert: error: --datamodule {args.datamodule} needs {', '.join(missing)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    options = _given(args, [n for n in params if n not in _CONVERT_COMMON])
    try:
        report = convert(progress=not args.no_progress, **options)
    except DatasetError as exc:
        print(f"hrseg data convert: error: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(report.format())
    if not report.ok:
        print(f"FAILED: {len(report.problems)} file(s) not converted")
        return EXIT_PROBLEMS
    print(
        f"OK: check it with: hrseg data check --datamodule {args.datamodule} "
        + " ".join(_option_text(k, v) for k, v in options.items() if k == "root")
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run ``hrseg data ...``; returns the exit code (0 ok, 1 problems found, 2 usage error)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    if args.command == "synth":
        return _synth(args)
    if args.command == "convert":
        return _convert(args)
    return _check(args)


__all__ = ["build_parser", "datamodule_from_args", "datamodule_from_config", "main", "run_check"]
