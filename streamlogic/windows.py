"""Align hop: per-asset event-time windows closed by a watermark.

Windows are tumbling-with-overlap on a fixed grid (start = k·hop, length `window_s`), per asset.
A window closes when the asset's watermark passes its end. The watermark is the *minimum over the
asset's active modalities* of the latest event time seen, minus the allowed lateness — as a
multi-input operator does in Flink — so a topic that is fetched ahead of the others (common when a
consumer catches up a backlog) cannot make the slower modalities late. A modality that stops
sending for `idle_timeout_s` of wall time is idle and no longer holds the watermark back; the
window is then scored with that modality masked. When the whole asset goes quiet, its remaining
windows are flushed after the same timeout.

A record whose windows have all been emitted is late: the caller dead-letters it.

The aligner keeps only records of windows still open, and reports, per topic-partition, the
lowest offset it still needs — the offset a consumer may commit.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from models.inputs import WindowInputs
from schemas.envelope import Accepted, AudioPayload, DecodeOptions, Envelope, FramePayload, Kind, Payload, WireRecord, decode
from schemas.events import EvidenceRange

MODALITIES = (Kind.FRAME, Kind.AUDIO, Kind.LOG)


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass
class AlignedWindow:
    inputs: WindowInputs
    evidence: dict[str, list[EvidenceRange]]
    partition: int | None  # the asset's partition number (co-partitioned topics), None offline
    closed_at: float  # wall clock (time.time()) when the watermark closed it
    # modalities whose stream started (or came back after a gap) inside this window: it holds only
    # the tail of the window for them, a view the model never trained on (training windows are whole)
    partial: tuple[str, ...] = ()


@dataclass
class _Item:
    t: float
    payload: Payload
    pos: Position | None


@dataclass
class _AssetStream:
    partition: int | None
    next_start: float | None = None  # start of the next window to emit; None until the first record
    items: dict[Kind, list[_Item]] = field(default_factory=lambda: {k: [] for k in MODALITIES})
    max_time: dict[Kind, float] = field(default_factory=dict)
    last_arrival: dict[Kind, float] = field(default_factory=dict)  # monotonic clock
    expected: set[Kind] = field(default_factory=set)  # modalities this asset has sent before
    created: float = 0.0  # monotonic clock
    # the window grid's start is provisional until the first window is emitted: a stream joined
    # mid-flight may show a frame before an older audio chunk (audio is sent when its chunk ends),
    # and a consumer catching up a backlog reads one topic's records before another's. An older
    # record moves the grid back when it is within the allowed lateness of the first record seen,
    # or the first of its modality (however old: that topic's backlog was simply read later)
    provisional: bool = True
    resumed: dict[Kind, list[float]] = field(default_factory=dict)  # event times each modality (re)started at
    first_time: float = 0.0  # event time of the first record seen (set with next_start)
    stopped: bool = False  # reported by `WindowAligner.stopped` since its last record


class WindowAligner:
    def __init__(self, window_s: float = 2.0, hop_s: float = 1.0, lateness_s: float = 2.0,
                 idle_timeout_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 new_asset_grace_s: float | None = None, wall_clock: Callable[[], float] | None = None,
                 stop_after_s: float = math.inf):
        if hop_s > window_s:
            raise ValueError("hop_s must not exceed window_s (windows would leave gaps)")
        self.window_s, self.hop_s, self.lateness_s, self.idle_timeout_s = window_s, hop_s, lateness_s, idle_timeout_s
        self.clock = clock
        # live (the monitor): the wall clock caps every event time that moves an asset's clock (its
        # window grid, watermark, window closing), so a record stamped ahead of real time only waits
        # in its window; it cannot make the asset's later records late. None offline (recordings).
        self.wall_clock = wall_clock
        # a new asset's first windows wait this long for modalities not yet seen
        self.new_asset_grace_s = idle_timeout_s if new_asset_grace_s is None else new_asset_grace_s
        self.stop_after_s = stop_after_s  # silent this long: the asset's stream has stopped (`stopped`)
        self._assets: dict[str, _AssetStream] = {}

    # ── state ──────────────────────────────────────────────────────────────────────────────
    def restore(self, asset: str, partition: int | None, next_start: float, expected: Iterable[str] = ()) -> None:
        """Continue an asset from committed state: windows before `next_start` are done."""
        now = self.clock()
        s = _AssetStream(partition, next_start, created=now, provisional=False)
        s.expected = {Kind(m) for m in expected}
        s.last_arrival = {m: now for m in s.expected}  # wait up to the idle timeout for each of them
        self._assets[asset] = s

    def snapshot(self, asset: str) -> tuple[float | None, list[str]]:
        s = self._assets[asset]
        return s.next_start, sorted(k.value for k in s.expected)

    def partition_of(self, asset: str) -> int | None:
        return self._assets[asset].partition

    def assets(self, partition: int | None = None) -> list[str]:
        return [a for a, s in self._assets.items() if partition is None or s.partition == partition]

    def drop_partition(self, partition: int) -> None:
        for a in self.assets(partition):
            del self._assets[a]

    def hold(self, behind: Mapping[int | None, Iterable[Kind]]) -> None:
        """`behind[partition]` = modalities whose records on that partition are not all read yet
        (a backlog, or consumption paused). Idleness means "nothing left to read", not "nothing
        read lately": a consumer catching up reads one partition ahead of another, and a modality
        that merely waits its turn must not be declared idle (its records would all turn late)."""
        if not behind:
            return
        now = self.clock()
        for s in self._assets.values():
            kinds = behind.get(s.partition)  # None: an asset read without partitions (offline, tests)
            if not kinds:
                continue
            for k in kinds:
                if k in s.last_arrival:
                    s.last_arrival[k] = now
                elif k not in s.expected:
                    s.created = now  # a modality not seen yet may still be in the backlog: keep waiting

    def buffered(self) -> int:
        return sum(len(v) for s in self._assets.values() for v in s.items.values())

    def low_water(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): the lowest offset still held for an open window."""
        low: dict[tuple[str, int], int] = {}
        for s in self._assets.values():
            for items in s.items.values():
                for it in items:
                    if it.pos is not None:
                        key = (it.pos.topic, it.pos.partition)
                        if it.pos.offset < low.get(key, math.inf):
                            low[key] = it.pos.offset
        return low

    # ── data ───────────────────────────────────────────────────────────────────────────────
    def add(self, env: Envelope, payload: Payload, pos: Position | None = None) -> bool:
        """Buffer one record; False when it is late (every window containing it is emitted)."""
        s = self._assets.get(env.asset)
        if s is None:
            s = self._assets[env.asset] = _AssetStream(pos.partition if pos else None, created=self.clock())
        kind, t = env.kind, env.time
        clock_t = t if self.wall_clock is None else min(t, self.wall_clock())  # what may move the asset's clock
        first = (math.floor((clock_t - self.window_s) / self.hop_s) + 1) * self.hop_s  # first window that contains t
        if s.next_start is None:
            s.next_start, s.first_time = first, clock_t
        elif (s.provisional and first < s.next_start
              and (kind not in s.expected or t >= s.first_time - self.lateness_s)):
            s.next_start = first  # (a gap up to the next record is skipped when windows are emitted)
        if math.floor(t / self.hop_s) * self.hop_s < s.next_start - 1e-9:
            return False
        s.items[kind].append(_Item(t, payload, pos))
        if kind not in s.max_time or t - s.max_time[kind] > self.window_s:  # first record, or after a gap
            s.resumed.setdefault(kind, []).append(t)
        s.expected.add(kind)
        s.max_time[kind] = max(s.max_time.get(kind, -math.inf), clock_t)
        s.last_arrival[kind] = self.clock()
        s.stopped = False
        return True

    def stopped(self) -> list[str]:
        """Assets whose stream has stopped, each once per silence: nothing of any modality for
        `stop_after_s` on the clock, with nothing of theirs left to read (`hold` keeps an asset
        whose partition is behind from going quiet, so a backlog or a paused partition never
        stops one). Their windows were all released when they went quiet (`ready`)."""
        now = self.clock()
        out = []
        for asset, s in self._assets.items():
            if s.stopped or s.next_start is None:
                continue
            if now - max(s.last_arrival.values(), default=s.created) >= self.stop_after_s:
                s.stopped = True
                out.append(asset)
        return out

    def ready(self, flush: bool = False) -> list[AlignedWindow]:
        """Windows whose watermark has passed (all of them when flush=True)."""
        out: list[AlignedWindow] = []
        now = self.clock()
        # a window never closes before its end has passed on the wall clock minus the lateness
        cap = math.inf if flush or self.wall_clock is None else self.wall_clock() - self.lateness_s
        for asset, s in self._assets.items():
            if s.next_start is None:
                continue
            wm = math.inf if flush else min(self._watermark(s, now), cap)
            seen = [s.max_time[k] for k in s.max_time]
            if not seen:
                continue
            last_data = max(seen)
            while s.next_start + self.window_s <= wm and s.next_start <= last_data:
                self._skip_gap(s)
                if s.next_start + self.window_s > wm:
                    break
                out.append(self._emit(asset, s))
        return out

    def _skip_gap(self, s: _AssetStream) -> None:
        """After a silence (line stopped, device offline) jump to the first window that holds data
        instead of emitting one empty window per hop through the gap."""
        buffered = [it.t for items in s.items.values() for it in items]
        if self.wall_clock is not None:  # a record stamped ahead must not pull the grid into the future
            buffered = [min(t, self.wall_clock()) for t in buffered]
        if not buffered:
            return
        first = (math.floor((min(buffered) - self.window_s) / self.hop_s) + 1) * self.hop_s
        if s.next_start is not None and first > s.next_start:
            s.next_start = first

    def _watermark(self, s: _AssetStream, now: float) -> float:
        if len(s.expected) < len(MODALITIES) and now - s.created < self.new_asset_grace_s:
            # a new asset: give modalities not yet seen a moment to show up before closing windows
            # (checked before quietness: the modalities seen so far may all be read to the end while
            # the others still wait in the backlog, see hold())
            return -math.inf
        active = [k for k in s.expected if now - s.last_arrival.get(k, -math.inf) <= self.idle_timeout_s]
        if not active:  # the asset went quiet: release everything it has
            return math.inf
        if any(k not in s.max_time for k in active):  # restored, still waiting for a modality
            return -math.inf
        return min(s.max_time[k] for k in active) - self.lateness_s

    def _emit(self, asset: str, s: _AssetStream) -> AlignedWindow:
        s.provisional = False
        assert s.next_start is not None, "a window is emitted only once the grid is set"
        start, end = s.next_start, s.next_start + self.window_s
        win = WindowInputs(asset=asset, start=start, end=end)
        evidence: dict[str, list[EvidenceRange]] = {}
        for kind in MODALITIES:
            inside = sorted((it for it in s.items[kind] if start <= it.t < end), key=lambda it: it.t)
            getattr(win, kind.value).extend((it.t, _model_view(it.payload)) for it in inside)
            first = inside[0].payload if inside else None
            if isinstance(first, AudioPayload):  # decoded at the consumer's rate (8 kHz for a call model)
                win.sample_rate = first.sample_rate
                win.channels = _channels(inside)
            ranges: dict[tuple[str, int], list[int]] = defaultdict(list)
            for it in inside:
                if it.pos is not None:
                    ranges[(it.pos.topic, it.pos.partition)].append(it.pos.offset)
            if ranges:
                evidence[kind.value] = [EvidenceRange(topic=tp[0], partition=tp[1], first=min(o), last=max(o))
                                        for tp, o in ranges.items()]
        # continuous streams only: log lines are sparse by nature, a quiet spell is not an outage
        partial = tuple(k.value for k in (Kind.FRAME, Kind.AUDIO)
                        if any(start + self.hop_s / 2 < r < end for r in s.resumed.get(k, ())))
        s.next_start = start + self.hop_s
        for kind in MODALITIES:  # records before the next window can never be used again
            s.items[kind] = [it for it in s.items[kind] if it.t >= s.next_start]
            s.resumed[kind] = [r for r in s.resumed.get(kind, ()) if r > s.next_start + self.hop_s / 2]
        return AlignedWindow(win, evidence, s.partition, time.time(), partial)


def _model_view(payload: Payload):
    """What WindowInputs holds per modality: the image array, the samples, the parsed log line."""
    if isinstance(payload, FramePayload):
        return payload.image
    if isinstance(payload, AudioPayload):
        return payload.samples
    return payload


def _channels(chunks: list[_Item]) -> dict[str, list[tuple[float, np.ndarray]]]:
    """Per-channel audio of the window (a stereo call's agent and customer) when every chunk in
    it carries the same named channels. Otherwise none: a window half stereo, half mono (a source
    that switched) is scored on its mix, which covers all of it, rather than on channels with a
    hole where the mono chunks were."""
    named = [it.payload.named_channels if isinstance(it.payload, AudioPayload) else None for it in chunks]
    first = named[0]
    if not first or any(n is None or n.keys() != first.keys() for n in named):
        return {}
    return {name: [(it.t, n[name]) for it, n in zip(chunks, named) if n is not None] for name in first}


def offline_windows(records: Iterable[tuple[Kind, WireRecord]], window_s: float = 2.0, hop_s: float = 1.0,
                    options: DecodeOptions = DecodeOptions(), lateness_s: float = 2.0,
                    whole_only: bool = False) -> Iterator[WindowInputs]:
    """Decode and align an event-time ordered record stream without Kafka (training, eval, tests).

    Uses the monitor's aligner with a frozen clock, so idleness never triggers and windows close
    purely by event time; everything left is flushed at the end. `whole_only` keeps only windows
    the recording covers whole (training and calibration data): the first window of an asset
    starts up to a hop before its first record and the flushed last ones end after its last, so
    half their frames, audio and log lines are missing — and a window of moving parts without the
    log lines that go with them is exactly what the cross-modal components learn to call
    inconsistent (they set a heavy normal tail of `cross_logs`).
    """
    aligner = WindowAligner(window_s, hop_s, lateness_s, idle_timeout_s=math.inf, clock=lambda: 0.0,
                            new_asset_grace_s=0.0)
    span: dict[str, list[float]] = {}  # asset -> [first, last] event time seen
    tol = hop_s / 2  # a frame or a chunk may sit up to a sampling period inside the recording's edge

    def whole(w) -> bool:
        first, last = span.get(w.inputs.asset, (math.inf, -math.inf))
        return not whole_only or (w.inputs.start >= first - tol and w.inputs.end <= last + tol)

    for kind, rec in records:
        res = decode(kind, rec.key, rec.value, rec.headers, now=_record_time(rec), options=options)
        if isinstance(res, Accepted):
            res_env = res.envelope
            if whole_only:
                edge = span.setdefault(res_env.asset, [res_env.time, res_env.time])
                edge[0], edge[1] = min(edge[0], res_env.time), max(edge[1], res_env.time)
            assert res.payload is not None, "decoded with media"
            aligner.add(res_env, res.payload)
            yield from (w.inputs for w in aligner.ready() if whole(w))
    yield from (w.inputs for w in aligner.ready(flush=True) if whole(w))


def _record_time(rec: WireRecord) -> float:
    from schemas.envelope import parse_time

    for name, value in rec.headers:
        if name == "ce_time":
            try:
                return parse_time(value.decode())
            except (ValueError, UnicodeDecodeError):
                break
    return time.time()
