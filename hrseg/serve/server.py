"""Assemble and run the ``hrseg serve`` LitServer: the prediction API, the page, ``/health`` and ``/info``.

Annotations stay evaluated here (no ``from __future__ import annotations``): FastAPI reads the routes'
signatures at run time.
"""

import os
import signal
from dataclasses import dataclass, field
from importlib import resources
from types import FrameType
from typing import Any

from fastapi import Depends
from fastapi.responses import HTMLResponse, JSONResponse

from hrseg.serve.api import OUTPUT_FORMATS, SegmentationAPI
from hrseg.serve.connections import ConnectionLimits, ConnectionStats, protocol_options
from hrseg.serve.limits import IMAGE_CONTENT_TYPES, RequestLimits

__all__ = ["ServeConfig", "build_server", "page_html", "resolve_accelerator", "run_server"]


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``hrseg serve`` needs to start.

    Args:
        model: what :meth:`hrseg.Segmenter.from_checkpoint` loads (or released weights, see ``released``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        backend: the runtime (see :mod:`hrseg.deploy.backends`).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``int8``.
        cache_dir: the export cache of non-torch backends.
        max_batch_size: the most requests one forward pass takes (1: no batching).
        batch_timeout: seconds a batch waits to fill.
        workers: inference workers per device.
        api_key: the key every request but the page and ``/health`` must send; None: none.
        limits: body size and pixel limits.
        connections: the read deadline, the connection cap and the keep-alive timeout.
        timeout: seconds a request may wait for a worker before a 504.
        released: for released weights, :meth:`hrseg.Segmenter.from_weights`'s ``model``, ``classes`` and
            ``align_corners``; None: ``model`` describes itself.
    """

    model: str
    device: str = "auto"
    backend: str = "torch"
    precision: str = "fp32"
    cache_dir: str | None = None
    max_batch_size: int = 4
    batch_timeout: float = 0.01
    workers: int = 1
    api_key: str | None = None
    limits: RequestLimits = field(default_factory=RequestLimits)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    timeout: float = 30.0
    released: dict[str, Any] | None = None


def resolve_accelerator(device: str) -> tuple[str, Any]:
    """LitServer's ``accelerator`` and ``devices`` for a torch-style device name.

    Args:
        device: ``auto`` (CUDA, else MPS, else CPU: :func:`hrseg.inference.device.resolve_device`, as
            ``hrseg predict``), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns:
        ``(accelerator, devices)``: e.g. ``("cpu", "auto")``, ``("cuda", 1)``, ``("cuda", [1])``.

    Raises:
        ValueError: another name, or CUDA asked for where there is none.
    """
    from hrseg.inference.device import resolve_device

    resolved = resolve_device(device.strip().lower())
    if resolved.type == "cpu":
        return "cpu", "auto"
    if resolved.type == "cuda":
        return "cuda", 1 if resolved.index is None else [resolved.index]
    if resolved.type == "mps":
        return "mps", 1
    raise ValueError(f"hrseg serve runs on cpu, cuda or mps, not {device!r}")


def page_html() -> str:
    """The page served at ``GET /`` (one self-contained HTML file: no build step, no external resource)."""
    return resources.files("hrseg.serve").joinpath("page.html").read_text(encoding="utf-8")


def build_server(config: ServeConfig, meta: Any) -> Any:
    """A ready (not yet running) LitServer for ``config``.

    Args:
        config: the serving options.
        meta: the model's :class:`hrseg.checkpoint.ModelMeta` (class names and palette for ``GET /info``).

    Returns:
        The ``litserve.LitServer``; call ``run(host=..., port=...)``.
    """
    import litserve as ls

    accelerator, devices = resolve_accelerator(config.device)
    threads = None
    if accelerator == "cpu" and config.workers > 1:  # workers share the cores instead of oversubscribing
        threads = max(1, (os.cpu_count() or 1) // config.workers)
    api = SegmentationAPI(
        config.model,
        backend=config.backend,
        precision=config.precision,
        cache_dir=config.cache_dir,
        api_key=config.api_key,
        released=config.released,
        threads=threads,
        max_batch_size=config.max_batch_size,
        batch_timeout=config.batch_timeout,
    )
    server = ls.LitServer(
        api,
        accelerator=accelerator,
        devices=devices,
        workers_per_device=config.workers,
        timeout=config.timeout,
        disable_openapi_url=True,  # no /docs: the page is the UI; the API is what docs/serving.md describes
        restart_workers=True,  # a worker that dies is replaced, the others keep serving
    )
    app = server.app
    app.state.hrseg_limits = config.limits
    # LitServe starts one HTTP process per inference worker; they share the connection cap
    http_servers = len(server.devices) * config.workers
    stats = ConnectionStats()
    app.state.hrseg_run_options = {
        "num_api_servers": http_servers,
        **protocol_options(config.connections, stats, http_servers),
    }
    # LitServe's own "/" (a plain text line) and "/info" (its metadata) give way to hrseg's
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in ("/", "/info")]
    classes = list(meta.labels.class_names or [str(i) for i in range(meta.num_classes)])
    palette = [list(c) for c in (meta.labels.palette or [])]
    page = page_html()

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/info", dependencies=[Depends(api.authorize)])
    async def info() -> JSONResponse:
        runtime = api.runtime_info() or {}
        return JSONResponse(
            {
                "model": meta.model,
                "num_classes": meta.num_classes,
                "classes": classes,
                "palette": palette,
                "protocol": runtime.get("protocol"),
                "backend": runtime.get("backend"),
                "precision": runtime.get("precision"),
                "device": runtime.get("device"),
                "batching": {
                    "max_batch_size": config.max_batch_size,
                    "batch_timeout": config.batch_timeout,
                    "workers_per_device": config.workers,
                    "devices": [str(d) for d in server.devices],
                },
                "limits": {
                    "max_pixels": config.limits.max_pixels,
                    "max_body_bytes": config.limits.max_body_bytes,
                    "content_types": [*IMAGE_CONTENT_TYPES, "multipart/form-data"],
                },
                "connections": {
                    "read_timeout": config.connections.read_timeout,
                    "max_connections": config.connections.max_connections,
                    "keep_alive": config.connections.keep_alive,
                    **stats.to_dict(),
                },
                "formats": list(OUTPUT_FORMATS),
                "auth": config.api_key is not None,
            }
        )

    return server


def run_server(server: Any, host: str, port: int, log_level: str = "info") -> None:
    """Serve until Ctrl+C or SIGTERM, then stop the workers and HTTP processes.

    Args:
        server: from :func:`build_server`.
        host: the address to bind (``127.0.0.1``: this machine only; ``0.0.0.0``: every interface).
        port: the TCP port.
        log_level: uvicorn's (``info`` logs each request).
    """
    main_pid = os.getpid()

    def stop(signum: int, frame: FrameType | None) -> None:
        if os.getpid() == main_pid:
            raise KeyboardInterrupt  # LitServer's graceful shutdown: workers and HTTP servers stop too
        raise SystemExit(0)  # a forked HTTP server inherits this handler; uvicorn re-raises once it stopped

    signal.signal(signal.SIGTERM, stop)
    options = dict(getattr(server.app.state, "hrseg_run_options", {}))  # from build_server
    server.run(host=host, port=port, log_level=log_level, generate_client_file=False, **options)
