"""Load test of ``hrseg serve`` against a naive one-request-per-forward FastAPI handler, in one run.

Every server runs the same checkpoint on 127.0.0.1 in its own process; the same clients send the same
mix to each: ``--clients`` threads x ``--requests`` requests over images of ``--sizes`` (generated street
scenes, PNG bodies), ``--bad`` of them malformed (not an image, a truncated PNG, a wrong content type).
Every good answer is compared with ``Segmenter.predict`` on that image (same backend as the server); every
bad one must be a 4xx. Latency is per request (send to last byte), throughput counts good answers per second
of wall time.

Configurations (``--configs``):

- ``naive``: FastAPI + uvicorn, an ``async`` handler that decodes the body and calls ``Segmenter.predict``
  (torch fast path) inline, one request per forward: the wrapper users write;
- ``serve_torch``: ``hrseg serve --backend torch`` (dynamic batching, decoding in the HTTP process);
- ``serve_auto``: ``hrseg serve --backend auto`` (OpenVINO on x86 CPUs, else ONNX Runtime; torch on CUDA);
- ``serve_torch_nobatch`` / ``serve_auto_nobatch``: the same with ``--max-batch-size 1`` (what batching adds).

    python -m benchmarks.serve --ckpt runs/demo/best.ckpt [--clients 8 --requests 200 --bad 0.1]

Bounded: each configuration stops sending after ``--max-seconds`` (the record says when it did). Writes
``serve.json`` and ``serve.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# module level: FastAPI resolves the naive handler's (string) annotations in this module's globals
from fastapi import Request, Response

from benchmarks.common import Column, Report, log, machine_info, markdown_table, parse_sizes, ratio

CONFIGS = {
    "naive": {"server": "naive", "backend": "torch", "max_batch_size": 1},
    "serve_torch": {"server": "serve", "backend": "torch", "max_batch_size": 4},
    "serve_auto": {"server": "serve", "backend": "auto", "max_batch_size": 4},
    "serve_torch_nobatch": {"server": "serve", "backend": "torch", "max_batch_size": 1},
    "serve_auto_nobatch": {"server": "serve", "backend": "auto", "max_batch_size": 1},
}
STARTUP_S = 600  # an OpenVINO / ONNX export on a busy 2-core machine takes minutes the first time


# --------------------------------------------------------------------------------------------------
# The naive server
# --------------------------------------------------------------------------------------------------
def naive_app(ckpt: str) -> Any:
    """The FastAPI wrapper a user writes: decode, ``Segmenter.predict`` inline, encode; one request a time."""
    from fastapi import FastAPI, HTTPException
    from PIL import Image

    from hrseg.deploy import Segmenter

    segmenter = Segmenter.from_checkpoint(ckpt, device="cpu")
    app = FastAPI()

    @app.get("/health")
    async def health() -> Response:
        return Response("ok")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = await request.body()
        try:
            image = Image.open(io.BytesIO(body))
            image.load()
        except Exception as err:  # the usual wrapper's one guard
            raise HTTPException(400, f"not an image: {err}") from None
        mask = segmenter.predict(image)
        out = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8)).save(out, format="PNG", compress_level=1)
        return Response(out.getvalue(), media_type="image/png")

    return app


def _run_naive_server(ckpt: str, port: int) -> None:
    import uvicorn

    uvicorn.run(naive_app(ckpt), host="127.0.0.1", port=port, log_level="warning")


# --------------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One request's outcome."""

    good: bool
    status: int
    seconds: float
    correct: bool | None = None
    batch: int | None = None
    error: str | None = None


@dataclass
class Workload:
    """The request bodies and what each good one must come back as."""

    images: list[tuple[bytes, tuple[int, int]]]
    bad: list[tuple[bytes, str]]
    references: dict[str, list[np.ndarray]] = field(default_factory=dict)


def build_workload(sizes: Sequence[tuple[int, int]], per_size: int, seed: int) -> tuple[Workload, list[Any]]:
    from PIL import Image

    from hrseg.data.scenes import generate_scene

    images, pil = [], []
    for s, size in enumerate(sizes):
        for k in range(per_size):
            rgb, _ = generate_scene([seed, s, k], size=size)
            img = Image.fromarray(rgb)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            images.append((buf.getvalue(), size))
            pil.append(img)
    first = images[0][0]
    bad = [
        (b"this is not an image" * 20, "image/png"),
        (first[: len(first) // 2], "image/png"),
        (first, "text/plain"),
    ]
    return Workload(images, bad), pil


def references(ckpt: str, backend: str, images: list[Any]) -> list[np.ndarray]:
    from hrseg.deploy import Segmenter

    segmenter = Segmenter.from_checkpoint(ckpt, device="cpu", backend=backend)
    return [segmenter.predict(img) for img in images]


class Connection:
    """A keep-alive connection that reconnects once when the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            try:
                self.conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
                response = self.conn.getresponse()
                data = response.read()
                headers = {k.lower(): v for k, v in response.getheaders()}
                if headers.get("connection", "").lower() == "close":
                    self.close()
                return response.status, headers, data
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def run_load(
    port: int,
    work: Workload,
    refs: list[np.ndarray],
    clients: int,
    requests: int,
    bad: float,
    seed: int,
    budget: float,
) -> tuple[list[Sample], float, bool]:
    from PIL import Image

    samples: list[list[Sample]] = [[] for _ in range(clients)]
    deadline = time.monotonic() + budget
    stopped = threading.Event()

    def client(index: int) -> None:
        rng = np.random.default_rng([seed, index])
        conn = Connection(port)
        for _ in range(requests):
            if time.monotonic() > deadline:
                stopped.set()
                break
            if rng.random() < bad:
                body, content_type = work.bad[int(rng.integers(len(work.bad)))]
                start = time.perf_counter()
                try:
                    status, _, _ = conn.post(body, content_type)
                except OSError as err:
                    samples[index].append(Sample(False, 0, time.perf_counter() - start, error=str(err)))
                    continue
                samples[index].append(Sample(False, status, time.perf_counter() - start))
                continue
            k = int(rng.integers(len(work.images)))
            body = work.images[k][0]
            start = time.perf_counter()
            try:
                status, headers, data = conn.post(body, "image/png")
            except OSError as err:
                samples[index].append(Sample(True, 0, time.perf_counter() - start, error=str(err)))
                continue
            seconds = time.perf_counter() - start
            correct = None
            if status == 200:
                correct = bool(np.array_equal(np.asarray(Image.open(io.BytesIO(data))), refs[k]))
            batch = int(headers["x-batch-size"]) if "x-batch-size" in headers else None
            samples[index].append(Sample(True, status, seconds, correct, batch))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [s for per in samples for s in per], time.perf_counter() - start, stopped.is_set()


# --------------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    name: str, ckpt: str, args: argparse.Namespace, log_dir: Path
) -> tuple[subprocess.Popen[bytes], int]:
    spec = CONFIGS[name]
    port = _free_port()
    if spec["server"] == "naive":
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.serve",
            "--naive-server",
            "--ckpt",
            ckpt,
            "--port",
            str(port),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "hrseg",
            "serve",
            "--ckpt_path",
            ckpt,
            "--port",
            str(port),
            "--device",
            "cpu",
        ]
        cmd += ["--backend", spec["backend"], "--max-batch-size", str(spec["max_batch_size"])]
        cmd += ["--batch-timeout", str(args.batch_timeout), "--log-level", "warning", "--timeout", "600"]
    log_file = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115  # closed with the process
    process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; see {log_dir / f'{name}.log'}")
        with suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return process, port
        time.sleep(1)
    stop_server(process)
    raise RuntimeError(f"{name} did not come up in {STARTUP_S} s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def summarize(name: str, samples: list[Sample], wall: float, stopped: bool) -> dict[str, Any]:
    good = [s for s in samples if s.good]
    bad = [s for s in samples if not s.good]
    answered = [s for s in good if s.status == 200]
    lat = sorted(s.seconds for s in answered)

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, round(q * (len(lat) - 1)))] * 1000 if lat else None

    batches = [s.batch for s in answered if s.batch is not None]
    return {
        "config": name,
        **CONFIGS[name],
        "requests": len(samples),
        "good": len(good),
        "answered_200": len(answered),
        "wrong_label_maps": sum(1 for s in answered if s.correct is False),
        "bad": len(bad),
        "bad_4xx": sum(1 for s in bad if 400 <= s.status < 500),
        "status_5xx": sum(1 for s in samples if s.status >= 500),
        "errors": sum(1 for s in samples if s.status == 0),
        "p50_ms": pct(0.5),
        "p90_ms": pct(0.9),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(lat) * 1000 if lat else None,
        "throughput_rps": len(answered) / wall if wall > 0 else None,
        "mean_batch": statistics.fmean(batches) if batches else None,
        "wall_s": wall,
        "stopped_by_budget": stopped,
    }


COLUMNS = [
    Column("config", "config", "{}"),
    Column("backend", "backend", "{}"),
    Column("max_batch_size", "max batch", "{}"),
    Column("requests", "requests", "{}"),
    Column("answered_200", "good 200", "{}"),
    Column("wrong_label_maps", "wrong maps", "{}"),
    Column("bad_4xx", "bad 4xx", "{}"),
    Column("status_5xx", "5xx", "{}"),
    Column("errors", "conn. errors", "{}"),
    Column("p50_ms", "p50 ms", "{:.0f}"),
    Column("p99_ms", "p99 ms", "{:.0f}"),
    Column("throughput_rps", "good req/s", "{:.2f}"),
    Column("mean_batch", "mean batch", "{:.2f}"),
    Column("wall_s", "wall s", "{:.0f}"),
]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="the model every server runs (e.g. make demo's best.ckpt)")
    p.add_argument("--configs", default="naive,serve_torch,serve_auto", help=f"of {', '.join(CONFIGS)}")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200, help="requests per client")
    p.add_argument("--bad", type=float, default=0.1, help="share of malformed requests")
    p.add_argument("--sizes", default="80x160,128x256,96x128,160x320", help="HxW of the request images")
    p.add_argument("--per-size", type=int, default=4, help="distinct images per size")
    p.add_argument("--batch-timeout", type=float, default=0.01)
    p.add_argument(
        "--max-seconds", type=float, default=900, help="per configuration: stop sending after this"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/serve")
    p.add_argument("--naive-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.naive_server:
        _run_naive_server(args.ckpt, args.port)
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    machine = machine_info("cpu")
    log(
        f"workload: {args.clients} clients x {args.requests} requests, sizes {args.sizes}, {args.bad:.0%} bad"
    )
    work, pil = build_workload(parse_sizes(args.sizes), args.per_size, args.seed)
    rows = []
    for name in names:
        backend = CONFIGS[name]["backend"]
        if backend not in work.references:
            log(f"reference label maps: Segmenter.predict, backend {backend}")
            work.references[backend] = references(args.ckpt, backend, pil)
        log(f"{name}: starting")
        process, port = start_server(name, args.ckpt, args, out)
        try:
            warm = Connection(port)
            for body, _ in work.images:  # first calls at each size create oneDNN primitives / compile shapes
                warm.post(body, "image/png")
            warm.close()
            log(f"{name}: load")
            samples, wall, stopped = run_load(
                port,
                work,
                work.references[backend],
                args.clients,
                args.requests,
                args.bad,
                args.seed,
                args.max_seconds,
            )
            alive = process.poll() is None
        finally:
            stop_server(process)
        row = summarize(name, samples, wall, stopped)
        row["server_alive_after"] = alive
        rows.append(row)
        log(f"{name}: {row['throughput_rps']} good req/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms")

    by_name = {r["config"]: r for r in rows}
    ratios = {}
    if "naive" in by_name:
        for r in rows:
            if r["config"] != "naive":
                ratios[f"{r['config']}_throughput_over_naive"] = ratio(
                    r["throughput_rps"], by_name["naive"]["throughput_rps"]
                )
                ratios[f"{r['config']}_p99_over_naive"] = ratio(r["p99_ms"], by_name["naive"]["p99_ms"])
    command = "python -m benchmarks.serve " + " ".join(sys.argv[1:] if argv is None else argv)
    config = {k: v for k, v in vars(args).items() if k not in ("naive_server", "port")}
    ratio_lines = "\n".join(f"- {k}: {v:.2f}" for k, v in ratios.items() if v is not None)
    markdown = (
        f"Command: `{command}`\n\nCommit: {machine.get('git')}\n\n"
        + markdown_table(rows, COLUMNS)
        + ("\n\nRatios:\n\n" + ratio_lines if ratio_lines else "")
        + "\n"
    )
    report = Report("serve", config, rows, machine, markdown, extra={"ratios": ratios, "command": command})
    _, md_path = report.write(out)
    print(md_path.read_text())
    failed = [r["config"] for r in rows if r["status_5xx"] or r["wrong_label_maps"] or r["errors"]]
    failed += [r["config"] for r in rows if r["config"] != "naive" and r["bad_4xx"] != r["bad"]]
    if failed:
        log(f"FAILED checks (5xx, connection errors, wrong label maps or bad requests without 4xx): {failed}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
