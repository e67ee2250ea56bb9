"""Shared benchmark plumbing: threads, timing, peak memory, isolated case runs, JSON and markdown output.

Every benchmark module builds on these helpers so all numbers in one run are taken the same way: warm-up
calls first (oneDNN creates its primitives and the allocator touches its pages on the first call at a shape),
then the median of the timed calls, with ``torch.set_num_threads(cores)``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hrseg.files import atomic_write_text

SCHEMA_VERSION = 1
RESULT_MARKER = "@@HRSEG_BENCH_RESULT@@"
REPO_ROOT = Path(__file__).resolve().parent.parent

THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")
#: keys every benchmark JSON file carries (checked by tests/test_benchmarks.py)
PAYLOAD_KEYS = ("schema", "benchmark", "created", "machine", "config", "results")


# --------------------------------------------------------------------------------------------------
# Threads and devices
# --------------------------------------------------------------------------------------------------
#: the head of a child script that samples its own resident memory every 50 ms into ``samples`` (KB): the
#: peak alone can hide growth, since start-up (imports, the first batch) may set it. ``peak_kb()`` is the
#: kernel's high-water mark, reset first: a process forked from a large one (a pytest worker) starts with its
#: parent's ``ru_maxrss``, which survives ``exec``
RSS_SAMPLER = """
import resource, sys, threading, time
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
def peak_kb():
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
samples = []
def sample():
    while True:
        with open("/proc/self/status") as fh:
            samples.append(next(int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS:")))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
"""


def num_cores() -> int:
    """CPU cores this process may use (respects taskset / cgroup affinity, unlike ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def setup_torch(threads: int | None = None, device: str = "cpu") -> int:
    """Pin intra-op threads to the core count (torch's default can oversubscribe with SMT or cgroups).

    On CUDA, cuDNN autotuning is on: every case runs one fixed shape, as training at a fixed crop does.
    """
    import torch

    n = int(threads) if threads else num_cores()
    torch.set_num_threads(n)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    return n


#: seconds of warm-up per case on a GPU: clocks ramp up from idle and cuDNN autotunes each new shape, which
#: three ~30 ms calls do not cover (on an H200 a run's first case came out 20-75 % slower without it)
GPU_WARMUP_S = 2.0


def warmup_seconds(device: str) -> float:
    """Minimum warm-up time per case: :data:`GPU_WARMUP_S` on CUDA, none on CPU."""
    return GPU_WARMUP_S if device.startswith("cuda") else 0.0


def synchronizer(device: str) -> Callable[[], None]:
    """A no-op on CPU; ``cuda.synchronize`` on GPU so timings cover the kernels, not just their launch."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Wall-clock statistics of one benchmarked callable (seconds)."""

    median_s: float
    min_s: float
    mean_s: float
    times_s: list[float]
    warmup: int
    first_s: float | None = None  # the first warm-up call: one-time costs (primitive creation, compile)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def time_callable(
    fn: Callable[[], Any],
    warmup: int = 1,
    iters: int = 3,
    max_seconds: float | None = None,
    sync: Callable[[], None] | None = None,
    min_warmup_s: float = 0.0,
    after_warmup: Callable[[], None] | None = None,
) -> Timing:
    """Median wall time of ``fn`` after ``warmup`` calls (and at least ``min_warmup_s`` of warm-up).

    ``max_seconds`` bounds the timed loop (at least one timed call always runs): the loop stops when the next
    call would likely overrun it, which keeps the slow cases (W48 at 1024x2048 on 2 cores) within budget.
    ``min_warmup_s`` is for GPUs, whose clocks ramp up under load: a few 20 ms calls are not enough.
    ``after_warmup`` runs between warm-up and timed calls (e.g. :meth:`PeakMemory.restart`).
    """
    sync = sync or (lambda: None)
    first: float | None = None
    done = 0
    warm_start = time.perf_counter()
    while done < max(0, warmup) or (done and time.perf_counter() - warm_start < min_warmup_s):
        t0 = time.perf_counter()
        fn()
        sync()
        if done == 0:
            first = time.perf_counter() - t0
        done += 1
    if after_warmup is not None:
        after_warmup()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if max_seconds is not None and elapsed + statistics.median(times) > max_seconds:
            break
    return Timing(
        median_s=statistics.median(times),
        min_s=min(times),
        mean_s=statistics.fmean(times),
        times_s=times,
        warmup=done,
        first_s=first,
    )


# --------------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------------
def _proc_status_kb(key: str) -> int | None:
    """A ``VmXXX`` line of /proc/self/status in KiB (None off Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory added while the block runs, over what was resident when it started.

    tracemalloc cannot see torch's allocations, so on CPU this reads the process RSS high-water mark:
    reset through ``/proc/self/clear_refs`` when the kernel allows it (exact peak of the block), otherwise the
    ``ru_maxrss`` delta (a lower bound when an earlier phase of the process peaked higher; this is why the
    suite runs each case in its own process). On CUDA it is the caching allocator's peak.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.method = ""
        self.peak_bytes: int | None = None
        self._base = 0

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated"
        elif _reset_rss_peak() and _proc_status_kb("VmHWM") is not None:
            self._base = (_proc_status_kb("VmRSS") or 0) * 1024
            self.method = "VmHWM after clear_refs"
        else:
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.method = "ru_maxrss delta"
        return self

    def restart(self) -> None:
        """CUDA: measure from here (after warm-up), so one-time cuDNN autotuning workspaces do not count.

        A no-op on CPU: the RSS high-water mark cannot see memory that the allocator already holds.
        """
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated after warm-up"

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.method.startswith("VmHWM"):
            peak = (_proc_status_kb("VmHWM") or 0) * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak_bytes = max(0, peak - self._base)

    @property
    def peak_mb(self) -> float | None:
        """Peak in MiB (None before the block ran)."""
        return None if self.peak_bytes is None else self.peak_bytes / 2**20


def time_case(fn: Callable[[], Any], spec: Mapping[str, Any]) -> tuple[Timing, PeakMemory]:
    """Time one worker case as the suite does: the spec's warm-up / iterations / time cap, the device's
    synchronisation and GPU warm-up, and the peak memory of the timed calls (on CUDA from after warm-up)."""
    device = spec["device"]
    with PeakMemory(device) as mem:
        timing = time_callable(
            fn,
            spec["warmup"],
            spec["iters"],
            spec.get("max_seconds"),
            synchronizer(device),
            min_warmup_s=warmup_seconds(device),
            after_warmup=mem.restart,
        )
    return timing, mem


# --------------------------------------------------------------------------------------------------
# Isolated cases
# --------------------------------------------------------------------------------------------------
#: one benchmark case: its JSON spec -> its JSON-able result (``forward_case``, ``train_case``, ...)
Case = Callable[[dict[str, Any]], dict[str, Any]]


def case_name(case: Case) -> str:
    """``module:function``, the name a case travels under to its worker process (``benchmarks.worker``).

    The suite hands the case function itself to :func:`run_case` (it never looks a case up by kind), so this
    module needs none of the case modules, which all build on it.
    """
    name = f"{case.__module__}:{case.__qualname__}"
    if not case.__module__.startswith("benchmarks.") or "." in case.__qualname__:
        raise ValueError(f"a benchmark case is a module-level function of benchmarks/, not {name}")
    return name


def resolve_case(name: str) -> Case:
    """The case function :func:`case_name` named (imported in the worker process)."""
    module, _, function = name.partition(":")
    if not module.startswith("benchmarks.") or not function:
        raise ValueError(f"unknown case {name!r}: expected benchmarks.<module>:<function>")
    import importlib

    case: Case = getattr(importlib.import_module(module), function)
    return case


def run_case(case: Case, spec: Mapping[str, Any], isolate: bool, timeout: float = 900.0) -> dict[str, Any]:
    """Run one benchmark case, in a fresh interpreter when ``isolate`` (clean peak memory, no warm caches).

    Errors never abort the suite: they come back as ``{"error": ...}`` and show in the tables.
    """
    if not isolate:
        try:
            return case(dict(spec))
        except Exception as exc:  # a broken case must not hide the other results
            return {"error": f"{type(exc).__name__}: {exc}"}
    env = dict(os.environ)
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "benchmarks.worker", case_name(case), json.dumps(dict(spec))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
    return {"error": f"worker exited with {proc.returncode}: " + " | ".join(tail)}


def run_budgeted(case: Case, spec: Mapping[str, Any], cfg: Any) -> dict[str, Any]:
    """:func:`run_case` under the suite's soft time budget: no new case starts once it is used up.

    torch.compile cases always get their own process: in-process, dynamo's cache would let a second
    compiled path reuse the first one's code and report a meaningless compile time.
    """
    left = cfg.time_left()
    if left is not None and left <= 0:
        return {"error": "skipped: suite time budget (--budget-min) used up"}
    isolate = cfg.isolate or str(spec.get("path", "")).startswith("compile")
    load = load_average()
    result = run_case(case, spec, isolate, timeout=cfg.case_timeout)
    result["load_1m"] = load[0] if load else None  # judge each number by the load it was taken under
    return result


# --------------------------------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------------------------------


def case_spec(
    cfg: Any,
    variant: str,
    size: Sequence[int],
    batch: int,
    path: str,
    weights: Any,
    warmup: int,
    iters: int,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON spec one worker case runs from: the run-wide settings of ``cfg`` plus this case's own."""
    return {
        "variant": variant,
        "size": list(size),
        "batch": batch,
        "path": path,
        "device": cfg.device,
        "amp": cfg.amp,
        "threads": cfg.threads,
        "weights": str(weights),
        "num_classes": cfg.num_classes,
        "fuse_mode": cfg.fuse_mode,
        "warmup": warmup,
        "iters": iters,
        "max_seconds": cfg.max_seconds,
        **extra,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:
        return None
    return str(getattr(mod, "__version__", "?"))


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: timings are only comparable when this is well below the core count."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def cpu_busy_fraction(seconds: float = 1.0) -> float | None:
    """Share of all cores busy during ``seconds`` while this process sleeps: what other processes take.

    Used instead of the load average to judge a run: the load average counts this suite's own threads for
    minutes after they stop, and on this project's VM an idle kernel thread keeps it near 1 (while vmstat
    shows 100 % idle).
    """

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]  # user .. steal (guest is inside user)
        return sum(ticks), ticks[3] + ticks[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return None if total <= 0 else round(1.0 - (idle1 - idle0) / total, 3)


def git_commit() -> str | None:
    """Short commit of the working tree (read-only ``git rev-parse``), with ``+dirty`` when modified."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def machine_info(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on; written into every JSON file and the README table."""
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": num_cores(),
        "threads": threads or torch.get_num_threads(),
        "arch": platform.machine(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onednn": torch.backends.mkldnn.is_available(),
        "timm": _version("timm"),
        "onnxruntime": _version("onnxruntime"),
        "device": device,
        "load_avg": load_average(),
        "cpu_busy": cpu_busy_fraction(),
        "git": git_commit(),
        # threading knobs change the numbers (OMP_WAIT_POLICY=PASSIVE matters on a shared machine)
        "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
    }
    mem_kb = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            mem_kb = int(fh.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    info["memory_gb"] = round(mem_kb / 2**20, 1) if mem_kb else None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line for tables: CPU, cores/threads, torch version, load."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    env = "".join(f", {k}={v}" for k, v in (info.get("env") or {}).items())
    load = info.get("load_avg")
    busy = info.get("cpu_busy")
    return (
        f"{info.get('cpu')} ({info.get('cores')} cores, {info.get('threads')} threads, "
        f"{info.get('cpu_capability')}{env}){gpu}; torch {info.get('torch')}, "
        f"onnxruntime {info.get('onnxruntime')}; "
        f"load avg at start {load[0] if load else '?'}; "
        f"CPU busy before the run {'?' if busy is None else f'{busy:.0%}'}"
    )


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
@dataclass
class Column:
    """A markdown table column: the row key, the header and a number format."""

    key: str
    header: str
    fmt: str = "{:.3g}"


def fmt_value(value: Any, fmt: str = "{:.3g}") -> str:
    """Cell text: numbers formatted, None as "-", booleans as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        try:
            return fmt.format(value)
        except (ValueError, TypeError):
            return str(value)
    return str(value).replace("|", "\\|")


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """GitHub markdown table of ``rows`` (missing keys show as "-")."""
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(fmt_value(row.get(c.key), c.fmt) for c in columns) + " |")
    return "\n".join(lines)


@dataclass
class Report:
    """One benchmark's output: JSON payload plus its markdown rendering."""

    benchmark: str
    config: dict[str, Any]
    results: list[dict[str, Any]]
    machine: dict[str, Any]
    markdown: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON document (schema checked by the tests)."""
        return {
            "schema": SCHEMA_VERSION,
            "benchmark": self.benchmark,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "machine": self.machine,
            "config": self.config,
            "results": self.results,
            **self.extra,
        }

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write ``<benchmark>.json`` and ``<benchmark>.md`` into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / f"{self.benchmark}.json"
        md_path = out_dir / f"{self.benchmark}.md"
        header = f"# {self.benchmark}\n\nMachine: {describe_machine(self.machine)}\n\n"
        texts = {
            json_path: json.dumps(self.payload(), indent=2, default=str) + "\n",
            md_path: header + self.markdown.rstrip() + "\n",
        }
        for path, text in texts.items():  # whole or not at all: a full disk leaves the previous record
            atomic_write_text(path, text, "the previous record is intact")
        return json_path, md_path


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den`` or None when either is missing or zero."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def parse_size(text: str) -> tuple[int, int]:
    """``"512x1024"`` -> ``(512, 1024)`` (height x width, as every ``--sizes`` option spells it)."""
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"512x1024,1024x2048"`` -> ``((512, 1024), (1024, 2048))``; empty items are skipped."""
    return tuple(parse_size(v) for v in text.split(",") if v.strip())


def log(message: str) -> None:
    """Progress line on stderr (stdout of workers carries the result)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
