"""``hrseg serve``: the real server in a subprocess on a free loopback port, driven over HTTP.

One server (module scope, the session's tiny checkpoint, an API key, small limits so that the limit cases
are cheap) answers every test here; each bad request must get its 4xx and leave the server answering.
``serving`` is also used by tests/test_serve_browser.py.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hrseg.data.scenes import generate_scene

API_KEY = "test-key-123"
MAX_PIXELS = 300_000
MAX_BODY_MB = 0.5
READ_TIMEOUT = 3.0  # seconds to send a whole request: short, so that the half-open test is quick
MAX_CONNECTIONS = 64
STARTUP_SECONDS = 180  # two busy cores: importing torch and loading the model in two processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A running ``hrseg serve`` and how to reach it."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    api_key: str | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
        key: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, lower-case headers, body)."""
        sent = dict(headers or {})
        if key and self.api_key is not None:
            sent.setdefault("X-API-Key", self.api_key)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(
                method, path, body=body, headers=sent, encode_chunked=not isinstance(body, bytes | None)
            )
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def predict(self, data: bytes, content_type: str = "image/png", fmt: str | None = None, **kw: Any) -> Any:
        path = "/predict" if fmt is None else f"/predict?format={fmt}"
        return self.request("POST", path, data, {"Content-Type": content_type}, **kw)


@contextmanager
def serving(ckpt: Path, log_dir: Path, *options: str, api_key: str | None = None) -> Iterator[Served]:
    """Start ``python -m hrseg serve`` on a free port, wait until ``/health`` answers, stop it afterwards."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "hrseg", "serve", "--ckpt_path", str(ckpt), "--port", str(port)]
    cmd += ["--device", "cpu", "--log-level", "warning", *options]
    if api_key is not None:
        cmd += ["--api-key", api_key]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log_dir, start_new_session=True
        )
    served = Served(port, process, log, api_key)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"hrseg serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if served.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"hrseg serve did not answer /health in {STARTUP_SECONDS} s:\n{log.read_text()}"
                )
            time.sleep(0.5)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        with suppress(
            ProcessLookupError
        ):  # workers and HTTP servers are the server's children, in its session
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def scene(seed: int, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(generate_scene(seed, size=size)[0])


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (8-bit RGB) and carries one tiny compressed row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def decode_png(body: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(body)) as img:
        assert img.format == "PNG"
        return np.asarray(img)


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint: Path) -> Any:
    from hrseg.deploy import Segmenter

    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    options = ["--max-pixels", str(MAX_PIXELS), "--max-body-mb", str(MAX_BODY_MB), "--batch-timeout", "0.05"]
    options += ["--read-timeout", str(READ_TIMEOUT), "--max-connections", str(MAX_CONNECTIONS)]
    with serving(tiny_checkpoint, tmp_path_factory.mktemp("serve"), *options, api_key=API_KEY) as served:
        yield served


def test_help_lists_serve() -> None:
    from hrseg.commands.main import TOOL_COMMANDS, USAGE

    assert TOOL_COMMANDS["serve"] == "serve"
    assert "serve" in USAGE.split("commands:")[1]


def test_bad_checkpoint_fails_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ckpt"
    result = subprocess.run(
        [sys.executable, "-m", "hrseg", "serve", "--ckpt_path", str(missing), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hrseg serve:") and "nope.ckpt" in lines[0]


def test_health_info_and_page(server: Served, segmenter: Any) -> None:
    status, _, body = server.request("GET", "/health", key=False)
    assert (status, body) == (200, b"ok")
    status, headers, body = server.request("GET", "/", key=False)
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    for element in ('id="file"', 'id="overlay"', 'id="legend"'):
        assert element in page
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched from elsewhere
    status, _, body = server.request("GET", "/info")
    assert status == 200
    info = json.loads(body)
    assert info["model"] == segmenter.meta.model
    assert info["classes"] == segmenter.class_names
    assert info["palette"] == [list(c) for c in segmenter.palette]
    assert (info["backend"], info["device"], info["precision"]) == ("torch", "cpu", "fp32")
    protocol = dict(info["protocol"])
    assert protocol.pop("description") == segmenter.protocol.describe()
    assert protocol == segmenter.protocol.to_dict()  # the one stored in the checkpoint
    assert info["batching"]["max_batch_size"] == 4 and info["batching"]["batch_timeout"] == 0.05
    assert info["limits"]["max_pixels"] == MAX_PIXELS
    assert info["auth"] is True


def test_formats_equal_segmenter(server: Served, segmenter: Any) -> None:
    image = scene(3, (48, 80))
    expected = segmenter.predict(image)
    status, headers, body = server.predict(encode(image))
    assert status == 200 and headers["content-type"] == "image/png"
    labels = decode_png(body)
    assert labels.dtype == np.uint8 and labels.shape == (48, 80)
    np.testing.assert_array_equal(labels, expected)

    status, _, body = server.predict(encode(image), fmt="color")
    assert status == 200
    np.testing.assert_array_equal(decode_png(body), segmenter.colorize(expected))

    status, _, body = server.predict(encode(image), fmt="overlay")
    assert status == 200
    np.testing.assert_array_equal(decode_png(body), segmenter.overlay(image, expected))

    status, headers, body = server.predict(encode(image), fmt="json")
    assert status == 200 and headers["content-type"] == "application/json"
    result = json.loads(body)
    assert (result["model"], result["width"], result["height"]) == (segmenter.meta.model, 80, 48)
    assert result["classes"] == segmenter.class_names
    counts = np.bincount(expected.ravel(), minlength=segmenter.num_classes)
    assert result["pixels"] == {name: int(counts[i]) for i, name in enumerate(segmenter.class_names)}


def test_jpeg_webp_multipart_and_modes(server: Served, segmenter: Any) -> None:
    rgb = scene(4, (40, 56))
    cases = {
        "jpeg": (encode(rgb, "JPEG"), "image/jpeg"),
        "webp": (encode(rgb, "WEBP"), "image/webp"),
        "grey png": (encode(rgb.convert("L")), "image/png"),
        "palette png": (encode(rgb.convert("P")), "image/png"),
        "rgba png": (encode(rgb.convert("RGBA")), "image/png"),
    }
    for name, (data, content_type) in cases.items():
        expected = segmenter.predict(Image.open(io.BytesIO(data)))
        status, _, body = server.predict(data, content_type)
        assert status == 200, name
        np.testing.assert_array_equal(decode_png(body), expected, err_msg=name)

    data = encode(rgb)
    boundary = "hrsegboundary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="street.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, _, body = server.predict(form, f"multipart/form-data; boundary={boundary}")
    assert status == 200
    np.testing.assert_array_equal(decode_png(body), segmenter.predict(rgb))


def test_exif_orientation_is_applied(server: Served, segmenter: Any) -> None:
    """A phone photo tagged "turn 90 degrees" is segmented as displayed: 64x40 (HxW), not 40x64 as stored."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    buffer = io.BytesIO()
    scene(9, (40, 64)).save(buffer, format="JPEG", exif=exif)
    data = buffer.getvalue()
    expected = segmenter.predict(Image.open(io.BytesIO(data)))
    assert expected.shape == (64, 40)
    status, _, body = server.predict(data, "image/jpeg")
    assert status == 200
    np.testing.assert_array_equal(decode_png(body), expected)
    status, _, body = server.predict(data, "image/jpeg", fmt="overlay")
    assert status == 200 and decode_png(body).shape == (64, 40, 3)
    answer = json.loads(server.predict(data, "image/jpeg", fmt="json")[2])
    assert (answer["height"], answer["width"]) == (64, 40)


def test_concurrent_mixed_sizes_are_batched_and_exact(server: Served, segmenter: Any) -> None:
    sizes = [(32, 48), (48, 64), (32, 48), (64, 40), (48, 64), (32, 48), (64, 40), (40, 40)]
    images = [scene(10 + i, size) for i, size in enumerate(sizes)]
    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(lambda img: server.predict(encode(img)), images))
    batch_sizes = []
    for image, (status, headers, body) in zip(images, answers, strict=True):
        assert status == 200
        np.testing.assert_array_equal(decode_png(body), segmenter.predict(image))
        batch_sizes.append(int(headers["x-batch-size"]))
    assert max(batch_sizes) > 1, f"no request was batched: {batch_sizes}"


def test_api_key(server: Served) -> None:
    data = encode(scene(5, (32, 32)))
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        status, _, body = server.request(
            "POST", "/predict", data, {"Content-Type": "image/png", **headers}, key=False
        )
        assert status == 401
        assert "API key" in json.loads(body)["detail"]
    assert server.request("GET", "/info", key=False)[0] == 401
    bearer = {"Content-Type": "image/png", "Authorization": f"Bearer {API_KEY}"}
    assert server.request("POST", "/predict", data, bearer, key=False)[0] == 200


def _bad_requests() -> dict[str, tuple[bytes | Iterator[bytes], str, str | None, int]]:
    """name -> (body, content type, ?format=, expected status)."""
    good = encode(scene(6, (40, 48)))
    bmp = encode(scene(6, (40, 48)), "BMP")
    over = int(MAX_BODY_MB * 1024 * 1024) + 1000
    return {
        "not an image": (b"this is not an image" * 10, "image/png", None, 400),
        "truncated": (good[: len(good) // 2], "image/png", None, 400),
        "empty body": (b"", "image/png", None, 400),
        "zero size": (png_header(0, 32), "image/png", None, 400),
        "too many pixels": (png_header(700, 700), "image/png", None, 413),
        "decompression bomb": (png_header(40_000, 40_000), "image/png", None, 413),
        "wrong content type": (good, "text/plain", None, 415),
        "no content type": (good, "", None, 415),
        "other image format": (bmp, "image/png", None, 415),
        "oversize body": (b"\0" * over, "image/png", None, 413),
        "oversize chunked body": (iter([b"\0" * 65536] * (over // 65536 + 1)), "image/png", None, 413),
        "unknown format": (good, "image/png", "xml", 400),
        "multipart without file": (
            b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            None,
            400,
        ),
    }


@pytest.mark.parametrize("case", list(_bad_requests()))
def test_bad_input_gets_its_4xx_and_the_server_keeps_serving(server: Served, case: str) -> None:
    body, content_type, fmt, expected = _bad_requests()[case]
    headers = {"Content-Type": content_type} if content_type else {}
    path = "/predict" if fmt is None else f"/predict?format={fmt}"
    status, response_headers, answer = server.request("POST", path, body, headers)
    assert status == expected, answer
    assert response_headers["content-type"] == "application/json"
    detail = json.loads(answer)["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    status, _, _ = server.predict(encode(scene(7, (32, 32))))
    assert status == 200


def test_small_load(server: Served, segmenter: Any) -> None:
    """4 clients x 20 requests of mixed sizes, 10 % bad: every good one exact, every bad one its 4xx."""
    sizes = [(32, 48), (48, 64), (64, 96), (40, 40)]
    images = {size: encode(scene(20 + i, size)) for i, size in enumerate(sizes)}
    expected = {size: segmenter.predict(Image.open(io.BytesIO(data))) for size, data in images.items()}
    bad = [(b"not an image", "image/png", 400), (images[sizes[0]], "text/plain", 415)]

    def client(index: int) -> list[str]:
        problems = []
        for step in range(20):
            if (index * 20 + step) % 10 == 3:
                data, content_type, want = bad[step % len(bad)]
                status, _, body = server.predict(data, content_type)
                if status != want:
                    problems.append(f"bad request: {status} instead of {want}")
                continue
            size = sizes[(index + step) % len(sizes)]
            status, _, body = server.predict(images[size])
            if status != 200:
                problems.append(f"{size}: status {status} {body[:200]!r}")
            elif not np.array_equal(decode_png(body), expected[size]):
                problems.append(f"{size}: label map differs from Segmenter.predict")
        return problems

    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        problems = [p for result in pool.map(client, range(4)) for p in result]
    assert problems == []
    assert time.monotonic() - start < 120
    assert server.process.poll() is None
    assert server.request("GET", "/health")[0] == 200


def test_a_failing_forward_fails_only_its_own_request(tiny_checkpoint: Path) -> None:
    """In-process: a forward that raises (e.g. out of memory) answers 500 to its own request alone."""
    from hrseg.deploy import Segmenter
    from hrseg.serve.api import PredictRequest, SegmentationAPI

    class FailsAt40x40(Segmenter):  # fault injection: the real model, except on one image size
        def predict(self, image: Any, return_probs: bool = False) -> Any:
            if tuple(image.shape[-2:]) == (40, 40):
                raise MemoryError("injected")
            return super().predict(image, return_probs)

    api = SegmentationAPI(str(tiny_checkpoint), max_batch_size=4)
    api.segmenter = FailsAt40x40.from_checkpoint(tiny_checkpoint, device="cpu")
    images = [scene(30, (32, 48)), scene(31, (40, 40)), scene(32, (32, 48))]
    outputs = api.unbatch(api.predict(api.batch([PredictRequest(img, "labels") for img in images])))
    responses = [api.encode_response(out) for out in outputs]
    assert [r.status_code for r in responses] == [200, 500, 200]
    assert json.loads(responses[1].body)["detail"] == "inference failed: MemoryError"
    reference = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    for image, response in zip([images[0], images[2]], [responses[0], responses[2]], strict=True):
        np.testing.assert_array_equal(decode_png(bytes(response.body)), reference.predict(image))
        assert response.headers["x-batch-size"] == "3"


@pytest.mark.slow  # a second server start
def half_open(port: int, count: int, head: bytes) -> list[socket.socket]:
    """``count`` connections that each send ``head`` and then nothing more."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT + 30)
        sock.sendall(head)
        sockets.append(sock)
    return sockets


def read_to_close(sock: socket.socket) -> bytes:
    """What the server sends before it closes the connection (a socket timeout fails the test)."""
    data = b""
    with sock:
        while chunk := sock.recv(4096):
            data += chunk
    return data


def test_unfinished_requests_are_closed_and_connections_capped(server: Served, segmenter: Any) -> None:
    """Half-open connections get 408 and are closed after --read-timeout; beyond --max-connections, 503."""
    before = json.loads(server.request("GET", "/info")[2])["connections"]
    assert (before["read_timeout"], before["max_connections"]) == (READ_TIMEOUT, MAX_CONNECTIONS)
    start = time.monotonic()
    line_only = half_open(server.port, 40, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: image/png\r\n"
        "Content-Length: 5000\r\n\r\n"
    ).encode()
    half_body = half_open(server.port, 1, head + b"\0" * 100)
    image = scene(8, (32, 48))
    status, _, body = server.predict(encode(image))  # under the cap, others are answered meanwhile
    assert status == 200
    np.testing.assert_array_equal(decode_png(body), segmenter.predict(image))

    over = half_open(server.port, MAX_CONNECTIONS, b"GET /health HTTP/1.1\r\n")
    status, _, _ = server.request("GET", "/health", key=False)
    assert status == 503  # over the cap: refused at once, not queued

    for sock in [*line_only, *half_body, *over]:
        answer = read_to_close(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert f"request not received within {READ_TIMEOUT:g} s".encode() in answer
    assert time.monotonic() - start < READ_TIMEOUT + 20  # closed by the deadline, not by the client

    assert server.predict(encode(image))[0] == 200
    after = json.loads(server.request("GET", "/info")[2])["connections"]
    assert after["refused"] - before["refused"] >= 1
    assert after["timed_out"] - before["timed_out"] == 40 + 1 + MAX_CONNECTIONS
    assert server.process.poll() is None
    log = server.log.read_text()  # a summary line, at most every 10 s, not one line per refusal
    assert "connection(s) refused over the connection limit" in log
    assert "Exceeded concurrency limit" not in log


def test_connection_options_are_checked() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hrseg", "serve", "--ckpt_path", "x.ckpt", "--read-timeout", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "hrseg serve: error: --read-timeout and --keep-alive must be > 0 and --max-connections at least 1 "
        "(see hrseg serve --help)"
    ]


@pytest.mark.slow  # a second server start
def test_released_weights_with_a_model_name(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A bare state dict (released weights) served with --model answers like Segmenter.from_weights."""
    from safetensors.torch import save_file

    from hrseg.deploy import Segmenter
    from hrseg.inference import load_checkpoint

    model, meta = load_checkpoint(tiny_checkpoint)
    weights = tmp_path / "released.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    segmenter = Segmenter.from_weights(weights, meta.model, "cityscapes", device="cpu")
    image = scene(50, (48, 64))
    with serving(weights, tmp_path, "--model", meta.model) as server:
        status, _, body = server.predict(encode(image))
        info = json.loads(server.request("GET", "/info")[2])
    assert status == 200
    np.testing.assert_array_equal(decode_png(body), segmenter.predict(image))
    assert (info["model"], info["classes"]) == (meta.model, segmenter.class_names)


def test_device_names() -> None:
    from hrseg.serve.server import resolve_accelerator

    assert resolve_accelerator("cpu") == ("cpu", "auto")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_accelerator("tpu-ish")
