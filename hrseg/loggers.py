"""Images to any Lightning logger: one call that uses each logger's own image API.

Scalars reach every logger through ``LightningModule.log``; images have no common API. :func:`log_image`
sends a figure (or an RGB array, or a PNG file) to each logger of a trainer:

- TensorBoard (and any logger whose ``experiment`` has ``add_image``): ``add_image(tag, HWC array, step)``,
  as hrseg always did;
- CSV: a PNG file in the run folder, ``<log_dir>/images/<tag>_step<step>.png``;
- Weights & Biases: ``WandbLogger.log_image(key=tag, images=[array], step=step)``;
- MLflow: ``MlflowClient.log_image(run_id, array, artifact_file="images/<tag>_step<step>.png")``.

Loggers without an image API are skipped. The task's validation panels and its test confusion-matrix and
per-class IoU plots go through here. The logger packages (wandb, mlflow) are only touched through the
Lightning logger objects the user configured.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, WandbLogger
from matplotlib.figure import Figure

from hrseg.viz import figure_to_array

__all__ = ["image_file_name", "log_image"]


def image_file_name(tag: str, step: int) -> str:
    """``val/predictions`` at step 12 -> ``val_predictions_step000012.png`` (file loggers, artifacts)."""
    return f"{re.sub(r'[^0-9A-Za-z_.-]+', '_', tag).strip('_')}_step{step:06d}.png"


def _as_array(image: Figure | np.ndarray | str | Path) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` array of a figure, an array or a PNG file."""
    if isinstance(image, Figure):
        return figure_to_array(image)
    if isinstance(image, str | Path):
        from PIL import Image

        with Image.open(image) as img:
            return np.asarray(img.convert("RGB")).copy()
    return np.asarray(image)


def log_image(
    loggers: Iterable[Logger],
    tag: str,
    image: Figure | np.ndarray | str | Path,
    step: int,
    written_to: str | Path | None = None,
) -> list[str]:
    """Send one image to every logger through that logger's own call.

    Args:
        loggers: ``trainer.loggers``.
        tag: the image's name, e.g. ``val/predictions``.
        image: a matplotlib figure, an RGB uint8 ``(H, W, 3)`` array or a PNG file.
        step: the global step.
        written_to: a folder where this image already lies as a file (e.g. the test plots in the run
            folder): a CSV logger writing into that same folder is skipped.

    Returns:
        The class names of the loggers that received the image.
    """
    array: np.ndarray | None = None
    reached: list[str] = []
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            folder = Path(logger.log_dir)
            if written_to is not None and folder.resolve() == Path(written_to).resolve():
                continue
            path = folder / "images" / image_file_name(tag, step)
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(image, Figure):
                image.savefig(path, dpi=100)
            else:
                from PIL import Image

                Image.fromarray(_as_array(image)).save(path)
        else:
            array = _as_array(image) if array is None else array
            if isinstance(logger, WandbLogger):
                logger.log_image(key=tag, images=[array], step=step)
            elif isinstance(logger, MLFlowLogger):
                run_id: Any = logger.run_id
                artifact = f"images/{image_file_name(tag, step)}"
                logger.experiment.log_image(run_id, array, artifact_file=artifact)
            else:
                experiment: Any = getattr(logger, "experiment", None)
                if not hasattr(experiment, "add_image"):
                    continue
                experiment.add_image(tag, array, global_step=step, dataformats="HWC")
        reached.append(type(logger).__name__)
    return reached
