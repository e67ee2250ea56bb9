"""Cityscapes training data pipeline: decode a 1024x2048 PNG pair + the training augmentation, in samples/s.

One command: ``python -m benchmarks.run --only data``. Scenes are generated once in the real Cityscapes
layout (``hrseg.data.cityscapes.write_cityscapes``) and read through ``CityscapesDataModule``'s training
dataset and loader, so the numbers include file decoding, label mapping and validation, the albumentations
pipeline (random scale 0.5-2, pad, 512x1024 crop, flip, normalize) and collation. The per-worker rate is
measured in this process with one torch thread (what a DataLoader worker gets); the loader rate uses the
DataModule's default ``num_workers``. Both are set next to the model's training throughput from the same run.
"""

from __future__ import annotations

import inspect
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Column, Report, case_spec, log, markdown_table, ratio, run_budgeted
from benchmarks.models import make_weights
from benchmarks.train_step import train_case


def _dataset_root(cache: Path, size: tuple[int, int], n_train: int) -> Path:
    """Generate (once) ``n_train`` train + 1 val scenes of ``size`` in the Cityscapes layout."""
    from hrseg.data.cityscapes import write_cityscapes

    root = cache / f"cityscapes-{size[0]}x{size[1]}-{n_train}"
    done = root / ".complete"
    if not done.is_file():
        write_cityscapes(root, num_train=n_train, num_val=1, size=size, progress=False, num_test=0)
        done.write_text("ok\n")
    return root


def default_num_workers(device: str) -> int:
    """The workers CityscapesDataModule picks without configuration on ``device`` (one device process)."""
    from hrseg.data import CityscapesDataModule, auto_num_workers

    param = inspect.signature(CityscapesDataModule.__init__).parameters.get("num_workers")
    default = param.default if param is not None else None
    return int(default) if isinstance(default, int) else auto_num_workers(device.split(":")[0])


def _per_worker(ds: Any, n: int) -> dict[str, Any]:
    """Time ``ds[i]`` in this process with 1 torch thread; split into decode (+label mapping) and augment."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds[0]  # warm caches (imports, cv2 / PIL first use)
        total, decode, augment = [], [], []
        for i in range(n):
            idx = i % len(ds)
            t0 = time.perf_counter()
            image, mask, _ = ds.load(idx)
            t1 = time.perf_counter()
            ds.transform(image, mask)
            t2 = time.perf_counter()
            decode.append(t1 - t0)
            augment.append(t2 - t1)
            t3 = time.perf_counter()
            ds[idx]
            total.append(time.perf_counter() - t3)
    finally:
        torch.set_num_threads(threads)
    med = statistics.median(total)
    return {
        "sample_s": med,
        "samples_per_s": 1.0 / med,
        "decode_s": statistics.median(decode),
        "augment_s": statistics.median(augment),
        "n": n,
    }


def _loader_rate(dm: Any, ds: Any, batches: int, workers: int) -> dict[str, Any]:
    """Samples/s of the DataModule's training loader, excluding the first batch (worker start-up)."""
    import copy

    dm.num_workers = workers
    repeat = max(1, (batches + 1) * dm.batch_size // max(1, len(ds)) + 1)
    # the same dataset with its sample list repeated: the training sampler hands it (index, seed) keys,
    # which a ConcatDataset would not understand
    repeated = copy.copy(ds)
    repeated.samples = list(ds.samples) * repeat
    dm.train_dataset = repeated
    loader = dm.train_dataloader()
    it = iter(loader)
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    seen = 0
    for _ in range(batches):
        batch = next(it)
        seen += int(batch["image"].shape[0])
    elapsed = time.perf_counter() - t0
    del it, loader
    return {"workers": workers, "samples_per_s": seen / elapsed, "first_batch_s": first, "samples": seen}


def _train_throughput(cfg: Any, train_report: Report | None) -> list[dict[str, Any]]:
    """Best hrseg training samples/s per variant: from this run's train benchmark, else measured here."""
    if train_report is not None:
        rows = train_report.extra.get("ratios", [])
        got = [
            {"variant": r["variant"], "path": r["best_path"], "samples_per_s": r["best_samples_per_s"]}
            for r in rows
            if r.get("best_samples_per_s")
        ]
        if got:
            return got
    variant = cfg.train_variants[0]
    weights = make_weights(variant, Path(cfg.cache), cfg.num_classes, cfg.fuse_mode)
    spec = case_spec(
        cfg, variant, cfg.train_size, cfg.train_batch, "hrseg", weights, cfg.train_warmup, cfg.train_iters
    )
    log(f"data: measuring the training throughput of {variant} (train benchmark not in this run)")
    res = run_budgeted(train_case, spec, cfg)
    if "error" in res:
        return []
    return [{"variant": variant, "path": "hrseg", "samples_per_s": res["samples_per_s"]}]


def run(cfg: Any, train_report: Report | None = None) -> Report:
    """Per-worker and default-loader rates, and their ratio to the model's training throughput."""
    from hrseg.data import CityscapesDataModule

    src = tuple(cfg.data_source_size)
    crop = tuple(cfg.train_size)
    root = _dataset_root(Path(cfg.cache), src, cfg.data_images)
    dm = CityscapesDataModule(root=str(root), batch_size=cfg.train_batch, crop_size=crop)
    ds = dm.build_dataset(dm.train_split, train=True)
    files = [Path(s.image).stat().st_size for s in ds.samples]
    log(f"data: per-worker rate on {len(ds)} generated {src[0]}x{src[1]} pairs")
    per_worker = _per_worker(ds, cfg.data_samples)
    n_default = default_num_workers(cfg.device)
    loaders = []
    for workers in dict.fromkeys([n_default, *cfg.data_workers]):
        log(f"data: loader with num_workers={workers}")
        loaders.append(_loader_rate(dm, ds, cfg.data_batches, workers))
    default_rate = next(x["samples_per_s"] for x in loaders if x["workers"] == n_default)
    train = _train_throughput(cfg, train_report)
    rows: list[dict[str, Any]] = []
    for t in train:
        train_rate = t["samples_per_s"]
        rows.append(
            {
                "variant": t["variant"],
                "train_path": t["path"],
                "train_samples_per_s": train_rate,
                "default_workers": n_default,
                "loader_samples_per_s": default_rate,
                "per_worker_samples_per_s": per_worker["samples_per_s"],
                "loader_over_train": ratio(default_rate, train_rate),
                # with 0 workers loading is serial with the step: the share of each iteration spent loading
                "loading_share_if_serial": ratio(1.0 / default_rate, 1.0 / default_rate + 1.0 / train_rate),
            }
        )
    md = (
        f"Source {src[0]}x{src[1]} PNG pairs (image ~{statistics.mean(files) / 2**20:.1f} MB each; real "
        f"Cityscapes PNGs average ~2 MB), crop {crop[0]}x{crop[1]}, batch {cfg.train_batch}.\n\n"
        f"Per worker (1 torch thread): {per_worker['samples_per_s']:.2f} samples/s "
        f"(decode + label mapping {per_worker['decode_s'] * 1e3:.0f} ms, augmentation "
        f"{per_worker['augment_s'] * 1e3:.0f} ms per sample).\n\n"
        + markdown_table(
            loaders,
            [
                Column("workers", "num_workers"),
                Column("samples_per_s", "loader samples/s"),
                Column("first_batch_s", "first batch s"),
            ],
        )
        + "\n\n### Against the model's training throughput\n\n"
        + markdown_table(
            rows,
            [
                Column("variant", "model"),
                Column("train_path", "train path"),
                Column("train_samples_per_s", "train samples/s"),
                Column("default_workers", "default num_workers"),
                Column("loader_samples_per_s", "loader samples/s"),
                Column("loader_over_train", "loader / train"),
                Column("loading_share_if_serial", "loading share (serial)", "{:.1%}"),
            ],
        )
        + "\n"
    )
    config = {
        "source_size": list(src),
        "crop": list(crop),
        "batch": cfg.train_batch,
        "images": cfg.data_images,
        "samples": cfg.data_samples,
        "batches": cfg.data_batches,
        "default_num_workers": n_default,
        "workers_measured": [x["workers"] for x in loaders],
    }
    extra = {"per_worker": per_worker, "loaders": loaders, "image_file_bytes": files}
    return Report("data", config, rows, cfg.machine, md, extra)
