"""Cut closed windows into batches, each with a snapshot of the offsets it makes safe to commit.

Dynamic batching: while the score stage is busy, windows gather into the next batch (up to
`max_batch`) instead of queueing as many small ones, each with its own SQL commit.
"""

from __future__ import annotations

import time

from services.monitor.scoring import Batch
from services.monitor.state import PartitionBook
from services.settings import MonitorSettings
from streamlogic.windows import AlignedWindow, WindowAligner

IDLE_CUT_S = 1.0  # with no window closing, offsets still move on this often (skipped and rejected records)


class BatchCutter:
    def __init__(self, cfg: MonitorSettings, aligner: WindowAligner, book: PartitionBook):
        self.cfg, self.aligner, self.book = cfg, aligner, book
        self.pending: list[AlignedWindow] = []
        self.stopped: list[tuple[str, int | None]] = []  # (asset, partition) whose streams stopped since the last cut
        self._pending_since = 0.0
        self._last_cut = time.monotonic()

    def add(self, windows: list[AlignedWindow]) -> None:
        self.pending.extend(windows)

    def add_stopped(self, assets: list[str]) -> None:
        """Assets whose streams stopped (`WindowAligner.stopped`): the next batch closes their
        open events, after any of their windows still pending."""
        self.stopped.extend((a, self.aligner.partition_of(a)) for a in assets)

    def drop_partitions(self, parts: set[int]) -> None:
        self.pending = [w for w in self.pending if w.partition not in parts]
        self.stopped = [(a, p) for a, p in self.stopped if p not in parts]

    def cut(self, epochs, scoring: bool, full: bool, force: bool = False) -> Batch | None:
        """A batch when enough windows wait, they waited long enough, or only offsets moved;
        None when it is not time yet or the score stage is full (unless forced, at shutdown).
        `epochs(tps)` gives the sink's ownership epochs; `scoring`: the score stage is at work."""
        now = time.monotonic()
        if self.pending and not self._pending_since:
            self._pending_since = now
        due = (len(self.pending) >= self.cfg.max_batch or bool(self.stopped)
               or (self.pending and not scoring and now - self._pending_since >= self.cfg.max_wait_ms / 1000)
               or (not self.pending and now - self._last_cut >= IDLE_CUT_S and self.book.moved_since_cut()))
        if not (due or force) or (full and not force):
            return None
        book = self.book
        low = self.aligner.low_water()
        offsets = {}
        for tp in book.assigned:
            if tp not in book.last_seen:
                continue
            nxt = low.get(tp, book.last_seen[tp] + 1)
            book.processed[tp] = max(book.processed.get(tp, -1), book.last_seen[tp])
            offsets[tp] = (nxt, book.processed[tp])
        assets = self._snapshots({w.inputs.asset for w in self.pending})  # only these changed since the last cut
        stopped = self._snapshots({a for a, _ in self.stopped})
        windows, self.pending, self._pending_since, self.stopped = self.pending, [], 0.0, []
        book.cut_seen = dict(book.last_seen)
        log_ids = {tp: str(book.topic_ids[tp]) for tp in offsets if book.topic_ids.get(tp) is not None}
        self._last_cut = now
        return Batch(windows, offsets, assets, epochs(book.assigned), log_ids, stopped)

    def _snapshots(self, names: set[str]) -> dict[str, tuple[int, float, list[str]]]:
        """asset -> (partition, next window start, expected modalities), as committed with its state."""
        out = {}
        for a in names:
            next_start, expected = self.aligner.snapshot(a)
            if next_start is not None:
                part = self.aligner.partition_of(a)
                out[a] = (part if part is not None else -1, next_start, expected)
        return out
