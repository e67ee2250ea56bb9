"""The forward benchmark as a picture: each path's throughput relative to the timm reference, per case.

Written by the suite as ``forward.png`` next to ``forward.json``;
``python -m benchmarks.plots RUN_DIR [OUT.png]`` redraws it from a saved ``forward.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.targets import FAST_OVER_REFERENCE_TARGET

#: drawing order and colours of the forward paths
PATH_COLORS = {
    "eager": "#9e9e9e",
    "fast_nchw": "#90caf9",
    "fast": "#1565c0",
    "compile": "#6a1b9a",
    "compile_frozen": "#ab47bc",
    "ort": "#ef6c00",
}


def plot_forward(
    rows: Sequence[Mapping[str, Any]], out: Path, title: str, targets: Mapping[str, float] | None = None
) -> Path | None:
    """Grouped bars of img/s over the reference's img/s; a dashed line per variant's fast-path target.

    Returns the written path, or None when no case has a reference row to divide by.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("img_per_s") and "error" not in r]
    reference = {(r["variant"], r["size"]): r["img_per_s"] for r in ok if r["path"] == "reference"}
    cases = [c for c in dict.fromkeys((r["variant"], r["size"]) for r in ok) if c in reference]
    paths = [p for p in PATH_COLORS if any(r["path"] == p for r in ok)]
    if not cases or not paths:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(cases)), 3.6))
    width = 0.8 / len(paths)
    for i, path in enumerate(paths):
        speed = {(r["variant"], r["size"]): r["img_per_s"] for r in ok if r["path"] == path}
        xs = [k + (i - (len(paths) - 1) / 2) * width for k, c in enumerate(cases) if c in speed]
        ys = [speed[c] / reference[c] for c in cases if c in speed]
        ax.bar(xs, ys, width, label=path, color=PATH_COLORS[path])
    for k, (variant, _) in enumerate(cases):
        goal = (targets or {}).get(variant)
        if goal:
            ax.hlines(goal, k - 0.45, k + 0.45, colors="#1565c0", linestyles="dashed", linewidth=1)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(cases)), [f"{v}\n{s}" for v, s in cases], fontsize=8)
    ax.set_ylabel("throughput / timm reference")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=len(paths), loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Redraw ``forward.png`` from a run folder's ``forward.json``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="folder holding forward.json")
    parser.add_argument("out", type=Path, nargs="?", default=None, help="PNG (default RUN_DIR/forward.png)")
    args = parser.parse_args(argv)
    payload = json.loads((args.run_dir / "forward.json").read_text(encoding="utf-8"))
    machine = payload.get("machine", {})
    title = f"forward, batch 1: {machine.get('cpu')} ({machine.get('threads')} threads)" + (
        f", {machine['gpu']}" if machine.get("gpu") else ""
    )
    out = plot_forward(
        payload["results"], args.out or args.run_dir / "forward.png", title, FAST_OVER_REFERENCE_TARGET
    )
    print(out if out else "no case with a reference row: nothing drawn")
    return 0 if out else 1


if __name__ == "__main__":
    raise SystemExit(main())
