"""``hrseg data synth`` (write generated scenes in real dataset layouts) and ``hrseg data check`` (validate).

``check`` scans whole splits and reports every missing pair, unreadable file, size mismatch and out-of-range
label with its path, plus a per-class pixel histogram; it exits 1 when anything is wrong, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from hrseg.commands.configs import require_config
from hrseg.commands.options import EXIT_DATA, EXIT_USAGE, CommandParser, size_type
from hrseg.data.checks import CheckReport, DatasetError, Problem

EXIT_OK, EXIT_PROBLEMS = 0, EXIT_DATA
DATAMODULES = ("cityscapes", "voc", "folder", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The ``hrseg data`` argument parser (subcommands ``synth`` and ``check``)."""
    parser = CommandParser(prog="hrseg data", description="Generate demo datasets or validate datasets.")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser(
        "synth",
        help="write generated street scenes in a real dataset layout",
        description="Write generated street scenes (Cityscapes train-id labels) in the exact on-disk layout "
        "of Cityscapes, PASCAL VOC 2012 (+ SBD aug) or a plain images/masks folder, so the real loaders can "
        "read them.",
    )
    synth.add_argument("--layout", choices=("cityscapes", "voc", "folder"), required=True)
    synth.add_argument("--output", dest="out", required=True, help="output root directory")
    synth.add_argument("--num", type=int, required=True, help="number of training images")
    synth.add_argument(
        "--num-val", type=int, default=None, help="validation images (default: max(1, num // 4))"
    )
    synth.add_argument(
        "--num-test", type=int, default=None, help="Cityscapes test images (default: as num-val)"
    )
    synth.add_argument("--num-aug", type=int, default=None, help="VOC: extra SBD-aug images (default: num)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--size", type=size_type(16), default=(128, 256), help="image size HxW (default 128x256)"
    )
    synth.add_argument("--train-ids", action="store_true", help="Cityscapes: also write *_labelTrainIds.png")
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    check = sub.add_parser(
        "check",
        help="validate a dataset split by split",
        description="Scan a dataset and report missing pairs, unreadable or corrupt files, image/mask size "
        "mismatches, label values outside [0, num_classes) and the ignore value, and a per-class pixel "
        "histogram. Exits 1 when a problem is found.",
    )
    src = check.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "-c",
        "--config",
        help="a YAML config (file or shipped name) whose `data:` section has class_path / init_args",
    )
    src.add_argument("--datamodule", choices=DATAMODULES, help="build the DataModule from the options below")
    check.add_argument(
        "--split",
        action="append",
        default=None,
        help="split to check (repeatable; default: every split the DataModule uses)",
    )
    check.add_argument("--root", help="cityscapes / voc: dataset root")
    check.add_argument("--aug", action="store_true", help="voc: check the SBD-aug training split")
    check.add_argument(
        "--label-type",
        choices=("auto", "trainIds", "labelIds"),
        default=None,
        help="cityscapes: which label files to read",
    )
    check.add_argument("--images-dir", help="folder: images directory")
    check.add_argument("--masks-dir", help="folder: masks directory")
    check.add_argument("--num-classes", type=int, help="folder: number of classes")
    check.add_argument("--ignore-index", type=int, default=None, help="folder: ignore value (default 255)")
    check.add_argument("--mask-suffix", default=None, help="folder: suffix of mask stems")
    check.add_argument("--train-list", help="folder: training stems list")
    check.add_argument("--val-list", help="folder: validation stems list")
    check.add_argument("--test-list", help="folder: test stems list")
    check.add_argument("--val-ratio", type=float, default=None, help="folder: held-out fraction")
    check.add_argument("--seed", type=int, default=None, help="folder / demo: split seed")
    check.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def _synth(args: argparse.Namespace) -> int:
    from hrseg.data import layouts

    if args.num < 1:
        print("hrseg data synth: error: --num must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    num_val = max(1, args.num // 4) if args.num_val is None else args.num_val
    num_test = num_val if args.num_test is None else args.num_test
    num_aug = args.num if args.num_aug is None else args.num_aug
    progress = not args.no_progress
    out = Path(args.out)
    if args.layout == "cityscapes":
        layouts.write_cityscapes(
            out, args.num, num_val, num_test, args.seed, args.size, args.train_ids, progress
        )
        hint = f"hrseg data check --datamodule cityscapes --root {out}"
    elif args.layout == "voc":
        layouts.write_voc(out, args.num, num_val, num_aug, args.seed, args.size, progress)
        hint = f"hrseg data check --datamodule voc --root {out} --aug"
    else:
        layouts.write_folder(out, args.num, num_val, args.seed, args.size, progress)
        hint = (
            f"hrseg data check --datamodule folder --images-dir {out / 'images'} --masks-dir {out / 'masks'} "
            f"--num-classes 19 --train-list {out / 'train.txt'} --val-list {out / 'val.txt'}"
        )
    print(f"wrote a {args.layout} layout to {out}\ncheck it with: {hint}")
    return EXIT_OK


def _resolve_class(path: str) -> type:
    """Import ``pkg.mod.Class`` or look up a short name (``CityscapesDataModule``) in ``hrseg.data``."""
    if "." in path:
        module_name, _, cls_name = path.rpartition(".")
        module = importlib.import_module(module_name)
    else:
        module, cls_name = importlib.import_module("hrseg.data"), path
    try:
        return getattr(module, cls_name)
    except AttributeError:
        raise DatasetError(f"data class {path!r} not found") from None


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
    """Instantiate a DataModule from ``--datamodule`` and its options."""

    def need(*names: str) -> None:
        missing = [n for n in names if getattr(args, n.replace("-", "_")) in (None, "")]
        if missing:
            raise DatasetError(
                f"--datamodule {args.datamodule} needs " + ", ".join(f"--{n}" for n in missing)
            )

    if args.datamodule == "cityscapes":
        from hrseg.data.cityscapes import CityscapesDataModule

        need("root")
        kwargs: dict[str, Any] = {}
        if args.label_type:
            kwargs["label_type"] = args.label_type
        return CityscapesDataModule(root=args.root, **kwargs)
    if args.datamodule == "voc":
        from hrseg.data.voc import VOCDataModule

        need("root")
        return VOCDataModule(root=args.root, aug=args.aug)
    if args.datamodule == "folder":
        from hrseg.data.folder import FolderDataModule

        need("images-dir", "masks-dir", "num-classes")
        opts = {
            "ignore_index": args.ignore_index,
            "mask_suffix": args.mask_suffix,
            "train_list": args.train_list,
            "val_list": args.val_list,
            "test_list": args.test_list,
            "val_ratio": args.val_ratio,
            "seed": args.seed,
        }
        return FolderDataModule(
            images_dir=args.images_dir,
            masks_dir=args.masks_dir,
            num_classes=args.num_classes,
            **{k: v for k, v in opts.items() if v is not None},
        )
    from hrseg.data.synthetic import DemoDataModule

    return DemoDataModule(seed=args.seed or 0)


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
            report = CheckReport(split=split, class_names=list(dm.class_names))
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
        f"checking {type(dm).__name__}: splits {', '.join(splits)}; {dm.num_classes} classes, "
        f"ignore {dm.ignore_index}"
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


def main(argv: list[str] | None = None) -> int:
    """Run ``hrseg data ...``; returns the exit code (0 ok, 1 problems found, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    if args.command == "synth":
        return _synth(args)
    return _check(args)


__all__ = ["build_parser", "datamodule_from_args", "datamodule_from_config", "main", "run_check"]
