"""ONNX Runtime set up by hand: what ``benchmarks.backends --predict-folder`` times ``hrseg predict`` against.

``python benchmarks/hand_ort.py MODEL.onnx IMAGE_DIR OUT_DIR``

Written the way a user would without hrseg: no hrseg import, an ``InferenceSession`` with default options and
the CPU provider, PIL in and out, ImageNet normalization (the mean / std are read from the export's metadata,
which is where a user finds them), argmax, one ``<stem>_trainIds.png`` per image. Prints the seconds spent on
images (after the session is created) on the last line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image


def main(argv: list[str]) -> int:
    """Predict every PNG / JPEG of ``IMAGE_DIR`` into ``OUT_DIR``."""
    model, image_dir, out_dir = argv
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["hrseg_config"])
    mean = np.asarray(meta["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    scale = 255.0 if mean.max() <= 1.0 else 1.0  # mean / std in [0, 1] units: scale them to pixel values
    name = session.get_inputs()[0].name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for path in sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        x = (img.transpose(2, 0, 1)[None] - mean * scale) / (std * scale)
        logits = session.run(None, {name: x.astype(np.float32)})[0]
        Image.fromarray(logits[0].argmax(0).astype(np.uint8)).save(out / f"{path.stem}_trainIds.png")
    print(f"{time.perf_counter() - start:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
