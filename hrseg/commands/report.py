"""``hrseg report RUN_DIR``: figures of a finished ``hrseg fit`` run (validation panels, learning curve)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hrseg.commands.options import CommandParser

__all__ = ["build_parser", "main", "run_report"]


def _pick_checkpoint(run: Path) -> Path:
    """The run's best checkpoint (``best-*.ckpt``), else ``last.ckpt``."""
    folder = run / "checkpoints"
    best = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise FileNotFoundError(f"{folder}: no best-*.ckpt or last.ckpt (pass one with --ckpt_path)")


def run_report(
    run_dir: str | Path, out_dir: str | Path, num_images: int = 4, checkpoint: str | Path | None = None
) -> list[Path]:
    """Figures of a finished ``hrseg fit`` run: validation panels and the learning curve.

    Reads the run's ``config.yaml`` (saved by the CLI) to rebuild its DataModule, predicts the first
    ``num_images`` validation images with the best checkpoint and writes ``predictions.png`` and
    ``learning_curve.png`` into ``out_dir``.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder (no ``config.yaml``) or holds no checkpoint.
    """
    run = Path(run_dir)
    config_path = run / "config.yaml"
    if not run.is_dir():
        raise FileNotFoundError(
            f"run folder not found: {run} (expected e.g. runs/demo/lightning_logs/version_0)"
        )
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{run} is not a run folder of `hrseg fit`: no config.yaml in it (expected e.g. "
            "runs/demo/lightning_logs/version_0)"
        )
    import torch
    import yaml
    from lightning.pytorch.cli import instantiate_class

    from hrseg.colors import denormalize
    from hrseg.files import atomic_output
    from hrseg.task import SegmentationTask
    from hrseg.viz import plot_learning_curve, plot_panels, read_scalars

    data_cfg = yaml.safe_load(config_path.read_text())["data"]
    dm = instantiate_class(
        (), {"class_path": data_cfg["class_path"], "init_args": data_cfg.get("init_args") or {}}
    )
    dm.setup("validate")
    ckpt = Path(checkpoint) if checkpoint is not None else _pick_checkpoint(run)
    task = SegmentationTask.from_checkpoint(ckpt).eval()
    items = [dm.val_dataset[i] for i in range(min(num_images, len(dm.val_dataset)))]
    images, masks, preds, names = [], [], [], []
    with torch.no_grad():
        for item in items:
            mask = item["mask"]
            logits = task.evaluate_logits(item["image"].unsqueeze(0), mask.shape[-2:])
            image = item["image"]
            if image.shape[-2:] != mask.shape[-2:]:
                image = torch.nn.functional.interpolate(image[None], size=mask.shape[-2:], mode="bilinear")[0]
            images.append(denormalize(image, task.hparams.mean, task.hparams.std))
            masks.append(mask)
            preds.append(logits.argmax(1)[0])
            names.append(str(item.get("name", "")))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    panels = plot_panels(
        images,
        masks,
        preds,
        task.labels.palette,
        task.labels.ignore_index,
        names,
        list(task.labels.class_names),
    )
    paths = [out / "predictions.png", out / "learning_curve.png"]
    for path, figure in zip(paths, (panels, plot_learning_curve(read_scalars(run))), strict=True):
        with atomic_output(path, "the figures written before it are whole; rerun once there is room") as tmp:
            figure.savefig(tmp, dpi=110)
    return paths


def build_parser() -> CommandParser:
    """The ``hrseg report`` argument parser."""
    parser = CommandParser(
        prog="hrseg report",
        description="Draw validation predictions (image / ground truth / prediction) and the learning curve "
        "of a finished `hrseg fit` run, e.g. runs/demo/lightning_logs/version_0.",
    )
    parser.add_argument("run_dir", help="the run's log directory (holds config.yaml and checkpoints/)")
    parser.add_argument("--output", dest="out", default=None, help="output folder (default: RUN_DIR/figures)")
    parser.add_argument("--num-images", type=int, default=4, help="validation images to show")
    parser.add_argument(
        "--ckpt_path", dest="checkpoint", default=None, help="checkpoint (default: best, else last)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``hrseg report RUN_DIR [--output DIR]``: write the README figures of a demo (or any) run."""
    args = build_parser().parse_args(argv)
    out = args.out or str(Path(args.run_dir) / "figures")
    for path in run_report(args.run_dir, out, args.num_images, args.checkpoint):
        print(path)
    return 0
