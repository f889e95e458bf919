"""Progress display for long training and evaluation runs (rich progress bars on stderr)."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bars(enabled: bool = True, console: Console | None = None) -> Iterator:
    """Yields a ProgressFn (stage, done, total, info): one bar per stage, losses shown beside it."""
    if not enabled:
        yield None
        return
    bars = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console or Console(stderr=True), transient=False)
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: float, total: float, info: dict) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=max(total, 1), info="")
        text = " ".join(f"{k} {v:.3f}" for k, v in info.items() if isinstance(v, float) and k != "loss")
        bars.update(tasks[stage], completed=done, total=max(total, 1), info=text)

    with bars:
        yield update
