"""The factory simulator: N stations, each with a camera, a microphone and a PLC log stream.

This is the laptop stand-in for a plant, at the source end of the data path: `Plant.records`
yields contract-v1 records (frames, audio chunks, log lines) in event-time order across all
assets and modalities, ready for a Kafka producer — or for an in-process dataset. Every station
renders its three modalities from one operating timeline (speed changes, idle periods, shift
handovers), so in normal operation they agree; faults from a schedule make one modality — or the
relation between modalities — depart from it, and `ground_truth` lists exactly what was injected.

Deterministic for a seed and start time, however `records()` calls split the duration: each
modality of each station draws from its own random stream in a fixed order.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from schemas.envelope import Kind, WireRecord, encode_audio, encode_frame, encode_log, wav_bytes
from schemas.errors import ConfigError
from services.simulator.acoustics import Acoustics
from services.simulator.conveyor import Conveyor
from services.simulator.faults import (  # noqa: F401  (re-exported: the simulator API lives here)
    CROSS_MODAL_KINDS,
    FAULT_KINDS,
    PRESETS,
    Fault,
    fault_schedule,
    load_schedule,
    min_duration_for_all,
    write_ground_truth,
)
from services.simulator.plc import PlcLog
from services.simulator.scene import PartView, Scene
from services.simulator.timeline import Segment, Timeline

__all__ = ["CROSS_MODAL_KINDS", "FAULT_KINDS", "Fault", "Plant", "asset_names", "fault_schedule", "load_schedule"]

PRODUCT_FAULTS = ("surface_defect", "missing_component", "misaligned_part")
SHIFT_LIGHT = (1.0, 0.95, 0.86)  # day, evening, night: the night shift runs with half the hall lights
EXPOSURE_STEPS = (0.94, 1.0, 1.0, 1.06)  # the camera's auto-exposure settles on one of these for a while
EXPOSURE_HOLD_S = 300.0  # ... about this long (each station's camera on its own schedule)
LENS_DIRT_PER_SHIFT = 0.05  # haze the lens gathers over a shift (blend towards grey); cleaned at each handover
_KIND_ORDER = {Kind.FRAME: 0, Kind.AUDIO: 1, Kind.LOG: 2}
DEFAULT_PRESET_HORIZON_S = 600.0


def asset_names(n: int, stations_per_line: int = 4) -> list[str]:
    """"L1-S1", "L1-S2", ... "L2-S1": station s of line l."""
    return [f"L{i // stations_per_line + 1}-S{i % stations_per_line + 1}" for i in range(n)]


class _Station:
    """One asset: its timeline and the three sensors rendering from it."""

    def __init__(self, plant: "Plant", index: int, asset: str, faults: list[Fault]):
        seed = plant.seed
        self.index, self.asset, self.faults = index, asset, faults
        # What the station *is* (its camera scene, acoustics, mounting) is drawn from the seed and
        # the station alone; what it *does* (its operating timeline, parts, log lines, sensor noise)
        # also from the start time, so two runs of one plant at different hours are the same
        # stations doing different work — not the same minutes replayed under another light.
        rng = lambda stream: np.random.default_rng([seed, index, stream])  # noqa: E731
        run = lambda stream: np.random.default_rng([seed, index, stream, int(plant.start_time)])  # noqa: E731
        self.timeline = Timeline(plant.start_time, run(1), faults, shift_s=plant.shift_s)
        self.conveyor = Conveyor(self.timeline, faults, run(2))
        self.scene = Scene(rng(3), plant.frame_size)
        self.acoustics = Acoustics(rng(4), plant.sample_rate)
        self.plc = PlcLog(asset, self.timeline, self.conveyor, faults, run(5), plant.start_time)
        self.frame_rng, self.audio_rng = run(6), run(7)
        line, _, station = asset.partition("-")
        base = f"/sim/{line}/{station}" if station else f"/sim/{asset}"
        self.sources = {Kind.FRAME: f"{base}/cam1", Kind.AUDIO: f"{base}/mic1", Kind.LOG: f"{base}/plc"}
        self.frame_phase = float(rng(8).uniform(0, 1.0 / plant.fps))  # cameras are not genlocked
        self.next_frame = 0
        self.next_audio = 0
        self.next_second = 0
        self.pending_logs: list[tuple[float, int, dict]] = []
        self.log_pushed = 0  # tie-break in the pending heap
        self.log_seq = 0  # ce_sequence of the log stream, in emission (= time) order
        self._crossing_ranges: dict[Fault, tuple[float, float]] = {}
        self.drift_phase = float(rng(9).uniform(0, 2 * np.pi))
        self.seed = seed
        self.exposure_phase = float(rng(11).uniform(0, EXPOSURE_HOLD_S))

    # ── camera ──────────────────────────────────────────────────────────────────────────────
    def frame_at(self, t: float) -> "Image.Image":
        rng = self.frame_rng
        bp = float(self.conveyor.belt_pos(t))
        views = []
        active = [f for f in self.faults if f.active(t)]
        for part in self.conveyor.visible(bp):
            variant = "ok"
            for f in active:
                if f.kind in PRODUCT_FAULTS or f.kind == "cycles_without_parts":
                    lo, hi = self._crossing_range(f)
                    if lo <= part.pos < hi:
                        variant = f.kind
            if variant == "cycles_without_parts":
                continue  # the PLC counts it; the camera never sees it
            views.append(PartView(bp - part.pos, variant, part.variety, part.shade))
        seg = self.timeline.segment_at(t)
        gain = SHIFT_LIGHT[seg.shift % 3] * (1.0 + 0.02 * np.sin(2 * np.pi * t / 97.0 + self.drift_phase))
        gain *= self._exposure(t)
        gain *= float(rng.normal(1.0, 0.012))  # mains flicker beating against the exposure
        if rng.random() < 0.01:
            gain *= 0.88  # a lamp dips
        occlusion = 0.0
        for f in active:
            if f.kind == "camera_occlusion":
                occlusion = 0.3 + 0.7 * float(np.clip((t - f.start) / 5.0, 0, 1))
        return self.scene.render(bp, views, float(gain), rng, occlusion, haze=self._lens_dirt(t))

    def _exposure(self, t: float) -> float:
        """The auto-exposure's step in force at t: a function of the time alone (a counter-based
        draw per hold period), so any split of a run renders the same frames."""
        k = int((t + self.exposure_phase) // EXPOSURE_HOLD_S)
        draw = np.random.default_rng([self.seed, self.index, 10, k]).integers(len(EXPOSURE_STEPS))
        return EXPOSURE_STEPS[int(draw)]

    def _lens_dirt(self, t: float) -> float:
        """Haze on the lens: grows through each shift, wiped at the handover (normal, slow change)."""
        tl = self.timeline
        into_shift = ((t - tl.shift_origin_s) % tl.shift_s) / tl.shift_s
        return LENS_DIRT_PER_SHIFT * into_shift

    def _crossing_range(self, f: Fault) -> tuple[float, float]:
        if f not in self._crossing_ranges:
            self._crossing_ranges[f] = self.conveyor.crossing_range(f)
        return self._crossing_ranges[f]


class Plant:
    """A simulated factory. `records(duration_s)` continues where the previous call stopped."""

    def __init__(self, assets: int | list[str] = 4, seed: int = 0, start_time: float | None = None,
                 faults: list[Fault] | str = "none", fps: float = 4.0, sample_rate: int = 16000,
                 audio_chunk_s: float = 0.5, frame_size: tuple[int, int] = (320, 240),
                 shift_s: float = 8 * 3600.0):
        import time

        self.assets: list[str] = asset_names(assets) if isinstance(assets, int) else list(assets)
        if not self.assets:
            raise ConfigError("a plant needs at least one asset")
        if fps <= 0 or audio_chunk_s <= 0 or sample_rate < 4000:
            raise ConfigError("fps and audio_chunk_s must be positive and sample_rate at least 4000 Hz")
        self.seed = seed
        self.start_time = float(start_time if start_time is not None else round(time.time(), 3))
        self.fps, self.sample_rate, self.audio_chunk_s = fps, sample_rate, audio_chunk_s
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.shift_s = shift_s
        if isinstance(faults, (str, Path)):
            faults = self._schedule(str(faults))
        unknown = {f.asset for f in faults} - set(self.assets)
        if unknown:
            raise ConfigError(f"fault schedule names assets this plant does not have: {', '.join(sorted(unknown))} "
                              f"(assets: {', '.join(self.assets)})")
        self.ground_truth: list[Fault] = sorted(faults, key=lambda f: (f.start, f.asset))
        self._stations = [_Station(self, i, a, [f for f in self.ground_truth if f.asset == a])
                          for i, a in enumerate(self.assets)]
        self._t = self.start_time
        self._run_id = f"s{seed}-{int(self.start_time * 1000)}"

    def _schedule(self, spec: str) -> list[Fault]:
        name, _, horizon = spec.partition(":")
        if name in PRESETS:
            h = float(horizon) if horizon else max(DEFAULT_PRESET_HORIZON_S, 1.5 * min_duration_for_all(len(self.assets)))
            return fault_schedule(name, self.assets, self.start_time, h, self.seed)
        return load_schedule(spec, origin=self.start_time)

    @property
    def time(self) -> float:
        """Event time up to which records have been produced."""
        return self._t

    def segments(self, asset: str, start: float, end: float) -> list["Segment"]:
        """The true operating state of an asset (run/idle, speed, idle reason, shift) over [start, end)."""
        return self._station(asset).timeline.segments_between(start, end)

    def _station(self, asset: str) -> _Station:
        for st in self._stations:
            if st.asset == asset:
                return st
        raise KeyError(f"no asset {asset!r} in this plant ({', '.join(self.assets)})")

    def records(self, duration_s: float) -> Iterator[tuple[Kind, WireRecord]]:
        """Records with event time in [time, time + duration_s), ordered by event time."""
        end = self._t + duration_s
        while self._t < end - 1e-9:
            b = min(self._t + 1.0, end)
            batch: list[tuple[float, int, int, int, Kind, WireRecord]] = []
            for st in self._stations:
                self._frames(st, b, batch)
                self._audio(st, b, batch)
                self._logs(st, b, batch)
            batch.sort(key=lambda r: r[:4])
            self._t = b  # state is consistent even if the caller stops iterating mid-batch
            for *_, kind, rec in batch:
                yield kind, rec

    def _frames(self, st: _Station, until: float, batch: list) -> None:
        while (t := self.start_time + st.frame_phase + st.next_frame / self.fps) < until:
            k = st.next_frame
            jpeg = st.scene.encode(st.frame_at(t))
            rec = encode_frame(st.asset, st.sources[Kind.FRAME], t, jpeg, id=f"{self._run_id}-{k}", sequence=k)
            batch.append((t, st.index, 0, k, Kind.FRAME, rec))
            st.next_frame += 1

    def _audio(self, st: _Station, until: float, batch: list) -> None:
        n = int(round(self.audio_chunk_s * self.sample_rate))
        while (t := self.start_time + st.next_audio * self.audio_chunk_s) < until:
            k = st.next_audio
            samples = st.acoustics.chunk(st.timeline, t, n, st.faults, st.audio_rng)
            rec = encode_audio(st.asset, st.sources[Kind.AUDIO], t, wav_bytes(samples, self.sample_rate),
                               id=f"{self._run_id}-{k}", sequence=k)
            batch.append((t, st.index, 1, k, Kind.AUDIO, rec))
            st.next_audio += 1

    def _logs(self, st: _Station, until: float, batch: list) -> None:
        while (b0 := self.start_time + st.next_second) < until:
            for t, line in st.plc.second(b0):
                heapq.heappush(st.pending_logs, (t, st.log_pushed, line))
                st.log_pushed += 1
            st.next_second += 1
        while st.pending_logs and st.pending_logs[0][0] < until:
            t, _, line = heapq.heappop(st.pending_logs)
            seq = st.log_seq
            st.log_seq += 1
            rec = encode_log(st.asset, st.sources[Kind.LOG], t, line, id=f"{self._run_id}-{seq}", sequence=seq)
            batch.append((t, st.index, 2, seq, Kind.LOG, rec))
