"""``hrseg serve``: a trained model behind an HTTP endpoint (LitServe), with a page to try it.

``POST /predict`` takes a PNG / JPEG / WebP image (the body, or a multipart file) and answers the label map as
a PNG of train ids, or with ``?format=color|overlay|json`` a colour PNG, an overlay PNG or JSON class counts;
``GET /`` is a page to try it, ``GET /health`` and ``GET /info`` describe the server. Requests arriving
together are batched. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

from hrseg.commands.options import (
    CommandParser,
    add_released_weights_options,
    check_released_weights_options,
)

__all__ = ["main"]

#: environment variable read for the API key when ``--api-key`` is not given
API_KEY_ENV = "HRSEG_API_KEY"


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="hrseg serve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a trained model over HTTP: POST /predict (an image -> its label map PNG, or "
        "?format=color|overlay|json), GET / (a page to try it), GET /health, GET /info. Requests that arrive "
        "together run as one batch.",
        epilog="""examples:
  hrseg serve --ckpt_path runs/demo/best.ckpt
  curl -s -H 'Content-Type: image/png' --data-binary @street.png \\
      'http://127.0.0.1:8000/predict?format=json'
  HRSEG_API_KEY=secret hrseg serve --ckpt_path model.onnx --host 0.0.0.0 --port 8080""",
    )
    p.add_argument(
        "--ckpt_path",
        dest="ckpt",
        required=True,
        help="the model: a Lightning .ckpt, a safetensors bundle, a hub folder or reference, an "
        "exported .onnx / .pt2 / OpenVINO .xml, or released weights with --model",
    )
    add_released_weights_options(p)
    net = p.add_argument_group("network")
    net.add_argument(
        "--host",
        default="127.0.0.1",
        choices=["127.0.0.1", "0.0.0.0", "::"],
        help="address to bind (default 127.0.0.1: this machine only)",
    )
    net.add_argument("--port", type=int, default=8000, help="TCP port, 1024-65535 (default 8000)")
    net.add_argument(
        "--api-key",
        default=None,
        help=f"require this key (X-API-Key header) on /predict and /info; default ${API_KEY_ENV}, else none",
    )
    rt = p.add_argument_group("runtime")
    rt.add_argument(
        "--device", default="auto", help="auto (default: CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps"
    )
    rt.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "compile", "onnxruntime", "openvino", "auto"],
        help="torch (default), compile, onnxruntime, openvino or auto, as in hrseg predict",
    )
    rt.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16", "fp16", "int8"], help="default fp32"
    )
    rt.add_argument("--cache-dir", default=None, help="export cache (default $HRSEG_CACHE or ~/.cache/hrseg)")
    batch = p.add_argument_group("batching")
    batch.add_argument(
        "--max-batch-size", type=int, default=4, help="most requests per forward pass (default 4; 1: off)"
    )
    batch.add_argument(
        "--batch-timeout", type=float, default=0.01, help="seconds a batch waits to fill (default 0.01)"
    )
    batch.add_argument("--workers", type=int, default=1, help="inference workers per device (default 1)")
    batch.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a request may wait for a worker (then 504)"
    )
    lim = p.add_argument_group("limits")
    lim.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="largest image, width x height (default 16777216 = 4096x4096); larger ones get 413 unread",
    )
    lim.add_argument(
        "--max-body-mb", type=float, default=32.0, help="largest request body in MiB (default 32)"
    )
    conn = p.add_argument_group("connections")
    conn.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        help="seconds a connection may take to send a whole request, head and body (default 10); then it "
        "gets 408 and is closed",
    )
    conn.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="most open connections (default 256); a request beyond them gets 503",
    )
    conn.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        help="seconds an idle connection stays open between two requests (default 5)",
    )
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default info"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hrseg serve``; returns the exit code once the server stops."""
    parser = _parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not 1024 <= args.port <= 65535:
        parser.error(f"--port must be in 1024-65535, got {args.port}")
    if args.max_batch_size < 1 or args.workers < 1:
        parser.error("--max-batch-size and --workers must be at least 1")
    if args.batch_timeout < 0 or args.timeout <= 0:
        parser.error("--batch-timeout must be >= 0 and --timeout > 0")
    if not (args.read_timeout > 0 and args.keep_alive > 0 and args.max_connections >= 1):
        parser.error("--read-timeout and --keep-alive must be > 0 and --max-connections at least 1")
    check_released_weights_options(args, parser)
    released: dict[str, Any] | None = None
    if args.model is not None:
        released = {"model": args.model, "classes": args.classes or "cityscapes"}
        released["align_corners"] = args.align_corners

    # optional dependencies (the serve extra): say how to install them instead of a traceback
    missing = [name for name in ("litserve", "multipart") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"hrseg serve: {', '.join(missing)} not installed: pip install 'hrseg[serve]'", file=sys.stderr)
        return 1

    from hrseg.checkpoint import CheckpointError
    from hrseg.inference import load_checkpoint
    from hrseg.serve.connections import ConnectionLimits
    from hrseg.serve.limits import RequestLimits
    from hrseg.serve.server import ServeConfig, build_server, resolve_accelerator, run_server

    try:
        limits = RequestLimits(max_pixels=args.max_pixels, max_body_bytes=int(args.max_body_mb * 1024 * 1024))
        resolve_accelerator(args.device)
        # read the model here once: a bad path fails with one line before any worker starts, and /info gets
        # the classes; the workers load their own copy
        if released is not None:
            from hrseg.inference.released import load_released

            model, meta = load_released(args.ckpt, **released)
        else:
            model, meta = load_checkpoint(args.ckpt, device="cpu")
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"hrseg serve: {err}", file=sys.stderr)
        return 1
    del model
    gc.collect()
    config = ServeConfig(
        model=str(args.ckpt),
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        cache_dir=args.cache_dir,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        workers=args.workers,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        limits=limits,
        connections=ConnectionLimits(args.read_timeout, args.max_connections, args.keep_alive),
        timeout=args.timeout,
        released=released,
    )
    server = build_server(config, meta)
    host = f"[{args.host}]" if ":" in args.host else args.host
    key = "required" if config.api_key else "off"
    print(
        f"hrseg serve: {meta.model} ({meta.num_classes} classes) from {args.ckpt} on "
        f"http://{host}:{args.port}/ (POST /predict, GET /health, GET /info; API key {key})",
        flush=True,
    )
    try:
        run_server(server, args.host, args.port, log_level=args.log_level)
    except RuntimeError as err:  # LitServe: a worker failed to load the model
        print(f"hrseg serve: {err}", file=sys.stderr)
        return 1
    return 0
