"""Prediction over a dataset holds O(batch) memory, in both forms of ``hrseg predict``.

Each run is a fresh process that reports its peak resident memory; the test compares a run over few images
with a run over six times as many. Keeping every label map (what ``return_predictions`` did) would add
``images x H x W x 8`` bytes, far above the bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = (192, 384)
# HRSEG_PREDICT_IMAGES=1000 reruns the check at the scale quoted in the README's reliability table
FEW, MANY = 30, int(os.environ.get("HRSEG_PREDICT_IMAGES", "180"))

RUN_AND_REPORT = """
import resource, sys
from hrseg.commands import main
code = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def _images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(*SIZE, 3), dtype=np.uint8)
    for i in range(count):
        Image.fromarray(np.roll(base, i, axis=1)).save(folder / f"img_{i:04d}.png")
    return folder


def _peak_kb(args: list[str], cwd: Path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT, "predict", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("MAXRSS_KB"))
    return int(line.split()[1])


@pytest.mark.slow
@pytest.mark.parametrize("form", ["checkpoint", "config"])
def test_predict_memory_does_not_grow_with_the_image_count(
    form: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    peaks = {}
    for count in (FEW, MANY):
        images = _images(tmp_path / f"in_{count}", count)
        out = tmp_path / f"out_{form}_{count}"
        args = ["--ckpt", str(tiny_checkpoint), "--input", str(images), "--output", str(out), "--no-progress"]
        if form == "config":
            args += ["--config", "demo", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"]
        peaks[count] = _peak_kb(args, tmp_path)
        assert len(list(out.glob("*_trainIds.png"))) == count
    growth_mb = (peaks[MANY] - peaks[FEW]) / 1024
    kept_mb = (MANY - FEW) * SIZE[0] * SIZE[1] * 8 / 2**20  # what holding every int64 label map would add
    mb = {count: peak / 1024 for count, peak in peaks.items()}
    print(f"{form}: peak RSS {mb[FEW]:.0f} MB for {FEW} images, {mb[MANY]:.0f} MB for {MANY}")
    assert growth_mb < kept_mb / 4, f"peak grew {growth_mb:.0f} MB for {MANY - FEW} more images ({peaks})"
