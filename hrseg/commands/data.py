"""``hrseg data synth`` (generated layouts), ``check`` (validate), ``stats`` (class shares), ``convert``.

``synth`` writes generated scenes in a registered dataset's exact layout; ``stats`` gives class pixel
frequencies and the class weights derived from them.

``check`` scans whole splits and reports every missing pair, unreadable file, size mismatch and out-of-range
label with its path, plus a per-class pixel histogram; it exits 1 when anything is wrong, 2 on usage errors.
``stats`` runs the same scan over one split and prints each class's share of the labelled pixels.
``convert`` runs a dataset's label converter (PASCAL-Context's ``.mat`` release -> PNG masks) and names every
file it could not convert (exit 1).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from hrseg.commands.configs import require_config
from hrseg.commands.options import EXIT_DATA, EXIT_USAGE, CommandParser, size_type
from hrseg.data.checks import CheckReport, DatasetError, Problem
from hrseg.data.listfiles import parse_list_spec, write_list_file
from hrseg.data.registry import get_dataset, list_datasets

EXIT_OK, EXIT_PROBLEMS = 0, EXIT_DATA

#: the parameters every layout writer takes (``hrseg data synth``'s common options)
_WRITER_COMMON = ("out", "num_train", "num_val", "seed", "size", "progress")
#: DataModule parameters ``hrseg data check`` / ``stats`` never offer (loading, not reading, concerns)
_CHECK_SKIPPED = (
    "batch_size",
    "num_workers",
    "crop_size",
    "kwargs",
    "eval_batch_size",
    "pin_memory",
    "scale_range",
    "hflip_prob",
    "photometric",
    "eval_size",
    "mean",
    "std",
    "predict_path",
    "train_resize",
)


def _list_spec_type(text: str) -> dict[str, str]:
    """An argparse ``type=`` for ``split=path[,split=path...]`` (``list_files``)."""
    try:
        return parse_list_spec(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_list_spec_type.__name__ = "split=path list"  # argparse names the type in "invalid ... value"
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
    if get_origin(hint) is dict and get_args(hint) == (str, str):
        return {"type": _list_spec_type, "metavar": "SPLIT=PATH[,SPLIT=PATH]"}
    return None


def signature_parameters(func: Any) -> list[tuple[inspect.Parameter, Any]]:
    """The parameters of a function, or of a class's ``__init__`` with those its ``**kwargs`` pass on.

    A DataModule hands ``**kwargs`` to its base class, so the base's options (``list_files``...) are its
    options too: the classes of the MRO are followed while each ``__init__`` takes ``**kwargs``.

    Returns:
        (parameter, type hint) pairs, each name once, ``self`` and ``*args`` / ``**kwargs`` left out.
    """
    inits = [func]
    if isinstance(func, type):
        inits = [cls.__dict__["__init__"] for cls in func.__mro__ if "__init__" in cls.__dict__]
    out: list[tuple[inspect.Parameter, Any]] = []
    seen: set[str] = set()
    for init in inits:
        hints = get_type_hints(init)
        params = inspect.signature(init).parameters
        for name, param in params.items():
            if name == "self" or name in seen or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            seen.add(name)
            out.append((param, hints.get(name)))
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return out


def add_signature_options(
    parser: argparse.ArgumentParser, func: Any, skip: tuple[str, ...], title: str
) -> list[str]:
    """Add one ``--kebab-case`` option per simply typed parameter of ``func``; returns the parameter names.

    A parameter without a default is required; a bool with default False is a flag. Types the command line
    cannot spell (lists, dicts) are left to ``--config``.
    """
    group = parser.add_argument_group(title)
    names = []
    for param, hint in signature_parameters(func):
        name = param.name
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
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
    if isinstance(value, dict):
        return f"{flag} " + ",".join(f"{k}={v}" for k, v in value.items())
    return f"{flag} {value}"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``hrseg data`` parser; the options of the named dataset (``--layout`` / ``--datamodule``) included.

    The datasets and their options come from the registry (:mod:`hrseg.data.registry`): ``synth`` offers the
    options of the dataset's layout writer, ``check`` those of its DataModule.
    """
    datasets = list_datasets()
    parser = CommandParser(
        prog="hrseg data", description="Generate demo datasets, validate datasets and count their classes."
    )
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
    synth.add_argument(
        "--list-files",
        action="store_true",
        help="also write official-style list files, list/<layout>/<split>.lst (paths relative to --output)",
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
    _add_source(check, datasets)
    check.add_argument(
        "--split",
        action="append",
        default=None,
        help="split to check (repeatable; default: every split the DataModule uses)",
    )
    check.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    stats = sub.add_parser(
        "stats",
        help="class pixel frequencies of a dataset split, and class weights derived from them",
        description="Count every class's pixels in one split (its files are validated on the way, as by "
        "`check`) and print each class's share of the labelled pixels with the ENet class weight "
        f"{WEIGHT_FORMULA}. --output writes the weights as a config fragment usable as a second "
        "--config of `hrseg fit` (model.loss.class_weights). The dataset's own options follow "
        "`--datamodule NAME --help`.",
    )
    _add_source(stats, datasets)
    stats.add_argument("--split", default=None, help="split to count (default: the training split)")
    stats.add_argument("--output", type=Path, default=None, help="write the class weights (YAML) here")
    stats.add_argument("--no-progress", action="store_true", help="hide the progress bar")

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
        for command in (check, stats):
            add_signature_options(command, cls, _CHECK_SKIPPED, f"{known.datamodule} options")
    if known.datamodule in convertible:
        converter = get_dataset(known.datamodule).convert
        add_signature_options(convert, converter, _CONVERT_COMMON, f"{known.datamodule} conversion options")
    return parser


def _add_source(parser: argparse.ArgumentParser, datasets: list[str]) -> None:
    """``--config`` or ``--datamodule NAME``: where ``check`` and ``stats`` get their DataModule."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "-c",
        "--config",
        help="a YAML config (file or shipped name) whose `data:` section has class_path / init_args",
    )
    src.add_argument("--datamodule", choices=datasets, help="a registered dataset, with its options")


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
    reader = dict(
        entry.write_layout(
            out, args.num, num_val, seed=args.seed, size=args.size, progress=not args.no_progress, **options
        )
    )
    if args.list_files:
        try:
            reader.update(write_split_lists(entry.datamodule(**reader), out, entry.name))
        except (DatasetError, NotImplementedError) as exc:
            print(f"hrseg data synth: error: --list-files: {exc}", file=sys.stderr)
            return EXIT_USAGE
    options_text = [_option_text(k, v) for k, v in reader.items()]
    hint = " ".join([f"hrseg data check --datamodule {entry.name}", *options_text])
    print(f"wrote a {entry.name} layout to {out}")
    if entry.convert is not None:  # the layout holds the distributed label files, not yet the masks
        print(f"convert its labels with: hrseg data convert --datamodule {entry.name} --root {out}")
    print(f"check it with: {hint}")
    return EXIT_OK


def write_split_lists(dm: Any, root: Path, name: str) -> dict[str, Any]:
    """Write the official list file of every split ``dm`` reads, as listed by the dataset itself.

    Each split becomes ``root/list/<name>/<split>.lst``: one ``image [label]`` line per sample, paths
    relative to ``root`` (:func:`hrseg.data.listfiles.write_list_file`).

    Returns:
        The DataModule keywords that read the lists instead of the layout: ``list_files`` (and ``list_root``
        when the DataModule has no ``root``).
    """
    lists = {
        split: str(
            write_list_file(
                root / "list" / name / f"{split}.lst", root, [(s.image, s.mask) for s in dm.samples(split)]
            )
        )
        for split in default_splits(dm)
    }
    out: dict[str, Any] = {"list_files": lists}
    if getattr(dm, "root", None) is None:
        out["list_root"] = str(root)
    return out


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
    names = [p.name for p, _ in signature_parameters(cls)]
    options = _given(args, [n for n in names if n not in _CHECK_SKIPPED])
    if "num_workers" in names:
        options["num_workers"] = 0
    return cls(**options)


def default_splits(dm: Any) -> list[str]:
    """Every split the DataModule would read: train, val, test and the prediction split, deduplicated.

    With ``list_files`` the splits it names (a list file replaces the dataset's own listing).
    """
    if getattr(dm, "list_files", None):
        return list(dm.list_files)
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


def _datamodule(args: argparse.Namespace) -> Any:
    """The DataModule of ``--config`` or ``--datamodule``; a usage error is printed and None returned."""
    try:
        return datamodule_from_config(args.config) if args.config else datamodule_from_args(args)
    except (DatasetError, TypeError, ValueError) as exc:
        print(f"hrseg data {args.command}: error: {exc}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    dm = _datamodule(args)
    if dm is None:
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


#: the class-weight formula of ``hrseg data stats`` (ENet, Paszke et al. 2016, section 5.2)
WEIGHT_FORMULA = "w_c = 1 / ln(1.02 + p_c), p_c = the class's share of the labelled pixels"


def class_weights(histogram: Sequence[int]) -> list[float]:
    """ENet class weights of a pixel histogram: ``1 / ln(1.02 + p_c)`` (:data:`WEIGHT_FORMULA`).

    Bounded between 1 / ln(2.02) (a class covering everything) and 1 / ln(1.02) ~ 50.5 (an absent class),
    so rare classes weigh more without any weight growing without bound.

    Raises:
        ValueError: the histogram counts no pixel at all.
    """
    total = sum(int(c) for c in histogram)
    if total <= 0:
        raise ValueError("no labelled pixels: class weights are undefined")
    return [round(1.0 / math.log(1.02 + int(c) / total), 6) for c in histogram]


def format_stats(report: CheckReport, weights: Sequence[float]) -> str:
    """The stats table: id, class, pixels, share of the labelled pixels, weight; then the ignored pixels."""
    assert report.histogram is not None
    total = int(report.histogram.sum())
    width = max([len(n) for n in report.class_names] + [5])
    lines = [
        f"split {report.split!r}: {report.num_labelled} labelled images, {total} labelled pixels, "
        f"{report.ignored_pixels} ignored",
        f"  {'id':>3} {'class':<{width}} {'pixels':>12} {'share':>8} {'weight':>8}",
    ]
    for i, (count, weight) in enumerate(zip(report.histogram, weights, strict=True)):
        share = 100.0 * int(count) / total
        lines.append(
            f"  {i:>3} {report.class_names[i]:<{width}} {int(count):>12d} {share:7.3f}% {weight:8.4f}"
        )
    return "\n".join(lines)


def _stats(args: argparse.Namespace) -> int:
    dm = _datamodule(args)
    if dm is None:
        return EXIT_USAGE
    split = args.split or dm.train_split or default_splits(dm)[0]
    report = run_check(dm, [split], progress=not args.no_progress)[0]
    if report.problems:
        print(report.format())
        print(f"FAILED: {len(report.problems)} problem(s) found; no statistics written")
        return EXIT_PROBLEMS
    try:
        if report.histogram is None:
            raise ValueError("the split has no labels")
        weights = class_weights(report.histogram.tolist())
    except ValueError as exc:
        print(f"hrseg data stats: error: split {split!r}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(format_stats(report, weights))
    if args.output is not None:
        import yaml

        args.output.parent.mkdir(parents=True, exist_ok=True)
        header = f"# ENet class weights of {type(dm).__name__} split {split!r}: {WEIGHT_FORMULA}\n"
        body = yaml.safe_dump({"model": {"loss": {"class_weights": weights}}}, default_flow_style=None)
        args.output.write_text(header + body)
        print(f"wrote the class weights to {args.output} (use it as a second --config of hrseg fit)")
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
    if args.command == "stats":
        return _stats(args)
    if args.command == "convert":
        return _convert(args)
    return _check(args)


__all__ = [
    "build_parser",
    "class_weights",
    "datamodule_from_args",
    "datamodule_from_config",
    "format_stats",
    "main",
    "run_check",
    "signature_parameters",
    "write_split_lists",
]
