"""Start-up cost of the ``hrseg`` command line, and which commands import Lightning.

    python -m benchmarks.startup [--repeats 5] [--record benchmarks/records/DATE-startup/startup.md]

Each case is a fresh interpreter (``python -c ...`` / ``python -m hrseg ...``), run ``--repeats`` times,
interleaved so a change of load on a shared machine hits every case alike; the table gives the median and
the range of the wall times. Two numbers answer the start-up goals:

- what ``hrseg fit --help`` adds to ``import lightning.pytorch`` (goal: under a second), timed inside one
  interpreter that has imported Lightning already, besides the difference of the fresh-interpreter medians;
- that ``predict`` without ``--config``, ``export`` and ``evaluate`` never import Lightning: each runs its
  ``--help`` in one interpreter and reports the heavy modules found in ``sys.modules`` afterwards (the test
  suite checks the same for real runs: tests/test_cli.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO_ROOT, describe_machine, git_commit, log, machine_info

#: (name, interpreter arguments): the baselines and the commands timed
CASES: list[tuple[str, list[str]]] = [
    ("python -c 'import torch'", ["-c", "import torch"]),
    ("python -c 'import lightning.pytorch'", ["-c", "import lightning.pytorch"]),
    ("hrseg fit --help", ["-m", "hrseg", "fit", "--help"]),
    ("hrseg predict --help", ["-m", "hrseg", "predict", "--help"]),
    ("hrseg export --help", ["-m", "hrseg", "export", "--help"]),
    ("hrseg evaluate --help", ["-m", "hrseg", "evaluate", "--help"]),
]
#: commands that must never import Lightning (nor albumentations, which comes with the DataModules)
LIGHTNING_FREE = ("predict", "export", "evaluate")
HEAVY = ("lightning", "albumentations")


def _env() -> dict[str, str]:
    """The checkout's hrseg first on the path, whatever is installed."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), path) if p)}


def time_case(args: list[str]) -> float:
    """Wall seconds of one fresh interpreter running ``args``."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=_env(), cwd=REPO_ROOT, capture_output=True, check=True)
    return time.perf_counter() - start


#: one interpreter: Lightning first, then the clock runs over what `hrseg fit --help` adds to it
ADDED_CODE = (
    "import contextlib, io, time\n"
    "import lightning.pytorch\n"
    "start = time.perf_counter()\n"
    "from hrseg.commands import main\n"
    "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
    "    main(['fit', '--help'])\n"
    "print(time.perf_counter() - start)\n"
)


def added_seconds() -> float:
    """Seconds ``hrseg fit --help`` takes in an interpreter that imported ``lightning.pytorch`` already."""
    out = subprocess.run(
        [sys.executable, "-c", ADDED_CODE],
        env=_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def heavy_modules(command: str) -> list[str]:
    """The heavy modules in ``sys.modules`` after ``hrseg <command> --help``."""
    code = (
        "import contextlib, io, sys\n"
        "from hrseg.commands import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main([{command!r}, '--help'])\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return [m for m in out.stdout.strip().split(",") if m]


def run(repeats: int) -> str:
    """Time every case ``repeats`` times (interleaved); return the markdown report."""
    times: dict[str, list[float]] = {name: [] for name, _ in CASES}
    added: list[float] = []
    for i in range(repeats):
        for name, args in CASES:
            times[name].append(time_case(args))
        added.append(added_seconds())
        log(f"round {i + 1}/{repeats} done")
    median = {name: statistics.median(values) for name, values in times.items()}
    lines = [
        "| command | median wall time (s) | range (s) |",
        "|---|---|---|",
        *(
            f"| `{name}` | {median[name]:.2f} | {min(v):.2f}-{max(v):.2f} |"
            for name, v in ((n, times[n]) for n, _ in CASES)
        ),
    ]
    overhead = median["hrseg fit --help"] - median["python -c 'import lightning.pytorch'"]
    lines += [
        "",
        f"In one interpreter that has imported `lightning.pytorch`, `hrseg fit --help` takes "
        f"**{statistics.median(added):.2f} s** more (median; {min(added):.2f}-{max(added):.2f} s): what "
        "hrseg adds, without the run-to-run spread of the Lightning import itself. Goal: under 1 s.",
        f"Across fresh interpreters the difference of the medians above is {overhead:.2f} s.",
        "",
        "| command | heavy modules imported |",
        "|---|---|",
        *(f"| `hrseg {c} --help` | {', '.join(heavy_modules(c)) or 'none'} |" for c in LIGHTNING_FREE),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh interpreters per case (default 5)")
    parser.add_argument("--record", default=None, help="also write the report, with its provenance, here")
    args = parser.parse_args(argv)
    info = machine_info()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = run(args.repeats)
    command = "python -m benchmarks.startup" + (f" --repeats {args.repeats}" if args.repeats != 5 else "")
    header = (
        "# hrseg start-up\n\n"
        f"Command: `{command}`  \n"
        f"Machine: {describe_machine(info)}  \n"
        f"Commit: {git_commit()}; date: {started}\n"
    )
    report = f"{header}\n{body}\n"
    print(report)
    if args.record:
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        Path(args.record).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
