"""``Segmenter``: a trained model on files and arrays, from preprocessing to label maps and colours."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hrseg.colors import colorize, overlay
from hrseg.deploy.backends import build_backend, resolve_backend
from hrseg.deploy.stream import StreamOptions, predict_raster, stream_protocol
from hrseg.eval_protocol import EvalProtocol
from hrseg.images import ImageInput, to_image_tensor
from hrseg.inference.device import resolve_device
from hrseg.inference.loading import load_checkpoint
from hrseg.inference.protocol import Output, class_argmax, infer
from hrseg.inference.runtime import RuntimeModel
from hrseg.metadata import ModelMeta
from hrseg.rasters import parse_bands

__all__ = ["Segmenter"]


class Segmenter:
    """Run a trained model on files and arrays: preprocessing, the inference protocol, label maps, colours.

    Args:
        model: the network (a plain ``nn.Module``; prepared for fast inference unless ``fast=False``).
        meta: architecture and class metadata (:class:`ModelMeta`).
        device: where to run: ``"auto"`` (default: CUDA when available, else MPS where it works, else CPU),
            ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... (:func:`hrseg.inference.device.resolve_device`).
        protocol: the evaluation protocol (:class:`~hrseg.eval_protocol.EvalProtocol`); None: the one the
            model was validated with (``meta.eval_protocol``); a mapping: that protocol with these fields
            changed, e.g. ``{"flip": True}``.
        batch_windows: sliding windows per forward (bounds memory; does not change the result).
        fast: fold BN and use channels_last (outputs equal the plain model to ~1e-5).
        compile: additionally ``torch.compile`` the model (the same as ``backend="compile"``).
        backend: ``"torch"`` (the fast path), ``"compile"``, ``"onnxruntime"``, ``"openvino"`` or ``"auto"``
            (:mod:`hrseg.deploy.backends`: non-torch backends export once into a cache folder).
        precision: ``"fp32"``, ``"bf16"`` / ``"fp16"`` (OpenVINO where the CPU runs it, or on CUDA the torch
            fast path cast to it) or ``"int8"`` (static quantization; ONNX Runtime / OpenVINO).
        cache_dir: the export cache (default ``$HRSEG_CACHE`` or ``~/.cache/hrseg``).
        calib_images: int8 calibration images, used when the int8 export is not cached yet (default:
            generated street scenes).

    Example:
        >>> seg = Segmenter.from_checkpoint("runs/demo/best.ckpt")  # doctest: +SKIP
        >>> mask = seg.predict("street.png")                        # (H, W) int64 train ids  # doctest: +SKIP
        >>> Image.fromarray(seg.colorize(mask)).save("street_color.png")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        meta: ModelMeta,
        device: str | torch.device = "auto",
        protocol: EvalProtocol | Mapping[str, Any] | None = None,
        batch_windows: int = 4,
        fast: bool = True,
        compile: bool = False,
        backend: str = "torch",
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        calib_images: Iterable[Any] | None = None,
    ) -> None:
        self.meta = meta
        self.device = resolve_device(device)
        if protocol is None or isinstance(protocol, EvalProtocol):
            self.protocol = protocol or meta.eval_protocol
        else:
            self.protocol = meta.eval_protocol.replace(**protocol)
        if batch_windows < 1:
            raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")
        self.batch_windows = batch_windows
        model = model.to(self.device).eval()
        self.in_channels = int(getattr(model, "in_channels", 3) or 3)
        # smp encoder-decoders need inputs divisible by their output stride; HRNetV2 takes any size.
        self.size_divisor = int(getattr(model, "size_divisor", 1))
        self.compile_seconds: float | None = None
        self.model: nn.Module = model
        if compile and backend == "torch":
            backend = "compile"
        if isinstance(model, RuntimeModel):  # an exported graph: already what it runs as
            self.backend, self.precision = model.backend, model.precision
        else:
            self.backend = resolve_backend(backend, self.device)
            self.precision = precision
            compile = self.backend == "compile"
            if fast or compile or self.backend not in ("torch",) or precision != "fp32":
                self.model = build_backend(
                    model,
                    meta,
                    self.backend,
                    precision,
                    self.device,
                    cache_dir=cache_dir,
                    calib_images=calib_images,
                    fast=fast,
                )
        self._time_first_call = compile

    @classmethod
    def from_checkpoint(cls, path: str | Path, trusted: bool = False, **kwargs: Any) -> Segmenter:
        """Load a Lightning ``.ckpt``, a safetensors bundle or an exported ``.onnx`` / ``.pt2``.

        See :func:`load_checkpoint` for the accepted paths.

        ``kwargs`` go to the constructor (device, protocol, backend, precision, ...); without ``protocol``
        the model predicts with the protocol stored in the file (the one it was validated with).
        """
        kwargs["device"] = resolve_device(kwargs.get("device", "auto"))
        model, meta = load_checkpoint(path, trusted=trusted, device=kwargs["device"])
        return cls(model, meta, **kwargs)

    @classmethod
    def from_weights(
        cls,
        weights: str | Path,
        model: str,
        classes: str | Sequence[str] = "cityscapes",
        align_corners: bool = False,
        model_options: Mapping[str, Any] | None = None,
        trusted: bool = False,
        **kwargs: Any,
    ) -> Segmenter:
        """A model from released weights (official ``.pth``, state dict, safetensors, hub) and what they are.

        Args:
            weights: the file or hub reference, e.g. the official HRNet-OCR Cityscapes checkpoint
                ``hrnet_ocr_cs_8162_torch11.pth`` or HRNetV2-W48's
                ``hrnet_w48_cityscapes_cls19_1024x2048_trainset.pth``.
            model: the architecture (``hrnetv2_w48_ocr``, ``hrnetv2_w48``, ...).
            classes: the label set its head predicts: ``"cityscapes"``, ``"voc"`` or a list of names.
            align_corners: True for the official HRNet-OCR branch's checkpoints (``*_torch11.pth``).
            model_options: further ``build_model`` options.
            trusted: allow pickled Python objects in the file (only for files you trust).
            **kwargs: constructor options (device, protocol, backend, precision, ...).

        Raises:
            hrseg.checkpoint.CheckpointError: the weights do not fit, or leave the head uninitialised.
        """
        from hrseg.inference.released import load_released

        protocol = kwargs.get("protocol")
        network, meta = load_released(
            weights,
            model,
            classes,
            align_corners=align_corners,
            model_options=model_options,
            eval_protocol=protocol if isinstance(protocol, EvalProtocol) else None,
            trusted=trusted,
        )
        return cls(network, meta, **kwargs)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, revision: str | None = None, **kwargs: Any
    ) -> Segmenter:
        """Load a saved hrseg model: a folder (``config.json`` + ``model.safetensors``) or a hub repository.

        The folder is what ``hrseg export --format hub`` writes (and :func:`hrseg.hub.push_to_hub`
        publishes); a repository is downloaded once into the Hugging Face cache (``HF_HUB_OFFLINE=1``: the
        cache only). A local folder of that name wins over the hub.

        Args:
            name_or_path: a model folder, ``"org/name"`` or ``"hf-hub:org/name[@revision]"``.
            revision: pin a branch, tag or commit of a hub repository.
            **kwargs: constructor options (device, protocol, backend, precision, ...).

        Raises:
            hrseg.hub.HubNotFoundError: not cached and the hub is unreachable or off.
            hrseg.checkpoint.CheckpointError: not an hrseg model folder / repository.
        """
        ref = str(name_or_path)
        if revision is not None:
            if Path(ref).expanduser().exists():
                raise ValueError(f"revision={revision!r} applies to hub repositories, not the folder {ref}")
            ref = f"hf-hub:{ref.removeprefix('hf-hub:').split('@')[0]}@{revision}"
        return cls.from_checkpoint(ref, **kwargs)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return self.meta.num_classes

    @property
    def class_names(self) -> list[str]:
        """Class names in train-id order."""
        return list(self.meta.labels.class_names)

    @property
    def palette(self) -> list[list[int]]:
        """One RGB colour per class."""
        return [list(c) for c in self.meta.labels.palette]

    def normalize(self, x: Tensor) -> Tensor:
        """[0, 1] images -> the model's input (:meth:`ModelMeta.normalize`), on the Segmenter's device."""
        return self.meta.normalize(x.to(self.device))

    def probabilities(self, image: ImageInput) -> Tensor:
        """Class probabilities ``(B, C, H, W)`` for any supported input (always batched)."""
        return self._run(image, "probs")

    def _run(self, image: ImageInput, output: Output) -> Tensor:
        x, _ = to_image_tensor(image, self.in_channels)
        if self._time_first_call:  # torch.compile compiles on the first call: report how long that took
            self._time_first_call = False
            start = time.perf_counter()
            out = self._infer(x, output)
            self.compile_seconds = time.perf_counter() - start
            return out
        return self._infer(x, output)

    def _infer(self, x: Tensor, output: Output) -> Tensor:
        return infer(
            self.model,
            self.normalize(x),
            self.protocol,
            batch_windows=self.batch_windows,
            num_classes=self.num_classes,
            align_corners=self.meta.align_corners,
            output=output,
            size_divisor=self.size_divisor,
            flip_permutation=self.meta.labels.flip_permutation(),
            pad_value=self.meta.black_pixel(),
        )

    def predict(self, image: ImageInput, return_probs: bool = False) -> Any:
        """Label map for one image (or a batch tensor).

        Args:
            image: path, PIL image, numpy array or tensor (see :func:`to_image_tensor`); any size.
            return_probs: also return class probabilities ``(C, H, W)``.

        Returns:
            ``(H, W)`` int64 train ids: a numpy array, or a tensor when the input was a tensor (``(B, H, W)``
            for a ``BxCxHxW`` tensor); with ``return_probs`` a ``(mask, probs)`` pair.
        """
        # Passes are averaged as probabilities; a single pass needs no full-resolution softmax for the argmax.
        output: Output = "logits" if self.protocol.single_pass and not return_probs else "probs"
        probs = self._run(image, output)
        mask = class_argmax(probs)
        if not (isinstance(image, Tensor) and image.ndim == 4):
            mask, probs = mask[0], probs[0]
        if isinstance(image, Tensor):
            mask, probs = mask.to(image.device), probs.to(image.device)
            return (mask, probs) if return_probs else mask
        mask_np = mask.cpu().numpy().astype(np.int64)
        return (mask_np, probs.cpu().numpy()) if return_probs else mask_np

    def predict_batch(
        self, images: Iterable[ImageInput], return_probs: bool = False, progress: bool = False
    ) -> list[Any]:
        """Label maps (or ``(mask, probs)`` pairs) for many images of any sizes, in order."""
        items = list(images)
        iterator: Iterable[ImageInput] = items
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(items, desc="predict", unit="img")
        return [self.predict(img, return_probs=return_probs) for img in iterator]

    def predict_raster(
        self,
        path: str | Path,
        output: str | Path,
        bands: Sequence[int] | str | None = None,
        band_rows: int = 1024,
        strip_width: int = 8192,
        overviews: bool = False,
        progress: bool = False,
        resume: bool = True,
    ) -> Path:
        """Predict an image larger than memory window by window into a label GeoTIFF (streamed).

        The label map is the one :meth:`predict` gives with the same window protocol, bit for bit
        (:func:`stream_protocol`: ``slide`` at one scale and ``tile`` stream as they are; ``slide`` at several
        scales runs as ``tile``, ``whole`` gets a 1024x1024 window). Needs ``pip install hrseg[geo]``.

        Args:
            path: the raster (GeoTIFF, TIFF, PNG, JPEG, ...: what GDAL reads).
            output: the label GeoTIFF (``uint8``; nodata 255 where the input has none; the input's CRS,
                transform and size; the palette as colour table).
            bands: 1-based input bands, e.g. ``(3, 2, 1)`` or ``"3,2,1"``; None: an RGB or grey raster's.
            band_rows: rows written (and resumable) at a time.
            strip_width: columns swept at a time (memory vs. repeated windows at strip borders).
            overviews: build internal overviews.
            progress: a progress bar in megapixels.
            resume: go on from an interrupted run's last finished band.

        Returns:
            ``output``.

        Raises:
            hrseg.rasters.RasterError: an unreadable raster or a wrong band (the message names the file).
            ImportError: rasterio is missing.
        """
        protocol, _ = stream_protocol(self.protocol)
        return predict_raster(
            path,
            output,
            self.model,
            self.meta,
            protocol,
            device=self.device,
            batch_windows=self.batch_windows,
            size_divisor=self.size_divisor,
            in_channels=self.in_channels,
            options=StreamOptions(parse_bands(bands), band_rows, strip_width, overviews),
            progress=progress,
            resume=resume,
        )

    def colorize(self, mask: np.ndarray | Tensor) -> np.ndarray:
        """Label map -> RGB uint8 ``(H, W, 3)`` with the palette; ignore / unknown ids are black."""
        return colorize(mask, self.palette, self.meta.labels.ignore_index)

    def overlay(self, image: ImageInput, mask: np.ndarray | Tensor, alpha: float = 0.5) -> np.ndarray:
        """Blend the colourised mask over the image (RGB uint8), e.g. for a quick visual check."""
        x, _ = to_image_tensor(image, 3)
        rgb = x[0].permute(1, 2, 0).cpu().numpy() * 255.0
        return overlay(rgb, mask, self.palette, alpha, self.meta.labels.ignore_index)
