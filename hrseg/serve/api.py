"""The LitServe API of ``hrseg serve``: images in, label maps, colours, overlays or class counts out.

A request travels through three places:

1. the HTTP process (:func:`read_predict_request`, a FastAPI dependency): the body is read within the size
   limit, its content type checked and the image decoded in memory (:mod:`hrseg.serve.limits`); a bad
   request is answered here with its 4xx and never reaches the model;
2. the inference worker (:class:`SegmentationAPI`): LitServe hands it up to ``max_batch_size`` requests that
   arrived within ``batch_timeout``; images of equal size go through the network as one batch tensor, so a
   batch of mixed sizes works and each image gets exactly what :meth:`Segmenter.predict` returns for it;
3. the response: the label map as a PNG of train ids, a colour PNG, an overlay PNG or JSON.

This module keeps its annotations evaluated (no ``from __future__ import annotations``): LitServe builds the
``POST /predict`` route from :meth:`SegmentationAPI.decode_request`'s signature, and FastAPI reads the
dependency from it.
"""

import ctypes
import hmac
import io
import json
import logging
import multiprocessing
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import litserve as ls
import numpy as np
from fastapi import Depends, HTTPException, Request, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from torch import Tensor

from hrseg.serve.limits import RequestError, RequestLimits, check_content_type, decode_image

__all__ = [
    "OPEN_PATHS",
    "OUTPUT_FORMATS",
    "PredictRequest",
    "SegmentationAPI",
    "read_predict_request",
]

#: ``?format=`` values of ``POST /predict``; ``labels`` (the default) is the PNG of train ids.
OUTPUT_FORMATS: tuple[str, ...] = ("labels", "color", "overlay", "json")

#: Paths served without the API key: the page (it holds no data; it asks for the key) and the health probe.
OPEN_PATHS: frozenset[str] = frozenset({"/", "/health"})

_log = logging.getLogger(__name__)
_INFO_BYTES = 1 << 20  # room for the worker's runtime description (class lists of any real dataset fit)


@dataclass(frozen=True)
class PredictRequest:
    """A validated request on its way from the HTTP process to the inference worker.

    Args:
        image: the decoded image (within the limits).
        output: one of :data:`OUTPUT_FORMATS`.
    """

    image: Image.Image
    output: str


@dataclass(frozen=True)
class _Prediction:
    request: PredictRequest
    mask: np.ndarray | None
    batch_size: int  # requests in the worker's batch, sent back as the X-Batch-Size header
    failed: tuple[int, str] | None = None  # (status, message) of a request the model could not run


def _http_error(err: RequestError) -> HTTPException:
    return HTTPException(status_code=err.status, detail=err.message)


def _limits(request: Request) -> RequestLimits:
    limits = getattr(request.app.state, "hrseg_limits", None)
    return limits if isinstance(limits, RequestLimits) else RequestLimits()


async def _read_body(request: Request, limits: RequestLimits) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(400, f"invalid Content-Length {declared!r}") from None
        limits.check_length(length)
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            limits.check_length(received)
            chunks.append(chunk)
    except ClientDisconnect:  # the client left, or the read deadline closed the connection: nobody to answer
        raise RequestError(400, "the connection closed before the whole body arrived") from None
    return b"".join(chunks)


async def _one_chunk(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


class _InMemoryMultiPartParser(MultiPartParser):
    """Starlette's parser with its file parts kept in memory (it spools parts over 1 MiB to a temporary file).

    The body is already read within the size limit, so memory is bounded, and nothing reaches the disk.
    """

    spool_max_size = sys.maxsize


async def _multipart_file(request: Request, body: bytes) -> bytes:
    """The bytes of the form's image file (field ``file`` or ``image``, else the only file sent)."""
    parser = _InMemoryMultiPartParser(request.headers, _one_chunk(body), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise RequestError(400, f"malformed multipart body ({err.message})") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    named = [form[key] for key in ("file", "image") if isinstance(form.get(key), UploadFile)]
    chosen = named[0] if named else (files[0] if files else None)
    if not isinstance(chosen, UploadFile):
        raise RequestError(400, "multipart body without a file: send the image as the form field 'file'")
    return await chosen.read()


async def read_predict_request(request: Request) -> PredictRequest:
    """Read, check and decode a ``POST /predict`` request in the HTTP process (a FastAPI dependency).

    Args:
        request: the HTTP request; its app's ``state.hrseg_limits`` holds the :class:`RequestLimits`.

    Returns:
        The decoded image and the requested output format.

    Raises:
        HTTPException: 400 / 413 / 415 with a one-line ``detail`` (see :mod:`hrseg.serve.limits`).
    """
    limits = _limits(request)
    try:
        output = request.query_params.get("format", "labels").lower()
        if output not in OUTPUT_FORMATS:
            raise RequestError(400, f"unknown format {output!r}: choose one of {', '.join(OUTPUT_FORMATS)}")
        media_type = check_content_type(request.headers.get("content-type", ""))
        body = await _read_body(request, limits)
        data = await _multipart_file(request, body) if media_type == "multipart/form-data" else body
        image = await run_in_threadpool(decode_image, data, limits)
    except RequestError as err:
        raise _http_error(err) from None
    return PredictRequest(image=image, output=output)


class SegmentationAPI(ls.LitAPI):
    """A :class:`hrseg.Segmenter` behind LitServe: ``setup`` loads it, ``predict`` runs batches of requests.

    Args:
        model: what :meth:`Segmenter.from_checkpoint` loads (checkpoint, hub folder / reference, exported
            graph).
        backend: the runtime (``torch``, ``compile``, ``onnxruntime``, ``openvino``, ``auto``).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``int8``.
        cache_dir: the export cache of non-torch backends.
        api_key: the key requests must send (``X-API-Key`` or ``Authorization: Bearer``); None: no key.
        released: for released weights (a bare state dict, an official ``.pth``), what they are:
            :meth:`Segmenter.from_weights`'s ``model``, ``classes`` and ``align_corners``; None: ``model``
            is a checkpoint that describes itself.
        threads: torch CPU threads per worker (None: torch's default).
        max_batch_size: the most requests run together.
        batch_timeout: how long (seconds) a batch waits to fill.
    """

    def __init__(
        self,
        model: str,
        backend: str = "torch",
        precision: str = "fp32",
        cache_dir: str | None = None,
        api_key: str | None = None,
        released: Mapping[str, Any] | None = None,
        threads: int | None = None,
        max_batch_size: int = 4,
        batch_timeout: float = 0.01,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.model_ref = model
        self.backend = backend
        self.precision = precision
        self.cache_dir = cache_dir
        self.api_key = api_key or None
        self.released = dict(released) if released is not None else None
        self.threads = threads
        # what the worker loaded (backend, device, protocol), written by setup() and read by GET /info in the
        # HTTP processes: shared memory inherited by both (spawned workers, forked HTTP servers)
        self._runtime_info = multiprocessing.get_context("spawn").RawArray(ctypes.c_char, _INFO_BYTES)
        self.segmenter: Any = None

    # -- inference worker -------------------------------------------------------------------------------
    def setup(self, device: str) -> None:
        """Load the model on ``device`` (called once in each inference worker)."""
        import torch

        from hrseg.deploy import Segmenter

        if self.threads is not None and str(device).startswith("cpu"):
            torch.set_num_threads(self.threads)
        runtime: dict[str, Any] = {
            "device": device,
            "backend": self.backend,
            "precision": self.precision,
            "cache_dir": self.cache_dir,
        }
        if self.released is not None:
            self.segmenter = Segmenter.from_weights(self.model_ref, **self.released, **runtime)
        else:
            self.segmenter = Segmenter.from_checkpoint(self.model_ref, **runtime)
        self._publish_runtime_info()

    def decode_request(
        self, request: Annotated[PredictRequest, Depends(read_predict_request)], **kwargs: Any
    ) -> PredictRequest:
        """The request as read by :func:`read_predict_request` (it is validated in the HTTP process)."""
        return request

    def batch(self, inputs: list[PredictRequest]) -> list[PredictRequest]:
        """Keep requests as a list: :meth:`predict` groups them by image size."""
        return list(inputs)

    def predict(
        self, x: PredictRequest | list[PredictRequest], **kwargs: Any
    ) -> _Prediction | list[_Prediction]:
        """Label maps for one request or a batch (images of equal size share one forward pass)."""
        if isinstance(x, PredictRequest):  # max_batch_size=1: LitServe passes requests one by one
            return self._predict_batch([x])[0]
        return self._predict_batch(x)

    def _predict_batch(self, requests: Sequence[PredictRequest]) -> list[_Prediction]:
        from hrseg.images import to_image_tensor

        seg = self.segmenter
        tensors: dict[int, Tensor] = {}
        failed: dict[int, tuple[int, str]] = {}  # request -> (status, message): only that request fails
        for i, r in enumerate(requests):
            try:
                tensors[i] = to_image_tensor(r.image, seg.in_channels)[0]
            except ValueError as err:  # e.g. channels the model cannot take
                failed[i] = (400, f"the model cannot take this image: {err}")
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, t in tensors.items():
            by_size.setdefault(tuple(t.shape[-2:]), []).append(i)
        masks: dict[int, np.ndarray] = {}
        for indices in by_size.values():
            try:
                self._forward(tensors, indices, masks)
            except Exception:  # e.g. out of memory: one by one, so that only the image that fails fails
                for i in indices:
                    try:
                        self._forward(tensors, [i], masks)
                    except Exception as err:
                        _log.exception("inference failed on a %s image", tuple(tensors[i].shape[-2:]))
                        failed[i] = (500, f"inference failed: {type(err).__name__}")
        return [_Prediction(r, masks.get(i), len(requests), failed.get(i)) for i, r in enumerate(requests)]

    def _forward(self, tensors: dict[int, Tensor], indices: list[int], masks: dict[int, np.ndarray]) -> None:
        """Label maps of equal-size images ``indices`` in one forward pass, into ``masks``."""
        import torch

        out = self.segmenter.predict(torch.cat([tensors[i] for i in indices]))
        for row, i in enumerate(indices):
            masks[i] = out[row].cpu().numpy().astype(np.int64)

    def unbatch(self, output: list[_Prediction]) -> list[_Prediction]:
        """One prediction per request, in request order."""
        return list(output)

    def encode_response(self, output: _Prediction, **kwargs: Any) -> Response:
        """The response body for the request's format (PNG or JSON)."""
        seg = self.segmenter
        mask = output.mask
        fmt = output.request.output
        headers = {"X-Batch-Size": str(output.batch_size)}
        if output.failed is not None or mask is None:
            status, message = output.failed or (500, "no prediction")
            detail = json.dumps({"detail": message})
            return Response(detail, status_code=status, media_type="application/json", headers=headers)
        if fmt == "json":
            counts = np.bincount(mask.ravel(), minlength=seg.num_classes)
            names = seg.class_names or [str(i) for i in range(seg.num_classes)]
            height, width = mask.shape
            body = {
                "model": seg.meta.model,
                "width": int(width),
                "height": int(height),
                "classes": names,
                "pixels": {name: int(counts[i]) for i, name in enumerate(names)},
            }
            return Response(content=json.dumps(body), media_type="application/json", headers=headers)
        if fmt == "color":
            image = Image.fromarray(seg.colorize(mask))
        elif fmt == "overlay":
            image = Image.fromarray(seg.overlay(output.request.image, mask))
        else:
            from hrseg.deploy.writer import label_image

            image = label_image(mask)
        buffer = io.BytesIO()
        # level 1: label maps and colour images compress well anyway, and encoding time is serving time
        image.save(buffer, format="PNG", compress_level=1)
        return Response(content=buffer.getvalue(), media_type="image/png", headers=headers)

    def _publish_runtime_info(self) -> None:
        seg = self.segmenter
        info = {
            "backend": seg.backend,
            "precision": seg.precision,
            "device": str(seg.device),
            # the protocol the model was validated with, as stored in the checkpoint (Segmenter's default)
            "protocol": {**seg.protocol.to_dict(), "description": seg.protocol.describe()},
        }
        data = json.dumps(info).encode()[: _INFO_BYTES - 8]
        view = memoryview(self._runtime_info).cast("B")
        view[8 : 8 + len(data)] = data
        view[0:8] = len(data).to_bytes(8, "little")  # the length last: a reader sees all of it or nothing

    def runtime_info(self) -> dict[str, Any] | None:
        """What an inference worker loaded (backend, precision, device, protocol); None before it is ready."""
        view = memoryview(self._runtime_info).cast("B")
        length = int.from_bytes(view[0:8], "little")
        if length == 0:
            return None
        info: dict[str, Any] = json.loads(bytes(view[8 : 8 + length]))
        return info

    # -- HTTP process -----------------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        """Refuse (401) a request without the API key, except for :data:`OPEN_PATHS`."""
        if self.api_key is None or request.url.path in OPEN_PATHS:
            return
        sent = request.headers.get("x-api-key")
        if sent is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            sent = token.strip() if scheme.lower() == "bearer" else None
        if sent is None or not hmac.compare_digest(sent.encode(), self.api_key.encode()):
            raise HTTPException(
                status_code=401, detail="missing or wrong API key: send it as the X-API-Key header"
            )

    def __getstate__(self) -> dict[str, Any]:
        # the worker loads its own model; a loaded one is never copied between processes
        state = dict(self.__dict__)
        state["segmenter"] = None
        return state
