"""Figures for segmentation: image / ground truth / prediction panels, evaluation plots, learning curves.

The one place hrseg draws with matplotlib (the DataModules' ``plot``, the task's TensorBoard panels, the test
plots and ``hrseg report`` all call it). Colours come from :mod:`hrseg.colors`. Figures are built with
:class:`matplotlib.figure.Figure` on the Agg canvas, never through pyplot, so they work headless, in loops and
in callbacks without leaking global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hrseg.colors import colorize
from hrseg.metadata import IGNORE_INDEX

__all__ = [
    "figure_to_array",
    "plot_confusion_matrix",
    "plot_learning_curve",
    "plot_panels",
    "plot_per_class_iou",
    "read_scalars",
    "save_evaluation_plots",
]


def _numpy(x: Any) -> np.ndarray:
    """A CPU numpy array from an array or a tensor."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _rgb_unit(color: Sequence[int]) -> tuple[float, float, float]:
    """An RGB colour in 0..255 as matplotlib's 0..1 floats."""
    r, g, b = (float(v) / 255.0 for v in color)
    return r, g, b


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an RGB uint8 ``(H, W, 3)`` array (for TensorBoard's ``add_image``)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def plot_panels(
    images: Sequence[np.ndarray],
    masks: Sequence[Any | None] | None,
    preds: Sequence[Any | None] | None,
    palette: Sequence[Sequence[int]],
    ignore_index: int | None = IGNORE_INDEX,
    names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    panel_size: float = 3.0,
    title: str | None = None,
) -> Figure:
    """Draw one row per sample: the image, its ground truth and its prediction, coloured with ``palette``.

    A column is drawn when any row has an entry for it (``None`` entries leave that cell empty).

    Args:
        images: RGB uint8 ``(H, W, 3)`` arrays (see :func:`hrseg.colors.denormalize`).
        masks: ground-truth label maps (or ``None``: no ground-truth column).
        preds: predicted label maps (or ``None``: no prediction column).
        palette: one RGB colour per class.
        ignore_index: label drawn black.
        names: optional row titles.
        class_names: when given, a legend of the classes present is added.
        panel_size: inches per panel.
        title: figure title.

    Returns:
        The figure (not registered with pyplot).

    Raises:
        ValueError: no images, or the lists differ in length.
    """
    rows = len(images)
    if rows == 0:
        raise ValueError("plot_panels needs at least one image")
    columns: list[tuple[str, Sequence[Any | None]]] = []
    for label, maps in (("ground truth", masks), ("prediction", preds)):
        if maps is None or all(m is None for m in maps):
            continue
        if len(maps) != rows:
            raise ValueError(f"{len(maps)} {label} maps for {rows} images")
        columns.append((label, maps))
    cols = 1 + len(columns)
    h, w = np.asarray(images[0]).shape[:2]
    fig = Figure(
        figsize=(panel_size * cols, panel_size * rows * h / max(w, 1) + (0.6 if class_names else 0.2))
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    present: set[int] = set()
    for r in range(rows):
        cells: list[tuple[str, np.ndarray | None]] = [("image", np.asarray(images[r]))]
        for label, maps in columns:
            labels = maps[r]
            if labels is None:
                cells.append((label, None))
                continue
            arr = _numpy(labels)
            present |= {int(v) for v in np.unique(arr) if 0 <= v < len(palette) and v != ignore_index}
            cells.append((label, colorize(arr, palette, ignore_index)))
        for c, (label, img) in enumerate(cells):
            ax = axes[r, c]
            ax.axis("off")
            if img is not None:
                ax.imshow(img, interpolation="nearest")
            ax.set_title(f"{names[r]}: {label}" if names is not None and c == 0 else label, fontsize="small")
    if class_names and present:
        from matplotlib.patches import Patch

        handles = [Patch(color=_rgb_unit(palette[c]), label=class_names[c]) for c in sorted(present)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize="x-small")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if class_names else 0, 1, 1))
    return fig


def plot_confusion_matrix(
    confmat: Any, class_names: Sequence[str] | None = None, normalize: bool = True
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
    iou: Any,
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
        ax.text(min(v + 0.01, 0.9), float(y), f"{v:.3f}", va="center", fontsize="x-small")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(title or "per-class IoU")
    fig.tight_layout()
    return fig


def save_evaluation_plots(
    out_dir: str | Path,
    confmat: Any,
    iou: Any,
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


# ---------------------------------------------------------------------------------------------- run curves
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
