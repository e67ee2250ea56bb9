"""Lightning callbacks the hrseg CLI installs: prediction writing and a preemption-safe ``last.ckpt``.

- :class:`PredictionWriter` (behind ``hrseg predict --config``) writes the same files as
  :func:`hrseg.deploy.predict_folder` (see :mod:`hrseg.deploy.writer`);
- :class:`LastCheckpoint` keeps ``last.ckpt`` fresh (every validation, every N steps or minutes, on SIGTERM).

Checkpoints are written atomically by :class:`hrseg.checkpoint_io.AtomicCheckpointIO` (a trainer plugin).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from hrseg.deploy.writer import output_paths, outputs_exist, write_prediction
from hrseg.metadata import default_palette

__all__ = ["LastCheckpoint", "PredictionWriter"]


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
            :func:`hrseg.deploy.write_prediction`.
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
        """The task's class colours (its defaults filled), else the DataModule's, else the default map."""
        labels = getattr(pl_module, "labels", None) or getattr(
            getattr(trainer, "datamodule", None), "labels", None
        )
        if labels is None:  # neither knows the classes: colour every 8-bit label the model may predict
            return list(default_palette(256))
        return list(labels.palette)

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


class LastCheckpoint(ModelCheckpoint):
    """The ``last.ckpt`` callback: at every validation, every N steps / minutes, and on SIGTERM.

    Lightning's ``ModelCheckpoint`` makes ``every_n_train_steps``, ``train_time_interval`` and
    ``every_n_epochs`` mutually exclusive; this one keeps the per-epoch save when a step or time interval is
    set, so ``last.ckpt`` is fresh both mid-epoch and after each validation.

    Args:
        save_on_sigterm: when the process receives SIGTERM, Lightning finishes the current step and stops;
            this callback then writes ``last.ckpt`` (the loader position included), so
            ``--ckpt_path last`` resumes exactly there.

    The other arguments are :class:`~lightning.pytorch.callbacks.ModelCheckpoint`'s.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = "last",
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
        save_on_sigterm: bool = True,
    ) -> None:
        # every argument spelled out (no **kwargs): LightningCLI builds the `--last_checkpoint.*` options
        # from this signature
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            verbose=verbose,
            save_last=save_last,
            save_top_k=save_top_k,
            save_on_exception=save_on_exception,
            save_weights_only=save_weights_only,
            mode=mode,
            auto_insert_metric_name=auto_insert_metric_name,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end,
            enable_version_counter=enable_version_counter,
        )
        if (every_n_train_steps or train_time_interval is not None) and every_n_epochs is None:
            self._every_n_epochs = 1  # also after every validation / epoch
        self.save_on_sigterm = save_on_sigterm

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """On SIGTERM during fit, write ``last.ckpt`` (unless this step was saved already)."""
        super().on_exception(trainer, pl_module, exception)
        if not (self.save_on_sigterm and isinstance(exception, SIGTERMException)):
            return
        if (
            trainer.state.fn != "fit"
            or trainer.sanity_checking
            or bool(getattr(trainer, "fast_dev_run", False))
        ):
            return
        if self._last_global_step_saved == trainer.global_step and self.best_model_path:
            path = self.best_model_path
        else:
            path = self.best_model_path or self.format_checkpoint_name(self._monitor_candidates(trainer))
            self._save_checkpoint(trainer, path)
            self.best_model_path = path
        trainer.print(f"SIGTERM: training stopped at step {trainer.global_step}; checkpoint: {path}")
