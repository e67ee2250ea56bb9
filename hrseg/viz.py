"""Plots for segmentation: palette colouring, overlays, image/GT/prediction panels, evaluation figures.

Figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas, never through pyplot, so they work
headless, in loops and in DataLoader-free callbacks without leaking global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hrseg.palette import voc_colormap

__all__ = [
    "colorize",
    "denormalize_image",
    "fallback_palette",
    "figure_to_array",
    "main",
    "overlay",
    "plot_confusion_matrix",
    "plot_learning_curve",
    "plot_panels",
    "plot_per_class_iou",
    "read_scalars",
    "run_report",
    "save_evaluation_plots",
]

ArrayLike = np.ndarray | torch.Tensor


def _numpy(x: ArrayLike) -> np.ndarray:
    """Detach a tensor to a CPU numpy array (arrays pass through)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def fallback_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC bit-interleaved colour map: distinct colours for datasets that bring none."""
    return voc_colormap(num_classes)


def colorize(
    mask: ArrayLike,
    palette: Sequence[Sequence[int]],
    ignore_index: int | None = 255,
    ignore_color: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Label map ``(H, W)`` -> RGB uint8 ``(H, W, 3)``; ignore / out-of-range labels get ``ignore_color``."""
    labels = _numpy(mask).astype(np.int64)
    table = np.zeros((len(palette) + 1, 3), dtype=np.uint8)
    if len(palette):
        table[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    table[-1] = np.asarray(ignore_color, dtype=np.uint8)
    bad = (labels < 0) | (labels >= len(palette))
    if ignore_index is not None:
        bad |= labels == ignore_index
    return table[np.where(bad, len(palette), labels)]


def denormalize_image(
    image: ArrayLike, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """Normalized ``(3, H, W)`` float image -> RGB uint8 ``(H, W, 3)`` (ImageNet statistics by default)."""
    arr = _numpy(image).astype(np.float32)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    m = np.asarray(mean if mean is not None else (0.485, 0.456, 0.406), dtype=np.float32)
    s = np.asarray(std if std is not None else (0.229, 0.224, 0.225), dtype=np.float32)
    return (np.clip(arr * s + m, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def overlay(
    image: np.ndarray,
    mask: ArrayLike,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Blend the coloured mask over an RGB uint8 image; ignore pixels show the image unchanged."""
    labels = _numpy(mask)
    color = colorize(labels, palette, ignore_index).astype(np.float32)
    base = np.asarray(image, dtype=np.float32)
    if base.shape[:2] != labels.shape:
        raise ValueError(f"image {base.shape[:2]} and mask {labels.shape} differ in size")
    blend = (1.0 - alpha) * base + alpha * color
    keep = (labels < 0) | (labels >= len(palette))
    if ignore_index is not None:
        keep |= labels == ignore_index
    blend[keep] = base[keep]
    return (blend + 0.5).clip(0, 255).astype(np.uint8)


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an RGB uint8 ``(H, W, 3)`` array (for TensorBoard's ``add_image``)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def plot_panels(
    images: Sequence[np.ndarray],
    masks: Sequence[ArrayLike | None],
    preds: Sequence[ArrayLike],
    palette: Sequence[Sequence[int]],
    ignore_index: int | None = 255,
    names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    panel_size: float = 3.0,
) -> Figure:
    """One row per sample: image, ground truth (when given), prediction, coloured with ``palette``.

    Args:
        images: RGB uint8 ``(H, W, 3)`` arrays (see :func:`denormalize_image`).
        masks: ground-truth label maps or ``None`` entries (prediction-only rows).
        preds: predicted label maps.
        palette: one RGB colour per class.
        ignore_index: label drawn black.
        names: optional row titles.
        class_names: when given, a legend of the classes present is added.
        panel_size: inches per panel.
    """
    rows = len(images)
    if rows == 0:
        raise ValueError("plot_panels needs at least one image")
    has_gt = any(m is not None for m in masks)
    cols = 3 if has_gt else 2
    h, w = np.asarray(images[0]).shape[:2]
    fig = Figure(
        figsize=(panel_size * cols, panel_size * rows * h / max(w, 1) + (0.6 if class_names else 0.2))
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    present: set[int] = set()
    for r in range(rows):
        cells: list[tuple[str, np.ndarray | None]] = [("image", np.asarray(images[r]))]
        if has_gt:
            gt = masks[r]
            cells.append(("ground truth", colorize(gt, palette, ignore_index) if gt is not None else None))
            if gt is not None:
                present |= {int(v) for v in np.unique(_numpy(gt)) if 0 <= v < len(palette)}
        pred = _numpy(preds[r])
        present |= {int(v) for v in np.unique(pred) if 0 <= v < len(palette)}
        cells.append(("prediction", colorize(pred, palette, ignore_index)))
        for c, (title, img) in enumerate(cells):
            ax = axes[r, c]
            ax.axis("off")
            if img is not None:
                ax.imshow(img, interpolation="nearest")
            label = title if names is None else f"{names[r]}: {title}" if c == 0 else title
            ax.set_title(label, fontsize="small")
    if class_names and present:
        from matplotlib.patches import Patch

        handles = [
            Patch(color=np.asarray(palette[c], dtype=float) / 255.0, label=class_names[c])
            for c in sorted(present)
        ]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize="x-small")
    fig.tight_layout(rect=(0, 0.06 if class_names else 0, 1, 1))
    return fig


def plot_confusion_matrix(
    confmat: ArrayLike, class_names: Sequence[str] | None = None, normalize: bool = True
) -> Figure:
    """Confusion matrix heat map (rows: ground truth, columns: prediction), row-normalized by default."""
    cm = _numpy(confmat).astype(np.float64)
    n = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1.0)
    size = max(4.0, 0.45 * n + 2.0)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), names, rotation=90, fontsize="small")
    ax.set_yticks(range(n), names, fontsize="small")
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix" + (" (row-normalized)" if normalize else ""))
    if n <= 25:
        for i in range(n):
            for j in range(n):
                value = cm[i, j]
                if value > 0:
                    text = f"{value:.2f}" if normalize else f"{int(value)}"
                    color = "white" if normalize and value > 0.5 else "black"
                    ax.text(j, i, text, ha="center", va="center", fontsize=5, color=color)
    fig.tight_layout()
    return fig


def plot_per_class_iou(
    iou: ArrayLike,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    title: str | None = None,
) -> Figure:
    """Horizontal bar chart of per-class IoU with the mIoU as a dashed line."""
    values = _numpy(iou).astype(np.float64).reshape(-1)
    n = values.size
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    colors: Any = (
        [np.asarray(c, dtype=float) / 255.0 for c in palette]
        if palette is not None and len(palette) == n
        else None
    )
    fig = Figure(figsize=(7.0, max(3.0, 0.3 * n + 1.2)))
    ax = fig.add_subplot()
    ypos = np.arange(n)
    ax.barh(ypos, values, color=colors, edgecolor="black", linewidth=0.4)
    ax.set_yticks(ypos, names, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("IoU")
    mean = float(values.mean()) if n else 0.0
    ax.axvline(mean, color="black", linestyle="--", linewidth=1.0, label=f"mIoU {mean:.3f}")
    for y, v in zip(ypos, values, strict=True):
        ax.text(min(v + 0.01, 0.9), y, f"{v:.3f}", va="center", fontsize="x-small")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(title or "per-class IoU")
    fig.tight_layout()
    return fig


def save_evaluation_plots(
    out_dir: str | Path,
    confmat: ArrayLike,
    iou: ArrayLike,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    prefix: str = "test",
) -> list[Path]:
    """Write ``<prefix>_confusion_matrix.png`` and ``<prefix>_per_class_iou.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{prefix}_confusion_matrix.png", out / f"{prefix}_per_class_iou.png"]
    plot_confusion_matrix(confmat, class_names).savefig(paths[0], dpi=120)
    plot_per_class_iou(iou, class_names, palette, title=f"{prefix} per-class IoU").savefig(paths[1], dpi=120)
    return paths


# ---------------------------------------------------------------------------------------------- run reports
def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Logged scalars of one run directory: TensorBoard event files or a CSVLogger ``metrics.csv``."""
    run = Path(run_dir)
    series: dict[str, list[tuple[int, float]]] = {}
    events = sorted(run.glob("events.out.tfevents.*"))
    if events:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        for path in events:
            acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
            acc.Reload()
            for tag in acc.Tags().get("scalars", []):
                series.setdefault(tag, []).extend((e.step, float(e.value)) for e in acc.Scalars(tag))
    elif (run / "metrics.csv").is_file():
        import csv

        with open(run / "metrics.csv") as fh:
            for row in csv.DictReader(fh):
                for key, value in row.items():
                    if key not in ("step", "epoch") and value:
                        series.setdefault(key, []).append((int(row["step"]), float(value)))
    else:
        raise FileNotFoundError(f"{run}: no TensorBoard events and no metrics.csv")
    return {k: sorted(v) for k, v in series.items()}


def plot_learning_curve(scalars: dict[str, list[tuple[int, float]]], title: str | None = None) -> Figure:
    """Training loss and validation mIoU / pixel accuracy against the optimizer step."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    if "train/loss" in scalars:
        steps, values = zip(*scalars["train/loss"], strict=True)
        ax.plot(steps, values, color="tab:gray", linewidth=1.0, label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax2 = ax.twinx()
    curves = (("val/mIoU", "tab:blue"), ("val/mIoU_present", "tab:orange"), ("val/pixel_acc", "tab:green"))
    for key, color in curves:
        if key in scalars:
            steps, values = zip(*scalars[key], strict=True)
            ax2.plot(steps, values, marker="o", markersize=3, color=color, label=key)
    ax2.set_ylim(0.0, 1.0)
    ax2.set_ylabel("validation")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax2.legend(handles, labels, loc="lower right", bbox_to_anchor=(0.99, 0.12), fontsize="small")
    if "val/mIoU" in scalars:
        final = f"final val mIoU {scalars['val/mIoU'][-1][1]:.3f}"
        if "val/mIoU_present" in scalars:
            final += f", over the classes present {scalars['val/mIoU_present'][-1][1]:.3f}"
        ax.set_title(title or f"learning curve ({final})")
    elif title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _pick_checkpoint(run: Path) -> Path:
    """The run's best checkpoint (``best-*.ckpt``), else ``last.ckpt``."""
    folder = run / "checkpoints"
    best = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise FileNotFoundError(f"{folder}: no best-*.ckpt or last.ckpt")


def run_report(
    run_dir: str | Path, out_dir: str | Path, num_images: int = 4, checkpoint: str | Path | None = None
) -> list[Path]:
    """Figures of a finished ``hrseg fit`` run: validation panels and the learning curve.

    Reads the run's ``config.yaml`` (saved by the CLI) to rebuild its DataModule, predicts the first
    ``num_images`` validation images with the best checkpoint and writes ``predictions.png`` and
    ``learning_curve.png`` into ``out_dir``.
    """
    import yaml
    from lightning.pytorch.cli import instantiate_class

    from hrseg.task import SegmentationTask

    run = Path(run_dir)
    config_path = run / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not found (is {run} a run directory of `hrseg fit`?)")
    data_cfg = yaml.safe_load(config_path.read_text())["data"]
    dm = instantiate_class(
        (), {"class_path": data_cfg["class_path"], "init_args": data_cfg.get("init_args") or {}}
    )
    dm.setup("validate")
    ckpt = Path(checkpoint) if checkpoint is not None else _pick_checkpoint(run)
    task = SegmentationTask.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    items = [dm.val_dataset[i] for i in range(min(num_images, len(dm.val_dataset)))]
    images, masks, preds, names = [], [], [], []
    with torch.no_grad():
        for item in items:
            mask = item["mask"]
            logits = task.predict_logits(item["image"].unsqueeze(0), mask.shape[-2:])
            image = item["image"]
            if image.shape[-2:] != mask.shape[-2:]:
                image = torch.nn.functional.interpolate(image[None], size=mask.shape[-2:], mode="bilinear")[0]
            images.append(denormalize_image(image, task.hparams.mean, task.hparams.std))
            masks.append(mask)
            preds.append(logits.argmax(1)[0])
            names.append(str(item.get("name", "")))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    panels = plot_panels(
        images, masks, preds, task.palette, task.hparams.ignore_index, names, task.class_names
    )
    paths = [out / "predictions.png", out / "learning_curve.png"]
    panels.savefig(paths[0], dpi=110)
    plot_learning_curve(read_scalars(run)).savefig(paths[1], dpi=110)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hrseg.viz RUN_DIR [--out DIR]``: write the README figures of a demo (or any) run."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m hrseg.viz",
        description="Draw validation predictions (image / ground truth / prediction) and the learning curve "
        "of a finished `hrseg fit` run, e.g. runs/demo/lightning_logs/version_0.",
    )
    parser.add_argument("run_dir", help="the run's log directory (holds config.yaml and checkpoints/)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/figures)")
    parser.add_argument("--num-images", type=int, default=4, help="validation images to show")
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default: best, else last)")
    args = parser.parse_args(argv)
    out = args.out or str(Path(args.run_dir) / "figures")
    for path in run_report(args.run_dir, out, args.num_images, args.checkpoint):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
