"""Writing predictions: the PNG files of one prediction and the resumable ``predict_folder``.

Every prediction path (``predict_folder``, the Lightning ``PredictionWriter``) writes the same files per image
``<name>`` into the output folder:

- ``<name>_trainIds.png``: the label map (8-bit, 16-bit when there are more than 255 classes);
- ``<name>_color.png``: the label map in the class palette (optional, on by default);
- ``<name>_overlay.png``: the palette blended over the input image (optional).

Benchmark formats (``format=``) write one file per image instead, as the evaluation servers expect:

- ``"cityscapes"``: ``<city>_<seq>_<frame>_labelIds.png``, train ids mapped to Cityscapes label ids through
  the official table (the ``cityscapes`` label set of :mod:`hrseg.metadata`), the naming cityscapesScripts'
  evaluator and the test server match (``<city>_<seq>_<frame>*.png``); score a folder with ``hrseg evaluate``;
- ``"voc"``: ``<name>.png``, an indexed (palette) PNG in the PASCAL VOC colour map, as VOC's own masks.

Images larger than memory (and georeferenced rasters) are streamed (:mod:`hrseg.deploy.stream`, ``stream=``)
into one tiled, compressed GeoTIFF each: ``<name>_trainIds.tif``, the class palette as its colour table.

Files are written to a temporary name and renamed, so an interrupted run never leaves a truncated PNG that a
resumed run would mistake for a finished one; with ``skip_existing`` an image whose outputs all exist is not
predicted again.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hrseg.colors import colorize, overlay
from hrseg.deploy.segmenter import Segmenter
from hrseg.deploy.stream import STREAM_ABOVE_MP, StreamOptions, should_stream, stream_protocol
from hrseg.images import ImageFileError, list_images, open_image, save_png, to_image_tensor
from hrseg.metadata import get_label_set, voc_colormap

__all__ = [
    "PREDICTION_FORMATS",
    "PredictSummary",
    "cityscapes_stem",
    "label_image",
    "output_paths",
    "outputs_exist",
    "predict_folder",
    "streamed_output",
    "write_prediction",
]

#: ``trainids`` (label, colour, overlay PNGs), ``cityscapes`` (labelIds for the benchmark), ``voc`` (palette).
PREDICTION_FORMATS = ("trainids", "cityscapes", "voc")
_CITYSCAPES_NAME = re.compile(r"^(?P<stem>.+_\d{6}_\d{6})(?:_.*)?$")


def cityscapes_stem(name: str) -> str:
    """``<city>_<seq>_<frame>`` of a Cityscapes image name (``frankfurt_000000_000294_leftImg8bit``).

    Raises:
        ValueError: the name does not follow the Cityscapes pattern (the benchmark could not match it).
    """
    base = name.rsplit("/", 1)[-1]
    match = _CITYSCAPES_NAME.match(base)
    if match is None:
        raise ValueError(
            f"{name}: not a Cityscapes image name (<city>_<seq>_<frame>_leftImg8bit); the cityscapes format "
            "needs the benchmark's file names"
        )
    return match["stem"]


def output_paths(
    output_dir: str | Path,
    name: str,
    write_color: bool = True,
    write_overlay: bool = False,
    format: str = "trainids",
) -> dict[str, Path]:
    """The files written for image ``name``.

    ``trainids``: ``trainIds`` always, ``color`` / ``overlay`` when asked. ``cityscapes`` / ``voc``: the one
    benchmark file (``labelIds`` / ``voc``); the colour and overlay options do not apply (a second PNG of
    the same ``<city>_<seq>_<frame>`` would make the Cityscapes evaluator's match ambiguous).
    """
    root = Path(output_dir)
    if format == "cityscapes":
        folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        return {"labelIds": root / f"{folder}{cityscapes_stem(name)}_labelIds.png"}
    if format == "voc":
        return {"voc": root / f"{name}.png"}
    if format != "trainids":
        raise ValueError(f"format must be one of {PREDICTION_FORMATS}, got {format!r}")
    paths = {"trainIds": root / f"{name}_trainIds.png"}
    if write_color:
        paths["color"] = root / f"{name}_color.png"
    if write_overlay:
        paths["overlay"] = root / f"{name}_overlay.png"
    return paths


def streamed_output(output_dir: str | Path, name: str) -> Path:
    """The label GeoTIFF of a streamed image ``name``: ``<name>_trainIds.tif``."""
    return Path(output_dir) / f"{name}_trainIds.tif"


def outputs_exist(paths: dict[str, Path]) -> bool:
    """Whether every file of :func:`output_paths` exists and is non-empty (the image needs no work)."""
    return all(p.is_file() and p.stat().st_size > 0 for p in paths.values())


#: what is safe when the disk refuses a prediction (the resume of ``skip_existing``)
_RESUME = (
    "the images finished before it are complete and no partial file is left; once there is room, rerun the "
    "same command: it resumes where it stopped"
)


def label_image(mask: np.ndarray) -> Image.Image:
    """The PNG image of a label map: 8-bit for ids <= 255 (incl. the 255 ignore id), 16-bit otherwise.

    The one encoding of label maps, for the ``_trainIds.png`` files and the label PNG ``hrseg serve`` answers.

    Args:
        mask: (H, W) integer class ids.

    Returns:
        A mode ``L`` (8-bit) or ``I;16`` (16-bit) image of ``mask``.

    Raises:
        ValueError: an id below 0 or above 65535 (no PNG holds it).
    """
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
    format: str = "trainids",
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
        format: ``"trainids"`` (the files above), ``"cityscapes"`` (``<city>_<seq>_<frame>_labelIds.png``,
            Cityscapes train ids 0..18 mapped to label ids) or ``"voc"`` (``<name>.png``, VOC palette PNG).
    """
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected an (H, W) label map, got shape {arr.shape}")
    paths = output_paths(output_dir, name, write_color, write_overlay, format)
    if format == "cityscapes":
        cityscapes = get_label_set("cityscapes")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= cityscapes.num_classes):
            raise ValueError(
                f"{name}: the cityscapes format needs Cityscapes train ids 0..{cityscapes.num_classes - 1}, "
                f"got values up to {int(arr.max())}"
            )
        save_png(Image.fromarray(cityscapes.train_to_id().astype(np.uint8)[arr]), paths["labelIds"], _RESUME)
        return paths
    if format == "voc":
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise ValueError(f"{name}: VOC palette PNGs hold ids 0..255, got {int(arr.max())}")
        img = Image.fromarray(arr.astype(np.uint8))  # "L"; putpalette makes it "P" (indexed)
        img.putpalette([c for rgb in voc_colormap(256) for c in rgb])
        save_png(img, paths["voc"], _RESUME)
        return paths
    save_png(label_image(arr), paths["trainIds"], _RESUME)
    if write_color:
        save_png(Image.fromarray(colorize(arr, palette)), paths["color"], _RESUME)
    if write_overlay:
        if image is None:
            raise ValueError(f"{name}: the overlay needs the input image")
        x, _ = to_image_tensor(image, 3)
        if tuple(x.shape[-2:]) != arr.shape:
            x = torch.nn.functional.interpolate(x, size=arr.shape, mode="bilinear", align_corners=False)
        rgb = x[0].permute(1, 2, 0).numpy() * 255.0
        save_png(Image.fromarray(overlay(rgb, arr, palette, overlay_alpha)), paths["overlay"], _RESUME)
    return paths


@dataclass
class PredictSummary:
    """What ``predict_folder`` did: names written, skipped (outputs existed) and failed (with the reason)."""

    output_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        """One line for the console, then one line per failed input."""
        line = (
            f"{len(self.written)} images predicted, {len(self.skipped)} skipped (outputs existed) "
            f"-> {self.output_dir}"
        )
        if self.failed:
            line += f"\n{len(self.failed)} inputs failed:\n" + "\n".join(
                f"  {e}" for e in self.failed.values()
            )
        return line


def _resolve_inputs(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Folder, glob or file (same rules as the DataModules' ``predict_path``), or an explicit list."""
    if isinstance(inputs, str | Path):
        return list_images(inputs)
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
    format: str = "trainids",
    stream: str = "auto",
    stream_above: float = STREAM_ABOVE_MP,
    stream_options: StreamOptions | None = None,
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
        format: ``"trainids"``, ``"cityscapes"`` or ``"voc"`` (see :func:`write_prediction`).
        stream: ``"auto"`` (stream georeferenced rasters and images above ``stream_above`` megapixels),
            ``"on"`` (every image) or ``"off"``: streamed images become ``<name>_trainIds.tif`` label GeoTIFFs
            (:meth:`Segmenter.predict_raster`), resumed from their last finished band.
        stream_above: the megapixels above which ``auto`` streams.
        stream_options: bands, band rows, strip width, overviews of streamed images.
        **segmenter_options: ``Segmenter`` options (device, mode, window, stride, scales, flip, ...).

    Returns:
        :class:`PredictSummary` with the names written, skipped and failed (unreadable inputs are listed
        there and do not stop the others).

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
    opts = stream_options or StreamOptions()
    todo: list[tuple[str, Path, bool]] = []
    for name, f in by_name.items():
        try:
            streamed, note = should_stream(f, stream, stream_above, opts.bands)
        except (FileNotFoundError, ImageFileError) as err:
            summary.failed[name] = str(err)
            continue
        if note:  # the switch to streaming changes the output file: always said, progress bar or not
            print(f"hrseg predict: {note}", file=sys.stderr)
        if streamed and format != "trainids":
            summary.failed[name] = (
                f"{f}: streamed images are written as label GeoTIFFs (format trainids only)"
            )
            continue
        paths = (
            {"trainIds": streamed_output(out, name)}
            if streamed
            else output_paths(out, name, write_color, write_overlay, format)
        )
        if skip_existing and outputs_exist(paths):
            summary.skipped.append(name)
        else:
            todo.append((name, f, streamed))
    if not todo:
        if progress and not summary.failed:
            print(f"all {len(files)} images already have outputs in {out}; nothing to do", file=sys.stderr)
        return summary
    seg = (
        checkpoint
        if isinstance(checkpoint, Segmenter)
        else Segmenter.from_checkpoint(checkpoint, **segmenter_options)
    )
    if any(s for _, _, s in todo):
        protocol, note = stream_protocol(seg.protocol)
        print(
            f"hrseg predict: streamed protocol {protocol.describe()}" + (f"; {note}" if note else ""),
            file=sys.stderr,
        )
    iterator: Iterable[tuple[str, Path, bool]] = todo
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(todo, desc="predict", unit="img", initial=0, total=len(todo))
        if summary.skipped:
            print(f"skipping {len(summary.skipped)} images whose outputs exist in {out}", file=sys.stderr)
    for name, f, streamed in iterator:
        if streamed:
            try:
                seg.predict_raster(
                    f,
                    streamed_output(out, name),
                    opts.bands,
                    opts.band_rows,
                    opts.strip_width,
                    opts.overviews,
                    progress=progress,
                    resume=skip_existing,
                )
            except (FileNotFoundError, ImageFileError) as err:  # one line, naming the file; the others go on
                summary.failed[name] = str(err)
                continue
            summary.written.append(name)
            continue
        try:
            image = open_image(f)
        except (FileNotFoundError, ImageFileError) as err:  # reported at the end; the other images go on
            summary.failed[name] = str(err)
            continue
        mask = seg.predict(image)
        write_prediction(
            out, name, mask, seg.palette, image, write_color, write_overlay, overlay_alpha, format=format
        )
        summary.written.append(name)
    return summary
