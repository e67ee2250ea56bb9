"""Generate the example notebooks from plain Python so they stay reviewable in diffs.

Run ``python notebooks/make_notebooks.py --execute`` (or ``make notebooks``) after editing a cell below: it
rewrites ``01_quickstart.ipynb`` and ``02_inference_and_export.ipynb`` and executes them with small settings
(``HRSEG_NB_SMALL=1``, a few minutes on a CPU), so they are stored with their outputs and figures and read
well on a repository page. Without ``--execute`` the notebooks are written without outputs. Every notebook
starts with a settings cell that reads ``HRSEG_NB_*`` environment variables, so the test suite
(``tests/test_notebooks.py``) runs them as stored with tiny settings (``HRSEG_NB_FAST=1``): they cannot rot.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNEL = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def _nb(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook(metadata=KERNEL)
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    return nb


QUICKSTART: list[tuple[str, str]] = [
    (
        "md",
        """# hrseg quickstart: train HRNetV2 on generated street scenes

This notebook trains the demo configuration (`configs/demo.yaml`: HRNetV2-W18-Small-v1 on generated
scenes with the 19 Cityscapes classes) exactly as `hrseg fit --config demo` does, then plots the loss and
mIoU curves, shows predictions with palette overlays and the per-class IoU.

Everything runs on a CPU. The first cell holds the settings: the defaults train the demo as `hrseg fit
--config demo` does (about 2 minutes on a quiet 2-core CPU), the stored outputs come from smaller settings
(`HRSEG_NB_SMALL=1`) and the test suite runs a tiny version (`HRSEG_NB_FAST=1`).""",
    ),
    (
        "code",
        """import os
from pathlib import Path

FAST = os.environ.get("HRSEG_NB_FAST", "0") == "1"     # the test suite's tiny run
SMALL = os.environ.get("HRSEG_NB_SMALL", "0") == "1"   # the stored outputs: small, still learning something
WORKDIR = Path(os.environ.get("HRSEG_NB_WORKDIR", "runs/notebook_quickstart")).resolve()

MAX_EPOCHS = 1 if FAST else 8 if SMALL else 10
MAX_STEPS = 3 if FAST else -1          # -1: no step limit
NUM_TRAIN = 6 if FAST else 64 if SMALL else 160
NUM_VAL = 4 if FAST else 8 if SMALL else 32
IMAGE_SIZE = (64, 128) if FAST or SMALL else (96, 192)
BATCH_SIZE = 2 if FAST else 8
NUM_SHOW = 2 if FAST else 4
print(f"FAST={FAST}, SMALL={SMALL}, outputs in {WORKDIR.name}/")""",
    ),
    (
        "md",
        "## The data\n\nThe demo DataModule draws street scenes on the fly (no download).",
    ),
    (
        "code",
        """%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

import hrseg
from hrseg.data import DemoDataModule

dm = DemoDataModule(num_train=NUM_TRAIN, num_val=NUM_VAL, image_size=IMAGE_SIZE, batch_size=BATCH_SIZE)
dm.setup("fit")
print(dm.labels.num_classes, "classes:", ", ".join(dm.labels.class_names))
display(dm.plot(dm.val_dataset[0]))""",
    ),
    (
        "md",
        """## Train

The same call as `hrseg fit --config demo ...` on the command line. A CSV logger is added so the curves can be
read back below (TensorBoard works too: `--trainer.logger lightning.pytorch.loggers.TensorBoardLogger`).""",
    ),
    (
        "code",
        """from hrseg.commands import main as hrseg_cli

args = [
    "fit", "--config", "demo",
    "--trainer.default_root_dir", str(WORKDIR),
    "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
    "--trainer.logger.save_dir", str(WORKDIR),
    "--trainer.max_epochs", str(MAX_EPOCHS),
    "--trainer.max_steps", str(MAX_STEPS),
    "--trainer.log_every_n_steps", "1",
    "--trainer.enable_progress_bar", str(not FAST).lower(),
    "--data.init_args.num_train", str(NUM_TRAIN),
    "--data.init_args.num_val", str(NUM_VAL),
    "--data.init_args.image_size", str(list(IMAGE_SIZE)),
    "--data.init_args.batch_size", str(BATCH_SIZE),
    "--data.init_args.eval_batch_size", str(BATCH_SIZE),
]
hrseg_cli(args)

version_dir = max((WORKDIR / "lightning_logs").glob("version_*"), key=lambda p: p.stat().st_mtime)
checkpoints = sorted((version_dir / "checkpoints").glob("*.ckpt"))
CKPT = next((p for p in checkpoints if p.name.startswith("best")), checkpoints[-1])
print("checkpoint:", CKPT.relative_to(WORKDIR))""",
    ),
    ("md", "## Loss and mIoU curves\n\nRead from the run's `metrics.csv`."),
    (
        "code",
        """import csv

with open(version_dir / "metrics.csv", newline="") as fh:
    rows = list(csv.DictReader(fh))

def series(key, x="step"):
    pts = [(float(r[x]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    return np.array(pts).reshape(-1, 2)

loss, miou = series("train/loss"), series("val/mIoU", "epoch")
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(loss[:, 0], loss[:, 1], marker=".")
ax1.set(xlabel="step", ylabel="cross-entropy", title="training loss")
ax2.plot(miou[:, 0] + 1, miou[:, 1], marker="o")
top = max(0.05, float(miou[:, 1].max()) * 1.2)
ax2.set(xlabel="epoch", ylabel="mIoU", title="validation mIoU", ylim=(0, top))
fig.tight_layout()""",
    ),
    (
        "md",
        """## Predictions with palette overlays

`hrseg.Segmenter` loads the Lightning checkpoint without Lightning and takes paths, PIL images, numpy
arrays or tensors of any size.""",
    ),
    (
        "code",
        """from hrseg.data import generate_scene

seg = hrseg.Segmenter.from_checkpoint(CKPT)
scenes = [generate_scene([99, i], size=IMAGE_SIZE) for i in range(NUM_SHOW)]
fig, axes = plt.subplots(NUM_SHOW, 3, figsize=(11, 2.2 * NUM_SHOW), squeeze=False)
for row, (image, truth) in zip(axes, scenes, strict=True):
    pred = seg.predict(image)
    for ax, picture, title in zip(
        row,
        [image, seg.colorize(truth), seg.overlay(image, pred)],
        ["image", "ground truth", "prediction overlay"],
        strict=True,
    ):
        ax.imshow(picture)
        ax.set_title(title)
        ax.axis("off")
fig.tight_layout()""",
    ),
    (
        "md",
        """## Per-class IoU

Accumulated over the whole set with one confusion matrix (the official protocol), not averaged per image.""",
    ),
    (
        "code",
        """from hrseg.metrics import SegmentationMetrics
from hrseg.viz import plot_per_class_iou

metric = SegmentationMetrics(seg.num_classes, ignore_index=seg.meta.labels.ignore_index)
for image, truth in scenes:
    metric.update(torch.from_numpy(seg.predict(image))[None], torch.from_numpy(truth.astype(np.int64))[None])
scores = metric.compute()
print(f"mIoU {float(scores['mIoU']):.3f}, pixel accuracy {float(scores['pixel_acc']):.3f}")
display(plot_per_class_iou(scores["iou"], seg.class_names, seg.palette))""",
    ),
    (
        "md",
        """Next: `02_inference_and_export.ipynb` runs a checkpoint on large images with a sliding window and
test-time augmentation, and exports it to ONNX.""",
    ),
]


INFERENCE: list[tuple[str, str]] = [
    (
        "md",
        """# Inference and export

Load a checkpoint, run a large image with a sliding window and test-time augmentation (multi-scale +
flip, the official evaluation protocol), export the model to ONNX with a parity check, and time eager
PyTorch, the fast path (conv+BN folding, channels_last) and ONNX Runtime.

The checkpoint comes from `HRSEG_NB_CKPT`, else the newest one under `runs/` (e.g. from `hrseg fit --config
demo` or the quickstart notebook), else a very short training run is made here.""",
    ),
    (
        "code",
        """import os
from pathlib import Path

FAST = os.environ.get("HRSEG_NB_FAST", "0") == "1"     # the test suite's tiny run
SMALL = os.environ.get("HRSEG_NB_SMALL", "0") == "1"   # the stored outputs
WORKDIR = Path(os.environ.get("HRSEG_NB_WORKDIR", "runs/notebook_inference")).resolve()
CKPT = os.environ.get("HRSEG_NB_CKPT")

LARGE_SIZE = (192, 384) if FAST else (256, 512) if SMALL else (512, 1024)  # (H, W) of the "large" image
WINDOW = (96, 128) if FAST else (128, 256) if SMALL else (256, 512)
SCALES = (0.75, 1.0, 1.25)
TIMING_REPEATS = 1 if FAST else 3 if SMALL else 5
WORKDIR.mkdir(parents=True, exist_ok=True)
print(f"FAST={FAST}, SMALL={SMALL}, outputs in {WORKDIR.name}/")""",
    ),
    (
        "code",
        """from hrseg.commands import main as hrseg_cli

if CKPT is None:
    runs = Path("runs")
    found = sorted(runs.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if found:
        CKPT = found[-1]
    else:  # no checkpoint around: train the demo model for a few steps
        hrseg_cli([
            "fit", "--config", "demo", "--trainer.default_root_dir", str(WORKDIR),
            "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false",
            "--data.init_args.num_train", "6", "--data.init_args.num_val", "2",
            "--data.init_args.batch_size", "2", "--data.init_args.image_size", "[64, 128]",
        ])
        CKPT = sorted(WORKDIR.rglob("last.ckpt"))[-1]
CKPT = Path(CKPT)
print("checkpoint:", CKPT.name)""",
    ),
    (
        "md",
        "## Load the checkpoint\n\nA Lightning `.ckpt` is read as a plain dict: no Lightning needed here.",
    ),
    (
        "code",
        """%matplotlib inline
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import hrseg
from hrseg.data import generate_scene

seg = hrseg.Segmenter.from_checkpoint(CKPT)
print(seg.meta.model, "-", seg.num_classes, "classes:", ", ".join(seg.class_names[:5]), "...")""",
    ),
    (
        "md",
        """## A large image: whole, sliding window, and sliding window + multi-scale + flip

Windows are batched and overlap by a third; the last window is aligned to the border; overlapping outputs are
averaged. Memory is bounded by the window size times the window batch, whatever the image size.""",
    ),
    (
        "code",
        """image, truth = generate_scene(2024, size=LARGE_SIZE)

settings = {
    "whole": hrseg.EvalProtocol("whole"),
    "sliding window": hrseg.EvalProtocol("slide", window=WINDOW),
    "slide + multi-scale + flip": hrseg.EvalProtocol("slide", window=WINDOW, scales=SCALES, flip=True),
}
results = {}
for name, protocol in settings.items():
    s = hrseg.Segmenter(seg.model, seg.meta, protocol=protocol, fast=False)  # seg.model is already prepared
    start = time.perf_counter()
    mask = s.predict(image)
    results[name] = (mask, time.perf_counter() - start)
    acc = (mask == truth).mean()
    print(f"{name:28s} {results[name][1]:6.2f} s   pixel accuracy vs. ground truth {acc:.3f}")

fig, axes = plt.subplots(1, 4, figsize=(16, 3))
axes[0].imshow(image)
axes[0].set_title("image")
for ax, (name, (mask, _)) in zip(axes[1:], results.items(), strict=True):
    ax.imshow(seg.colorize(mask))
    ax.set_title(name)
for ax in axes:
    ax.axis("off")
fig.tight_layout()""",
    ),
    (
        "md",
        """## Export to ONNX and compare

`hrseg export` folds BN into the convolutions, exports with dynamic batch / height / width, loads the file
back in ONNX Runtime and compares it with the eager model on an input of another size. The same from the
command line: `hrseg export --ckpt_path CKPT --format onnx --output model.onnx`.""",
    ),
    (
        "code",
        """from hrseg.export import export

onnx_path = WORKDIR / "model.onnx"
result = export(CKPT, "onnx", onnx_path, height=128, width=128)
print(result.summary())
assert result.passed""",
    ),
    (
        "code",
        """import onnxruntime as ort

session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
x = seg.normalize(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0)  # the large image
onnx_logits = session.run(None, {"image": x.numpy()})[0]
eager_model, _ = hrseg.inference.load_checkpoint(CKPT)
with torch.inference_mode():
    eager_logits = eager_model(x).numpy()
print("input", tuple(x.shape), "-> logits", onnx_logits.shape)
print(f"max |onnx - eager| on the large image: {np.abs(onnx_logits - eager_logits).max():.2e}")

onnx_seg = hrseg.Segmenter.from_checkpoint(onnx_path)  # self-describing: classes, palette, mean/std
same = (onnx_seg.predict(image) == results["whole"][0]).mean()
print(f"the ONNX label map equals the eager one on {same:.4%} of the pixels")""",
    ),
    ("md", "## Timing: eager vs. the fast path vs. ONNX Runtime (one forward of the large image)"),
    (
        "code",
        """from hrseg.inference import prepare_for_inference

fast_model = prepare_for_inference(eager_model)  # conv+BN folded, channels_last

def best_time(fn, repeats=TIMING_REPEATS):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

with torch.inference_mode():
    timings = {
        "eager": best_time(lambda: eager_model(x)),
        "fast path": best_time(lambda: fast_model(x)),
        "ONNX Runtime": best_time(lambda: session.run(None, {"image": x.numpy()})),
    }
for name, seconds in timings.items():
    print(f"{name:14s} {seconds * 1000:8.1f} ms  ({timings['eager'] / seconds:.2f}x eager)")""",
    ),
    (
        "md",
        """## HRNet-OCR: the same API, two outputs in training

`hrnetv2_*_ocr` models put the object-contextual representation head on the same backbone
(docs/reference/ocr.md). In training mode they return `[aux, main]` (the task weights the losses 0.4 / 1.0);
in eval mode only the main logits, so evaluation, `Segmenter`, `hrseg predict` and `hrseg export` use them
as they use HRNetV2. The model below is untrained: the point is the API, not the masks.""",
    ),
    (
        "code",
        """from hrseg.metadata import LabelSet, ModelMeta

ocr_model = hrseg.build_model("hrnetv2_w18_small_v1_ocr", num_classes=19)
batch = torch.randn(2, 3, 64, 128)
ocr_model.train()
aux, main = ocr_model(batch)  # training: [aux, main], both at 1/4 of the input size
print("train: aux", tuple(aux.shape), "main", tuple(main.shape))
ocr_model.eval()
with torch.inference_mode():
    logits = ocr_model(batch)  # eval: the main logits only
    assert torch.equal(logits, ocr_model.forward_outputs(batch)[1])
print("eval: logits", tuple(logits.shape))

ocr_meta = ModelMeta(model="hrnetv2_w18_small_v1_ocr", labels=LabelSet.generic(19))
# fast path: OCR BNs folded too
ocr_seg = hrseg.Segmenter(ocr_model, ocr_meta, protocol=hrseg.EvalProtocol("slide", window=WINDOW))
ocr_mask = ocr_seg.predict(image)
print(f"Segmenter, sliding window: {ocr_mask.shape} {ocr_mask.dtype}, max label {int(ocr_mask.max())}")
assert ocr_mask.shape == image.shape[:2]""",
    ),
    (
        "md",
        """Other formats: `--format pt2` (torch.export program, dynamic shapes) and `--format safetensors`
(weights plus a JSON of model config and class metadata); `hrseg.Segmenter.from_checkpoint` loads all.""",
    ),
]


NOTEBOOKS = (("01_quickstart.ipynb", QUICKSTART), ("02_inference_and_export.ipynb", INFERENCE))


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as generated from the cells above (no outputs)."""
    nb = _nb(dict(NOTEBOOKS)[name])
    nbformat.validate(nb)
    return nb


def execute(nb: nbformat.NotebookNode, workdir: Path, timeout: int = 1800) -> nbformat.NotebookNode:
    """Run ``nb`` in ``workdir`` with the small settings (``HRSEG_NB_SMALL=1``); returns it with outputs."""
    from nbclient import NotebookClient

    os.environ["HRSEG_NB_SMALL"] = "1"
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    for cell in nb.cells:  # the scratch folder's path means nothing to a reader
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = (
                    output["text"].replace(f"{workdir.resolve()}/", "").replace(str(workdir), ".")
                )
    return nb


def main(argv: list[str] | None = None) -> int:
    """Write both notebooks; ``--execute`` runs them (quickstart first: the second uses its checkpoint)."""
    parser = argparse.ArgumentParser(description="Write (and execute) the example notebooks.")
    parser.add_argument("--execute", action="store_true", help="store them executed, with small settings")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hrseg-notebooks-") as tmp:
        for name, _ in NOTEBOOKS:
            nb = build(name)
            if args.execute:
                print("executing", name, file=sys.stderr)
                nb = execute(nb, Path(tmp))
            nbformat.write(nb, HERE / name)
            print("wrote", HERE / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
