"""Run one benchmark case in this (fresh) process: ``python -m benchmarks.worker MODULE:FUNCTION '<json>'``.

A fresh interpreter per case gives a clean peak-memory reading and no caches warmed by an earlier case;
the result is printed as one JSON line after a marker so library chatter on stdout cannot corrupt it.
The case is named by its function (``benchmarks.forward:forward_case``, see
:func:`benchmarks.common.case_name`), so this entry point knows no case module: they import
:mod:`benchmarks.common`, which starts this process, and nothing here imports them back.
"""

from __future__ import annotations

import json
import os
import sys

from benchmarks.common import RESULT_MARKER, resolve_case

# before resolve_case imports the case module (and through it hrseg's data stack)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child process."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.worker MODULE:FUNCTION JSON_SPEC", file=sys.stderr)
        return 2
    result = resolve_case(args[0])(json.loads(args[1]))
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
