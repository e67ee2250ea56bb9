"""Streamed prediction of large rasters: the in-memory label map bit for bit, georeference kept, resumable.

The model is a tiny HRNetV2 (test_models' TINY_SPEC) at random initialisation, whose logits vary enough to
exercise every argmax, on small generated rasters with small windows, so every case crosses window rows,
strips and bands. The CLI cases use the shared demo checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from test_models import TINY_SPEC

from hrseg.commands import main
from hrseg.deploy import Segmenter
from hrseg.deploy.stream import (
    StreamOptions,
    partial_paths,
    predict_raster,
    should_stream,
    stream_protocol,
)
from hrseg.eval_protocol import EvalProtocol
from hrseg.metadata import LabelSet, ModelMeta
from hrseg.models import build_model
from hrseg.rasters import RasterError

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 4000000.0, 0.5, 0.5)


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    torch.manual_seed(0)
    model = build_model("hrnetv2", num_classes=6, spec=TINY_SPEC)
    meta = ModelMeta("hrnetv2", LabelSet.generic(6), model_options={"spec": TINY_SPEC})
    return Segmenter(model, meta, device="cpu")


def scene(height: int, width: int, bands: int = 3, seed: int = 0, dtype: str = "uint8") -> np.ndarray:
    """Smooth random shapes (the network sees structure, not noise): ``(height, width, bands)``."""
    rng = np.random.default_rng(seed)
    top = 255 if dtype == "uint8" else 4095
    coarse = rng.random((height // 8 + 2, width // 8 + 2, bands))
    up = np.kron(coarse, np.ones((8, 8, 1)))[:height, :width]
    return (up * top + rng.random((height, width, bands)) * top * 0.1).clip(0, top).astype(dtype)


def write_raster(path: Path, pixels: np.ndarray, nodata: float | None = None, georef: bool = True) -> Path:
    extra = {"crs": CRS, "transform": TRANSFORM} if georef else {}
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=pixels.shape[0],
        width=pixels.shape[1],
        count=pixels.shape[2],
        dtype=pixels.dtype.name,
        nodata=nodata,
        tiled=True,
        blockxsize=64,
        blockysize=64,
        **extra,
    ) as dst:
        dst.write(pixels.transpose(2, 0, 1))
    return path


def read_labels(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.parametrize(
    ("size", "protocol", "strip"),
    [
        ((101, 150), EvalProtocol("slide", window=(48, 64), flip=True), 8192),
        ((77, 131), EvalProtocol("slide", window=(40, 48), stride=(17, 30)), 50),
        (
            (90, 117),
            EvalProtocol("tile", window=(48, 64), stride=(30, 40), scales=(0.75, 1.25), flip=True),
            70,
        ),
    ],
    ids=["slide-flip", "slide-3-rows-overlap-strips", "tile-scales-flip-strips"],
)
def test_streamed_equals_in_memory(
    segmenter: Segmenter, tmp_path: Path, size: tuple[int, int], protocol: EvalProtocol, strip: int
) -> None:
    """Sizes not divisible by the window, strips narrower than the image, bands not aligned to windows."""
    pixels = scene(*size)
    src = write_raster(tmp_path / "in.tif", pixels)
    segmenter.protocol = protocol
    expected = segmenter.predict(pixels)
    out = segmenter.predict_raster(src, tmp_path / "out.tif", band_rows=23, strip_width=strip)
    got = read_labels(out)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected), f"{(got != expected).sum()} labels differ"
    assert len(np.unique(expected)) > 1  # the comparison says something
    assert not any(partial_paths(out)[i].exists() for i in (0, 1))


def test_stream_protocol_says_what_changes() -> None:
    slide = EvalProtocol("slide", window=(64, 64), scales=(0.5, 1.0), flip=True)
    assert stream_protocol(slide)[0] == slide.replace(mode="tile")
    assert "tile" in (stream_protocol(slide)[1] or "")
    assert stream_protocol(EvalProtocol())[0] == EvalProtocol("slide", window=(1024, 1024))
    one = EvalProtocol("slide", window=(64, 64), flip=True)
    assert stream_protocol(one) == (one, None)
    official = EvalProtocol("official", window=(64, 64), base_size=520, scales=(0.5, 1.0), flip=True)
    streamed, note = stream_protocol(official)
    assert streamed == EvalProtocol("tile", window=(64, 64), scales=(0.5, 1.0), flip=True)
    assert "official" in (note or "")


def test_geotiff_keeps_crs_transform_and_nodata(segmenter: Segmenter, tmp_path: Path) -> None:
    pixels = scene(70, 90)
    pixels[10:30, 20:50] = 0  # the nodata value: left unlabelled
    src = write_raster(tmp_path / "geo.tif", pixels, nodata=0)
    segmenter.protocol = EvalProtocol("slide", window=(48, 48))
    out = segmenter.predict_raster(src, tmp_path / "geo_labels.tif", overviews=True)
    with rasterio.open(out) as dst:
        assert dst.crs == rasterio.crs.CRS.from_string(CRS)
        assert dst.transform == TRANSFORM
        assert (dst.height, dst.width, dst.count, dst.dtypes[0]) == (70, 90, 1, "uint8")
        assert dst.nodata == 255
        assert dst.profile["tiled"] and dst.compression.name == "deflate"
        labels = dst.read(1)
        colours = dst.colormap(1)
    assert (labels[10:30, 20:50] == 255).all()
    outside = np.ones(labels.shape, bool)
    outside[10:30, 20:50] = False
    assert (labels[outside] < 6).all()
    assert colours[1][:3] == tuple(segmenter.palette[1])


def test_band_selection(segmenter: Segmenter, tmp_path: Path) -> None:
    pixels = scene(60, 75, bands=5, dtype="uint16")
    src = write_raster(tmp_path / "multi.tif", pixels)
    segmenter.protocol = EvalProtocol("slide", window=(40, 40))
    out = segmenter.predict_raster(src, tmp_path / "multi_labels.tif", bands="3,2,1")
    assert np.array_equal(read_labels(out), segmenter.predict(pixels[..., [2, 1, 0]]))
    with pytest.raises(
        RasterError, match=r"multi\.tif: 5 bands for a 3-band model; choose them with --bands"
    ):
        segmenter.predict_raster(src, tmp_path / "x.tif")
    with pytest.raises(RasterError, match=r"multi\.tif: band 7 does not exist \(the raster has 5 bands"):
        segmenter.predict_raster(src, tmp_path / "x.tif", bands=(7, 2, 1))


@pytest.mark.parametrize("calls", [3, 7])
def test_interrupted_strips_resume_to_the_same_labels(
    segmenter: Segmenter, tmp_path: Path, calls: int
) -> None:
    """A run stopped after some forwards (in the first or the second strip) resumes to the in-memory map."""
    pixels = scene(110, 100)
    src = write_raster(tmp_path / "in.tif", pixels)
    segmenter.protocol = EvalProtocol("slide", window=(32, 40), stride=(20, 30))
    expected = segmenter.predict(pixels)
    count = 0

    def failing(x: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        if count > calls:
            raise RuntimeError("stopped")
        return segmenter.model(x)

    out = tmp_path / "labels.tif"
    options = StreamOptions(band_rows=10, strip_width=60)
    kwargs = {"batch_windows": segmenter.batch_windows, "options": options}
    with pytest.raises(RuntimeError, match="stopped"):
        predict_raster(src, out, failing, segmenter.meta, segmenter.protocol, **kwargs)
    state = json.loads(partial_paths(out)[1].read_text())
    assert (state["strip"], state["row"]) != (0, 0) and not out.exists()
    predict_raster(src, out, segmenter.model, segmenter.meta, segmenter.protocol, **kwargs)
    assert np.array_equal(read_labels(out), expected)


def test_plain_png_streams_through_gdal(segmenter: Segmenter, tmp_path: Path) -> None:
    """A plain PNG (decoded sequentially) streams to a TIFF without georeference, equal to memory."""
    from PIL import Image

    pixels = scene(83, 70)
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    segmenter.protocol = EvalProtocol("slide", window=(40, 40), flip=True)
    out = segmenter.predict_raster(tmp_path / "plain.png", tmp_path / "plain_labels.tif", band_rows=16)
    with rasterio.open(out) as dst:
        assert dst.crs is None and dst.transform.is_identity
        assert np.array_equal(dst.read(1), segmenter.predict(pixels))


def test_without_rasterio_or_too_big_for_pil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No rasterio: auto predicts in memory and says why; PIL refuses what it cannot read whole."""
    from PIL import Image

    import hrseg.deploy.stream as stream
    from hrseg.images import ImageFileError, open_image

    path = tmp_path / "wide.png"
    Image.fromarray(scene(64, 64)).save(path)
    assert should_stream(path, "auto", above_mp=0.001)[0]  # with rasterio: above the threshold, streamed
    monkeypatch.setattr(stream, "rasterio_available", lambda: False)
    streamed, note = should_stream(path, "auto", above_mp=0.001)
    assert not streamed and note is not None and "pip install hrseg[geo]" in note
    with pytest.raises(ImportError, match=r"pip install hrseg\[geo\]"):
        should_stream(path, "on")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: more than twice PIL's limit
    with pytest.raises(ImageFileError, match=r"wide\.png: too big to read whole .* pip install hrseg\[geo\]"):
        open_image(path)


def _one_error_line(err: str, path: Path, words: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert not any("Traceback" in ln for ln in lines), err
    failed = [ln for ln in lines if str(path) in ln]
    assert len(failed) == 1 and words in failed[0], err


@pytest.mark.slow  # five `hrseg predict` runs of the demo checkpoint
def test_bad_rasters_end_in_one_line_naming_the_file(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_raster(tmp_path / "good.tif", scene(128, 128))
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    no_bands = tmp_path / "no_bands.pix"  # PCIDSK: a raster format that holds zero bands
    with rasterio.open(no_bands, "w", driver="PCIDSK", width=64, height=64, count=0, dtype="uint8"):
        pass
    common = ["predict", "--ckpt_path", str(tiny_checkpoint), "--no-progress", "--stream", "on"]
    common += ["--mode", "slide", "--window", "64x64"]
    cases = [
        (truncated, [], "cannot read rows"),
        (no_bands, [], "the raster has no bands"),
        (good, ["--bands", "4,2,1"], "band 4 does not exist"),
    ]
    for path, extra, words in cases:
        code = main([*common, "--input", str(path), "--output", str(tmp_path / "out"), *extra])
        assert code == 1
        captured = capsys.readouterr()
        _one_error_line(captured.err + captured.out, path, words)
    assert not (tmp_path / "out" / "truncated_trainIds.tif").exists()
    folder = tmp_path / "folder"  # a folder: the good raster is written, the bad one listed at the end
    folder.mkdir()
    for path in (good, truncated):
        (folder / path.name).write_bytes(path.read_bytes())
    assert main([*common, "--input", str(folder), "--output", str(tmp_path / "out")]) == 1
    _one_error_line(capsys.readouterr().out, folder / "truncated.tif", "cannot read rows")
    assert (tmp_path / "out" / "good_trainIds.tif").is_file()


@pytest.mark.slow  # two `hrseg predict` processes
def test_killed_run_resumes_from_the_last_band(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """SIGKILL mid-image: no output file, only the marked partial; the rerun resumes and matches memory."""
    pixels = scene(176, 120)
    src = write_raster(tmp_path / "big.tif", pixels)
    out_dir = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "hrseg",
        "predict",
        "--ckpt_path",
        str(tiny_checkpoint),
        "--input",
        str(src),
    ]
    argv += ["--output", str(out_dir), "--mode", "slide", "--window", "48x48", "--band-rows", "16"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    output = out_dir / "big_trainIds.tif"
    raw, state = partial_paths(output)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    row = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file():
            try:
                row = int(json.loads(state.read_text())["row"])
            except (ValueError, KeyError):
                row = 0
            if row > 0:
                break
        time.sleep(0.01)
    assert proc.poll() is None, (
        f"the run ended before it could be killed: {proc.stderr.read() if proc.stderr else ''}"
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not output.exists() and raw.is_file() and state.is_file()
    done = json.loads(state.read_text())["row"]
    assert 0 < done < 176
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming at strip 1/1, row" in rerun.stderr
    seg = Segmenter.from_checkpoint(
        tiny_checkpoint, device="cpu", protocol={"mode": "slide", "window": (48, 48)}
    )
    assert np.array_equal(read_labels(output), seg.predict(pixels))
    assert not raw.exists() and not state.exists()
