"""Lightning callbacks: the ``PredictionWriter`` behind ``hrseg predict --config``.

It writes the same files as :func:`hrseg.inference.predict_folder` (see :mod:`hrseg.inference.writer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from hrseg.colors import default_palette
from hrseg.inference.writer import output_paths, outputs_exist, write_prediction

__all__ = ["PredictionWriter"]


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
        format: ``"trainids"`` (the files above), ``"cityscapes"`` (``<city>_<seq>_<frame>_labelIds.png``
            for the Cityscapes benchmark) or ``"voc"`` (VOC palette PNGs); see
            :func:`hrseg.inference.write_prediction`.
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        write_color: bool = True,
        write_overlay: bool = False,
        skip_existing: bool = True,
        overlay_alpha: float = 0.5,
        format: Literal["trainids", "cityscapes", "voc"] = "trainids",
    ) -> None:
        super().__init__(write_interval="batch")
        self.format = format
        self.output_dir = Path(output_dir)
        self.write_color = write_color
        self.write_overlay = write_overlay
        self.skip_existing = skip_existing
        self.overlay_alpha = overlay_alpha
        self.written = 0
        self.skipped = 0
        #: inputs that could not be read: name -> message (printed at the end; the command exits 1)
        self.failed: dict[str, str] = {}

    def _paths(self, name: str) -> dict[str, Path]:
        return output_paths(self.output_dir, name, self.write_color, self.write_overlay, self.format)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Drop already-finished images from the predict dataset before any batch is computed."""
        if stage != "predict" or not self.skip_existing:
            return
        dm = getattr(trainer, "datamodule", None)
        dataset = getattr(dm, "predict_dataset", None)
        samples = getattr(dataset, "samples", None)
        if not isinstance(samples, list) or not all(hasattr(s, "name") for s in samples):
            return
        todo = [s for s in samples if not outputs_exist(self._paths(str(s.name)))]
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
            palette = default_palette(int(getattr(pl_module.hparams, "num_classes", 256)))
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
        names = list(prediction.get("name") or [])
        errors = list(prediction.get("error") or [""] * len(names))
        for name, error in zip(names, errors, strict=True):
            if error:
                self.failed[str(name)] = error
        preds = prediction["pred"]
        if preds is None:  # nothing readable in this batch
            return
        paths = list(prediction.get("path") or [None] * len(names))
        if len(names) != len(preds):
            start = batch_idx * len(preds)
            names = [f"{dataloader_idx}_{start + i:06d}" for i in range(len(preds))]
            paths = [None] * len(preds)
        palette = self._palette(trainer, pl_module)
        for pred, name, path in zip(preds, names, paths, strict=True):
            if str(name) in self.failed:
                continue
            if self.skip_existing and outputs_exist(self._paths(str(name))):
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
                format=self.format,
            )
            self.written += 1

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Print what was written, skipped and could not be read (by name) on this process."""
        lines = [
            f"PredictionWriter: {self.written} images written, {self.skipped} skipped (outputs existed) "
            f"-> {self.output_dir}"
        ]
        if self.failed:
            lines.append(f"{len(self.failed)} inputs could not be read:")
            lines += [f"  {message}" for message in self.failed.values()]
        message = "\n".join(lines)
        if trainer.world_size > 1:  # every process reports its own share of the images
            print(f"[rank {trainer.global_rank}] {message}", flush=True)
        else:
            print(message, flush=True)
