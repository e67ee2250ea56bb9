"""Peak memory of ``hrseg predict`` over a growing number of images, in both forms of the command.

Each run is a fresh process that reports its peak resident memory (``ru_maxrss``); the images are generated
192x384 PNGs. Holding every label map (int64) would add ``images x 192 x 384 x 8`` bytes, so a flat peak
shows that predictions are written and dropped batch by batch. ``tests/test_predict_memory.py`` runs the
same measurement at 20 and 180 images; this command writes the record for the larger counts::

    python -m benchmarks.memory --counts 30,1000 --out benchmarks/records/<date>-cpu-predict-memory

It trains the two-step demo checkpoint the tests use (``hrseg fit --config demo``, 64x96) unless ``--ckpt``
is given, and writes ``predict-memory.md`` / ``.json`` with the command, commit, date and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import RSS_SAMPLER, describe_machine, log, machine_info

SIZE = (192, 384)
FORMS = ("checkpoint", "config")

# The peak alone can hide growth: start-up (imports, the first batch) may set it. So a thread also samples the
# resident memory every 50 ms, and the record compares the middle of the run with its end.
_RUN_AND_REPORT = (
    RSS_SAMPLER
    + """
from hrseg.commands import main
code = main(sys.argv[1:])
print("MAXRSS_KB", peak_kb())
print("RSS_KB", *samples)
sys.exit(code)
"""
)


def write_images(folder: Path, count: int) -> Path:
    """``count`` distinct 192x384 RGB PNGs (one random image rolled sideways) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(*SIZE, 3), dtype=np.uint8)
    for i in range(count):
        Image.fromarray(np.roll(base, i, axis=1)).save(folder / f"img_{i:04d}.png")
    return folder


def predict_args(form: str, ckpt: Path, images: Path, out: Path, root: Path) -> list[str]:
    """``hrseg predict`` arguments: the checkpoint alone (``checkpoint``) or the demo config's Trainer."""
    args = ["--ckpt_path", str(ckpt), "--input", str(images), "--output", str(out), "--no-progress"]
    if form == "config":
        args += ["--config", "demo", "--trainer.logger=false", f"--trainer.default_root_dir={root}"]
    return args


@dataclass(frozen=True)
class MemoryUse:
    """Resident memory of one ``hrseg predict`` process, in KiB."""

    peak_kb: int  #: the high-water mark (``ru_maxrss``)
    mid_kb: int  #: sampled halfway through the run
    end_kb: int  #: the last sample before the command returned

    @property
    def late_growth_mb(self) -> float:
        """Growth over the second half of the run, in MB: what predictions held in memory would show."""
        return (self.end_kb - self.mid_kb) / 1024


def memory_use(args: list[str], cwd: Path, timeout: float = 1800) -> MemoryUse:
    """Run ``hrseg predict ARGS`` in a fresh single-threaded process; its peak, mid-run and final memory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT, "predict", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"hrseg predict failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    lines = proc.stdout.splitlines()
    peak = int(next(ln for ln in lines if ln.startswith("MAXRSS_KB")).split()[1])
    samples = [int(v) for v in next(ln for ln in lines if ln.startswith("RSS_KB")).split()[1:]] or [peak]
    return MemoryUse(peak, samples[len(samples) // 2], samples[-1])


def held_label_maps_mb(images: int) -> float:
    """What keeping ``images`` int64 label maps of :data:`SIZE` in memory would add, in MB (2**20 bytes)."""
    return images * SIZE[0] * SIZE[1] * 8 / 2**20


def _tiny_checkpoint(root: Path) -> Path:
    from hrseg.commands import main

    main(
        [
            "fit",
            "--config=demo",
            f"--trainer.default_root_dir={root}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.save_dir={root}",
            "--trainer.max_steps=2",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_progress_bar=false",
            "--model.log_images=0",
            "--data.init_args.num_train=4",
            "--data.init_args.num_val=2",
            "--data.init_args.batch_size=2",
            "--data.init_args.image_size=[64, 96]",
        ]
    )
    return sorted(root.rglob("last.ckpt"))[-1]


def main(argv: list[str] | None = None) -> int:
    """Measure, print and write the record (``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="30,1000", help="image counts, comma-separated (default 30,1000)")
    parser.add_argument("--forms", default=",".join(FORMS), help="checkpoint,config")
    parser.add_argument("--ckpt", type=Path, help="checkpoint to predict with (default: a two-step demo fit)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/hrseg-predict-memory"), help="scratch folder")
    parser.add_argument("--out", type=Path, help="record folder (predict-memory.md / .json)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    forms = [f for f in args.forms.split(",") if f]
    command = "python -m benchmarks.memory " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine_info()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = args.ckpt or _tiny_checkpoint(args.work / "ckpt")
    rows = []
    for form in forms:
        for count in counts:
            images = write_images(args.work / f"in_{count}", count)
            out = args.work / f"out_{form}_{count}"
            use = memory_use(predict_args(form, ckpt, images, out, args.work), args.work)
            written = len(list(out.glob("*_trainIds.png")))
            row = {
                "form": form,
                "images": count,
                "peak_mb": round(use.peak_kb / 1024),
                "mid_mb": round(use.mid_kb / 1024),
                "end_mb": round(use.end_kb / 1024),
                "written": written,
            }
            rows.append(row)
            log(f"{form}: {count} images -> {row} (MB)")
    lines = [
        "# hrseg predict: peak memory against the image count",
        "",
        f"Command: `{command}`  ",
        f"Commit: {info.get('git')}; date {started:%Y-%m-%d %H:%M} UTC; total time "
        f"{(time.perf_counter() - t0) / 60:.1f} min  ",
        f"Machine: {describe_machine(info)}  ",
        f"Images: generated {SIZE[0]}x{SIZE[1]} PNGs; one fresh process per run, OMP_NUM_THREADS=1; "
        "peak = ru_maxrss of that process; mid / end = its resident memory sampled halfway through the run "
        "and last before the command returned (predictions held in memory would grow it from mid to end by "
        "half the last column; on a short run the middle is still start-up).",
        "",
        "| form | images | label maps written | peak RSS MB | peak growth over the first count MB | "
        "RSS mid / end MB | holding the label maps would add MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        first = next(r for r in rows if r["form"] == row["form"])
        grown = row["peak_mb"] - first["peak_mb"]
        held = held_label_maps_mb(row["images"] - first["images"])
        mid_end = f"{row['mid_mb']} / {row['end_mb']}"
        cells = [row["form"], row["images"], row["written"], row["peak_mb"], grown, mid_end, f"{held:.0f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "predict-memory.md").write_text(text)
        record = {"command": command, "created": started.isoformat(), "machine": info, "results": rows}
        (args.out / "predict-memory.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
