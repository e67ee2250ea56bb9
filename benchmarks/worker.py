"""Run one benchmark case in this (fresh) process: ``python -m benchmarks.worker KIND '<json spec>'``.

A fresh interpreter per case gives a clean peak-memory reading and no caches warmed by an earlier case;
the result is printed as one JSON line after a marker so library chatter on stdout cannot corrupt it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _cases() -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    from benchmarks.forward import forward_case
    from benchmarks.investigate import investigate_case
    from benchmarks.train_step import train_case

    return {"forward": forward_case, "train": train_case, "investigate": investigate_case}


def run_kind(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Dispatch to the case function of ``kind``."""
    cases = _cases()
    if kind not in cases:
        raise ValueError(f"unknown case kind {kind!r}; known: {sorted(cases)}")
    return cases[kind](spec)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child process."""
    from benchmarks.common import RESULT_MARKER

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.worker KIND JSON_SPEC", file=sys.stderr)
        return 2
    result = run_kind(args[0], json.loads(args[1]))
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
