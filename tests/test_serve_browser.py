"""The ``hrseg serve`` page in a real browser: headless Chromium opens ``GET /`` and segments a scene.

Chromium is Debian's ``chromium`` package (.ci/run installs it); the test drives it over the Chrome DevTools
Protocol (websockets), so no browser is downloaded. The screenshot lands in the test's tmp folder.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_serve import scene, serving

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,800",
    "--remote-debugging-port=0",
]

pytestmark = [
    pytest.mark.slow,  # a server and a browser start
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"),
]


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:  # events and other answers are skipped
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}; status: {self.evaluate(STATUS)!r}")

    def close(self) -> None:
        self.ws.close()


STATUS = "document.getElementById('status').textContent"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[str]:
    """Headless Chromium with a throw-away profile; yields its DevTools HTTP address."""
    profile = tmp_path / "profile"
    assert CHROMIUM is not None
    process = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit code {process.poll()})")
            time.sleep(0.2)
        yield f"127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _page_target(devtools: str) -> str:
    with urllib.request.urlopen(f"http://{devtools}/json/list", timeout=30) as response:
        targets = json.loads(response.read())
    return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")


def test_page_segments_an_uploaded_scene(tiny_checkpoint: Path, browser: str, tmp_path: Path) -> None:
    from hrseg.deploy import Segmenter

    image = scene(42, (96, 160))
    upload = tmp_path / "street.png"
    image.save(upload)
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    expected = segmenter.predict(image)

    with serving(tiny_checkpoint, tmp_path) as server:
        page = DevTools(_page_target(browser))
        try:
            page.call("Page.enable")
            page.call("Page.navigate", url=server.url + "/")
            page.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
            page.wait_for("document.getElementById('model').textContent.includes('classes')")
            document = page.call("DOM.getDocument")
            node = page.call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#file")
            page.call("DOM.setFileInputFiles", files=[str(upload)], nodeId=node["nodeId"])
            page.wait_for("document.querySelectorAll('#legend li').length > 0")
            size = page.wait_for(
                "(() => { const img = document.getElementById('overlay'); return img.complete && "
                "img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null; })()"
            )
            legend = page.evaluate(
                "[...document.querySelectorAll('#legend li')].map(li => +li.dataset.classId)"
            )
            swatch = page.evaluate(
                "getComputedStyle(document.querySelector('#legend .swatch')).backgroundColor"
            )
            status = page.evaluate(STATUS)
            shot = page.call("Page.captureScreenshot", format="png")
        finally:
            page.close()

    screenshot = tmp_path / "serve_page.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    assert size == [160, 96]
    assert status == "street.png: 160x96"
    assert sorted(legend) == sorted(int(c) for c in np.unique(expected))
    first = max(legend, key=lambda c: int((expected == c).sum()))  # the legend lists the largest class first
    assert legend[0] == first
    rgb = segmenter.palette[first]
    assert swatch == f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})"
    with Image.open(screenshot) as shot_image:
        assert shot_image.size[0] > 0 and shot_image.size[1] > 0
