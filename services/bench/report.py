"""Shared plumbing of the benchmarks: the machine description, timing loops, /proc sampling, and
the result object every `fusionwatch bench …` command prints as a table and writes as JSON.

Deliberately light: standard library plus rich (and psutil when it happens to be installed), so
`bench model` can run on a bare GPU box that has no pydantic-settings, Kafka client or SQLAlchemy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from schemas.errors import FusionwatchError


class BenchError(FusionwatchError):
    """A benchmark cannot run as asked (missing device, checkpoint or input)."""


# ── the machine ────────────────────────────────────────────────────────────────────────────────

def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What a reader needs to judge a figure: CPU, cores, load (the box may be shared), versions."""
    import importlib.metadata as md

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": usable_cores(), "load_average_1_5_15": load_average(),
        "python": platform.python_version(), "platform": platform.platform(terse=True),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for pkg in ("torch", "numpy", "pillow", "kafka-python", "sqlalchemy", "transformers"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            props = torch.cuda.get_device_properties(torch.device(device))
            info["gpu"] = props.name
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["cuda"] = torch.version.cuda
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return info


# ── timing ─────────────────────────────────────────────────────────────────────────────────────

@dataclass
class Timing:
    iterations: int
    items: int  # items processed in total (windows, frames, chunks, lines)
    wall_s: float
    cpu_s: float  # CPU time of the clock chosen by `measure` (thread or whole process)
    per_call_s: list[float] = field(default_factory=list, repr=False)

    @property
    def items_per_s(self) -> float:
        return self.items / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def items_per_cpu_s(self) -> float:
        return self.items / self.cpu_s if self.cpu_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return 1000 * quantile(self.per_call_s, q)


def measure(fn: Callable[[], int | None], min_time_s: float = 1.0, min_iters: int = 3, max_iters: int = 1_000_000,
            warmup: int = 1, cpu_clock: str = "thread", sync: Callable[[], None] | None = None) -> Timing:
    """Call `fn` (returns the number of items it processed, default 1) until both `min_time_s` and
    `min_iters` are reached. `cpu_clock`: "thread" for single-threaded work — robust on a shared
    box, where wall time also counts other people's processes — or "process" for work that fans
    out to worker threads (torch intra-op). `sync` runs after each call (CUDA synchronise)."""
    clock = time.thread_time if cpu_clock == "thread" else time.process_time
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    calls: list[float] = []
    items = 0
    wall0, cpu0 = time.perf_counter(), clock()
    while True:
        t = time.perf_counter()
        n = fn()
        if sync:
            sync()
        calls.append(time.perf_counter() - t)
        items += 1 if n is None else n
        if (len(calls) >= min_iters and time.perf_counter() - wall0 >= min_time_s) or len(calls) >= max_iters:
            break
    return Timing(len(calls), items, time.perf_counter() - wall0, clock() - cpu0, calls)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(sorted(values), n=1000, method="inclusive")[max(0, min(998, round(q * 1000) - 1))]


# ── /proc sampling (a process's CPU and memory) ───────────────────────────────────────────────

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_rss(pid: int) -> tuple[float, float] | None:
    """(CPU seconds user+system, resident MiB) of a process; None once it has gone."""
    try:
        import psutil  # optional: nicer and portable when installed

        p = psutil.Process(pid)
        t = p.cpu_times()
        return t.user + t.system, p.memory_info().rss / 2**20
    except ImportError:
        pass
    except Exception:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
        cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return cpu, rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


# ── the result ─────────────────────────────────────────────────────────────────────────────────

@dataclass
class BenchResult:
    name: str  # model | decode | pipeline
    machine: dict[str, Any]
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)  # one table row per measured case
    summary: dict[str, Any] = field(default_factory=dict)  # headline figures and ratios
    series: dict[str, Any] = field(default_factory=dict)  # time series (lag over time, ...)
    notes: list[str] = field(default_factory=list)

    def finish(self) -> "BenchResult":
        self.machine["load_average_at_end"] = load_average()
        return self

    def to_json(self) -> dict[str, Any]:
        return _clean(asdict(self))

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf become null, floats rounded to 4 significant-ish places."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float):
        if x != x or x in (float("inf"), float("-inf")):
            return None
        return float(f"{x:.5g}")
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _clean(x.item())
    return x


def render(result: BenchResult, columns: list[str] | None = None, console=None) -> None:
    """Print the rows as a rich table, then the summary and notes."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    m = result.machine
    title = (f"fusionwatch bench {result.name} — {m.get('gpu') or m.get('cpu')}, {m.get('cores')} cores, "
             f"load {m.get('load_average_1_5_15')} → {m.get('load_average_at_end', '?')}")
    if result.rows:
        cols = columns or list(dict.fromkeys(k for r in result.rows for k in r))
        cols = [c for c in cols if any(r.get(c) is not None for r in result.rows)]  # no all-empty column
        table = Table(*cols, title=title, title_justify="left")
        for r in result.rows:
            table.add_row(*[_fmt(r.get(c)) for c in cols])
        console.print(table)
    else:
        console.print(title)
    for k, v in result.summary.items():
        console.print(f"  [bold]{k}[/]: {_fmt(v)}")
    for n in result.notes:
        console.print(f"  [dim]note: {n}[/]")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "–"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)
