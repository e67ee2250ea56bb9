"""Writing predictions: a Lightning ``PredictionWriter`` and the resumable ``predict_folder`` tool.

Both write the same files per image ``<name>`` into the output folder:

- ``<name>_trainIds.png``: the label map (8-bit, 16-bit when there are more than 255 classes);
- ``<name>_color.png``: the label map in the class palette (optional, on by default);
- ``<name>_overlay.png``: the palette blended over the input image (optional).

Files are written to a temporary name and renamed, so an interrupted run never leaves a truncated PNG that a
resumed run would mistake for a finished one; with ``skip_existing`` an image whose outputs all exist is
not predicted again (``predict_folder`` and the writer's ``setup`` drop it before any compute).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from hrseg.inference import Segmenter, colorize_mask, load_image, to_image_tensor

__all__ = [
    "PredictSummary",
    "PredictionWriter",
    "main",
    "output_paths",
    "predict_folder",
    "write_prediction",
]


def output_paths(
    output_dir: str | Path, name: str, write_color: bool = True, write_overlay: bool = False
) -> dict[str, Path]:
    """The files written for image ``name`` (``trainIds`` always; ``color`` / ``overlay`` when asked)."""
    root = Path(output_dir)
    paths = {"trainIds": root / f"{name}_trainIds.png"}
    if write_color:
        paths["color"] = root / f"{name}_color.png"
    if write_overlay:
        paths["overlay"] = root / f"{name}_overlay.png"
    return paths


def _is_done(paths: dict[str, Path]) -> bool:
    return all(p.is_file() and p.stat().st_size > 0 for p in paths.values())


def _save_png(image: Image.Image, path: Path) -> None:
    """Write atomically: a crash mid-write leaves no file that looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _label_image(mask: np.ndarray) -> Image.Image:
    """8-bit PNG for ids <= 255 (incl. the 255 ignore id), 16-bit otherwise."""
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) > 65535):
        raise ValueError(f"label ids out of PNG range: [{int(mask.min())}, {int(mask.max())}]")
    if mask.size == 0 or int(mask.max()) <= 255:
        return Image.fromarray(mask.astype(np.uint8))
    return Image.fromarray(mask.astype(np.uint16))


def write_prediction(
    output_dir: str | Path,
    name: str,
    mask: np.ndarray | torch.Tensor,
    palette: Sequence[Sequence[int]],
    image: Any = None,
    write_color: bool = True,
    write_overlay: bool = False,
    overlay_alpha: float = 0.5,
) -> dict[str, Path]:
    """Write the label / colour / overlay PNGs of one prediction; returns the written paths.

    Args:
        output_dir: destination folder (created).
        name: file stem; may contain ``/`` to write into sub-folders.
        mask: ``(H, W)`` integer label map.
        palette: one RGB colour per class.
        image: the input image (path, PIL, array or tensor in [0, 1]); needed for the overlay. Resized to the
            mask when their sizes differ (e.g. a DataModule ``eval_size``).
        write_color: write ``<name>_color.png``.
        write_overlay: write ``<name>_overlay.png``.
        overlay_alpha: weight of the colours in the overlay.
    """
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected an (H, W) label map, got shape {arr.shape}")
    paths = output_paths(output_dir, name, write_color, write_overlay)
    _save_png(_label_image(arr), paths["trainIds"])
    color = colorize_mask(arr, palette) if (write_color or write_overlay) else None
    if write_color:
        assert color is not None
        _save_png(Image.fromarray(color), paths["color"])
    if write_overlay:
        assert color is not None
        if image is None:
            raise ValueError(f"{name}: the overlay needs the input image")
        x, _ = to_image_tensor(image, 3)
        if tuple(x.shape[-2:]) != arr.shape:
            x = torch.nn.functional.interpolate(x, size=arr.shape, mode="bilinear", align_corners=False)
        rgb = x[0].permute(1, 2, 0).numpy() * 255.0
        blend = (1.0 - overlay_alpha) * rgb + overlay_alpha * color.astype(np.float32)
        _save_png(Image.fromarray(blend.round().clip(0, 255).astype(np.uint8)), paths["overlay"])
    return paths


class PredictionWriter(BasePredictionWriter):
    """Write ``hrseg predict`` outputs per batch (label ids, palette colours, optional overlays).

    Expects ``predict_step`` to return ``{"pred": int64 (B, H, W), "name": [...], "path": [...]}``. With
    ``skip_existing``, images whose outputs are all present are dropped from the predict dataset in
    :meth:`setup` (when it lists ``samples`` with a ``name``, as hrseg's datasets do), so a resumed run does
    no work for them; otherwise they are still predicted but not rewritten.

    Use with LightningCLI, e.g.
    ``hrseg predict --config demo --ckpt_path best.ckpt --data.predict_path images/
    --trainer.callbacks+=hrseg.callbacks.PredictionWriter --trainer.callbacks.output_dir out/``.

    Args:
        output_dir: destination folder.
        write_color: also write ``<name>_color.png``.
        write_overlay: also write ``<name>_overlay.png`` (reads the input image again from ``path``).
        skip_existing: resume: skip images whose outputs exist.
        overlay_alpha: weight of the colours in the overlay.
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        write_color: bool = True,
        write_overlay: bool = False,
        skip_existing: bool = True,
        overlay_alpha: float = 0.5,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.write_color = write_color
        self.write_overlay = write_overlay
        self.skip_existing = skip_existing
        self.overlay_alpha = overlay_alpha
        self.written = 0
        self.skipped = 0

    def _paths(self, name: str) -> dict[str, Path]:
        return output_paths(self.output_dir, name, self.write_color, self.write_overlay)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Drop already-finished images from the predict dataset before any batch is computed."""
        if stage != "predict" or not self.skip_existing:
            return
        dm = getattr(trainer, "datamodule", None)
        dataset = getattr(dm, "predict_dataset", None)
        samples = getattr(dataset, "samples", None)
        if not isinstance(samples, list) or not all(hasattr(s, "name") for s in samples):
            return
        todo = [s for s in samples if not _is_done(self._paths(str(s.name)))]
        self.skipped += len(samples) - len(todo)
        if len(todo) != len(samples):
            dataset.samples = todo  # type: ignore[union-attr]
            trainer.print(
                f"PredictionWriter: {len(samples) - len(todo)} of {len(samples)} images already have outputs "
                f"in {self.output_dir}; predicting {len(todo)}"
            )

    def _palette(self, trainer: Trainer, pl_module: LightningModule) -> list[Sequence[int]]:
        palette = getattr(pl_module, "palette", None)
        if palette is None:
            palette = getattr(getattr(trainer, "datamodule", None), "palette", None)
        if palette is None:
            from hrseg.inference import _default_palette

            palette = _default_palette(int(getattr(pl_module.hparams, "num_classes", 256)))
        return list(palette)

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Write every image of the batch (skipping finished ones when ``skip_existing``)."""
        if not isinstance(prediction, dict) or "pred" not in prediction:
            raise TypeError("PredictionWriter expects predict_step to return {'pred', 'name', 'path'}")
        preds = prediction["pred"]
        names = list(prediction.get("name") or [])
        paths = list(prediction.get("path") or [None] * len(names))
        if len(names) != len(preds):
            start = batch_idx * len(preds)
            names = [f"{dataloader_idx}_{start + i:06d}" for i in range(len(preds))]
            paths = [None] * len(preds)
        palette = self._palette(trainer, pl_module)
        for pred, name, path in zip(preds, names, paths, strict=True):
            if self.skip_existing and _is_done(self._paths(str(name))):
                self.skipped += 1
                continue
            write_prediction(
                self.output_dir,
                str(name),
                pred,
                palette,
                image=path,
                write_color=self.write_color,
                write_overlay=self.write_overlay,
                overlay_alpha=self.overlay_alpha,
            )
            self.written += 1


@dataclass
class PredictSummary:
    """What ``predict_folder`` did: names written and names skipped because their outputs existed."""

    output_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{len(self.written)} images predicted, {len(self.skipped)} skipped (outputs existed) "
            f"-> {self.output_dir}"
        )


def _resolve_inputs(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Folder, glob or file (same rules as the DataModules' ``predict_path``), or an explicit list."""
    if isinstance(inputs, str | Path):
        from hrseg.data.base import resolve_predict_inputs

        return resolve_predict_inputs(str(inputs))
    files = [Path(p) for p in inputs]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"input images not found: {', '.join(missing[:5])}")
    return files


def predict_folder(
    checkpoint: str | Path | Segmenter,
    inputs: str | Path | Iterable[str | Path],
    output_dir: str | Path,
    write_color: bool = True,
    write_overlay: bool = False,
    skip_existing: bool = True,
    progress: bool = True,
    overlay_alpha: float = 0.5,
    **segmenter_options: Any,
) -> PredictSummary:
    """Predict every image of a folder / glob / list and write the PNGs; resumable.

    Args:
        checkpoint: Lightning ``.ckpt``, exported bundle, ``.onnx`` or ``.pt2``, or a :class:`Segmenter`.
        inputs: a folder, a glob pattern (``"imgs/**/*.jpg"``), one image file, or a list of files.
        output_dir: destination folder.
        write_color: write ``<name>_color.png``.
        write_overlay: write ``<name>_overlay.png``.
        skip_existing: do not recompute images whose outputs all exist (resume an interrupted run).
        progress: show a tqdm progress bar.
        overlay_alpha: weight of the colours in the overlay.
        **segmenter_options: ``Segmenter`` options (device, mode, window, stride, scales, flip, ...).

    Returns:
        :class:`PredictSummary` with the names written and skipped.

    Raises:
        ValueError: two inputs share a file stem (their outputs would overwrite each other).
    """
    files = _resolve_inputs(inputs)
    by_name: dict[str, Path] = {}
    for f in files:
        if f.stem in by_name:
            raise ValueError(f"two inputs share the name {f.stem!r}: {by_name[f.stem]} and {f}")
        by_name[f.stem] = f
    out = Path(output_dir)
    summary = PredictSummary(out)
    todo = []
    for name, f in by_name.items():
        if skip_existing and _is_done(output_paths(out, name, write_color, write_overlay)):
            summary.skipped.append(name)
        else:
            todo.append((name, f))
    if not todo:
        if progress:
            print(f"all {len(files)} images already have outputs in {out}; nothing to do", file=sys.stderr)
        return summary
    seg = (
        checkpoint
        if isinstance(checkpoint, Segmenter)
        else Segmenter.from_checkpoint(checkpoint, **segmenter_options)
    )
    iterator: Iterable[tuple[str, Path]] = todo
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(todo, desc="predict", unit="img", initial=0, total=len(todo))
        if summary.skipped:
            print(f"skipping {len(summary.skipped)} images whose outputs exist in {out}", file=sys.stderr)
    for name, f in iterator:
        image = load_image(f)
        mask = seg.predict(image)
        write_prediction(out, name, mask, seg.palette, image, write_color, write_overlay, overlay_alpha)
        summary.written.append(name)
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hrseg predict",
        description="Predict a folder or glob of images with a checkpoint; writes label, colour and overlay "
        "PNGs and skips images whose outputs already exist (resumable).",
    )
    p.add_argument("--ckpt", required=True, help="Lightning .ckpt, safetensors bundle, .onnx or .pt2")
    p.add_argument("--input", required=True, help="image folder, glob pattern (quote it) or one image")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png")
    p.add_argument("--no-color", action="store_true", help="do not write <name>_color.png")
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    p.add_argument("--mode", default="whole", choices=["whole", "slide", "multiscale"], help="inference mode")
    p.add_argument("--window", type=int, nargs=2, default=None, metavar=("H", "W"), help="sliding window")
    p.add_argument("--stride", type=int, nargs=2, default=None, metavar=("H", "W"), help="window stride")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="test scales, e.g. 0.75 1.0 1.25")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, mps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone ``hrseg predict --ckpt X --input DIR --output OUT`` (no config file needed)."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        summary = predict_folder(
            args.ckpt,
            args.input,
            args.output,
            write_color=not args.no_color,
            write_overlay=args.overlay,
            skip_existing=not args.overwrite,
            progress=not args.no_progress,
            device=args.device,
            mode=args.mode,
            window=args.window,
            stride=args.stride,
            scales=args.scales,
            flip=args.flip,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"hrseg predict: {err}", file=sys.stderr)
        return 1
    print(summary)
    return 0
