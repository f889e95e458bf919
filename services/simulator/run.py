"""Run a simulator against Kafka: the first hop of the data path for demos, tests and benchmarks.

`run_simulation` builds a factory `Plant` or a `CallCenter`, produces its records to the contract
topics (created first: never rely on auto-create), paces them at `speed` x real time (0 = as fast
as possible), appends ground truth to a JSON-lines file as it is injected, and stops at the end
of `duration_s` or when `stop_event` is set. `fusionwatch simulate` and `fusionwatch up` call it.

Pacing sends each step's records once the wall clock has reached the step's *end* in event
time, so a record is never sent before the moment it describes — like a real sensor.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from schemas.envelope import Kind
from schemas.errors import ConfigError, DependencyUnavailable
from services.settings import Settings

log = logging.getLogger(__name__)

UNBOUNDED_HORIZON_S = 24 * 3600.0  # fault presets for runs without a duration are laid out this far ahead


@dataclass
class SimulationStats:
    profile: str
    assets: int
    duration_s: float | None
    speed: float
    start_time: float
    records: int = 0
    bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in Kind})
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time (all threads): the cost when the box is shared
    ground_truth_rows: int = 0
    stopped_early: bool = False

    @property
    def realtime_factor(self) -> float:
        """Simulated seconds per wall second."""
        return self.sim_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def asset_seconds_per_wall_s(self) -> float:
        return self.assets * self.realtime_factor

    @property
    def asset_seconds_per_cpu_s(self) -> float:
        return self.assets * self.sim_seconds / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    def to_json(self) -> dict:
        return asdict(self) | {"realtime_factor": round(self.realtime_factor, 3),
                               "asset_seconds_per_wall_s": round(self.asset_seconds_per_wall_s, 2),
                               "asset_seconds_per_cpu_s": round(self.asset_seconds_per_cpu_s, 2)}


def make_source(profile: str, assets: int, seed: int, start_time: float, faults: str | list, horizon_s: float):
    """The simulator object of a profile (`Plant` with its fault schedule, or `CallCenter`)."""
    from services.profiles import get_profile

    return get_profile(profile).simulator(assets, seed, start_time, faults, horizon_s)


def run_simulation(settings: Settings, bootstrap: str | None, profile: str = "factory", assets: int = 4,
                   duration_s: float | None = 60.0, speed: float = 1.0, faults: str | list = "none", seed: int = 0,
                   ground_truth_path: str | Path | None = None, stop_event: threading.Event | None = None,
                   on_ground_truth: Callable[[dict], None] | None = None,
                   start_time: float | None = None, on_progress: Callable[[SimulationStats], None] | None = None,
                   dry_run: bool = False) -> SimulationStats:
    """Produce a simulation to Kafka (or, with dry_run, only generate it: a throughput benchmark).

    duration_s None (or <= 0) runs until stop_event is set. start_time defaults to now, or to
    now - duration_s when the run is faster than real time (speed 0 or > 1: a fast replay then
    ends at the present, keeping every ce_time behind the consumers' clock).
    """
    if speed < 0:
        raise ConfigError("--speed must be 0 (as fast as possible) or positive (1 = real time)")
    if assets < 1:
        raise ConfigError("--assets must be at least 1")
    bounded = duration_s is not None and duration_s > 0
    if not bounded and speed == 0:
        raise ConfigError("an unbounded run (no --duration) needs a real-time --speed; speed 0 would never stop")
    if not bounded and speed > 1 and start_time is None:
        raise ConfigError(f"--speed {speed:g} without --duration would stamp records ahead of the clock, and consumers "
                          "dead-letter those (time_in_future): give a --duration (the run then ends at the present) "
                          "or a --start-time in the past")
    bootstrap = bootstrap or settings.kafka.bootstrap
    if not dry_run and not bootstrap:
        raise ConfigError("no Kafka broker configured: run `fusionwatch broker` (or `fusionwatch up`) and set "
                          "FW_KAFKA_BOOTSTRAP=127.0.0.1:19092, or pass --bootstrap HOST:PORT")
    now = time.time()
    if start_time is None:
        # faster than real time, a bounded run starts in the past and ends at the present: every
        # ce_time stays behind the consumers' clock (they dead-letter records from the future)
        start_time = now - duration_s if ((speed == 0 or speed > 1) and bounded) else now
    start_time = round(start_time, 3)
    horizon = duration_s if bounded else UNBOUNDED_HORIZON_S
    source = make_source(profile, assets, seed, start_time, faults, horizon)
    stats = SimulationStats(profile, assets, duration_s if bounded else None, speed, start_time)
    stop_event = stop_event or threading.Event()

    producer = topics_by_kind = None
    if not dry_run:
        from services.kafka import ensure_topics, make_producer

        topics = ensure_topics(settings.kafka, bootstrap)
        topics_by_kind = {Kind.FRAME: topics.frames, Kind.AUDIO: topics.audio, Kind.LOG: topics.logs}
        producer = make_producer(settings.kafka, bootstrap)
    gt = _GroundTruthWriter(ground_truth_path, profile, on_ground_truth)
    step = 0.25 if 0 < speed <= 4 else 1.0  # small steps keep real-time pacing smooth
    wall0, cpu0 = time.monotonic(), time.process_time()
    try:
        while not stop_event.is_set():
            remaining = (start_time + duration_s - source.time) if bounded else step
            if remaining <= 1e-9:
                break
            dt = min(step, remaining)
            batch = list(source.records(dt))
            if speed > 0:  # send once the wall clock has reached the end of this step
                wait = wall0 + (source.time - start_time) / speed - time.monotonic()
                if wait > 0 and stop_event.wait(wait):
                    stats.stopped_early = True
                    break
            for kind, rec in batch:
                if producer is not None:
                    producer.send(topics_by_kind[kind], key=rec.key, value=rec.value, headers=rec.headers)
                stats.records += 1
                stats.bytes += len(rec.value)
                stats.by_kind[kind.value] += 1
            stats.ground_truth_rows += gt.write(source)
            stats.sim_seconds = source.time - start_time
            stats.wall_seconds = time.monotonic() - wall0
            stats.cpu_seconds = time.process_time() - cpu0
            if on_progress:
                on_progress(stats)
        else:
            stats.stopped_early = True
        if producer is not None:
            producer.flush(timeout=60)
    except Exception as e:
        from kafka.errors import KafkaError

        if isinstance(e, KafkaError):
            raise DependencyUnavailable(f"producing to Kafka at {bootstrap} failed ({e}); is the broker running? "
                                        "(`fusionwatch broker` or FW_KAFKA_BOOTSTRAP)") from None
        raise
    finally:
        if producer is not None:
            producer.close(timeout=10)
        gt.close()
    stats.sim_seconds = source.time - start_time
    stats.wall_seconds = time.monotonic() - wall0
    stats.cpu_seconds = time.process_time() - cpu0
    return stats


class _GroundTruthWriter:
    """Appends injected faults (factory) or started calls (call centre) as JSON lines, once each."""

    def __init__(self, path: str | Path | None, profile: str, on_row: Callable[[dict], None] | None = None):
        from services.profiles import get_profile

        self.profile, self.on_row = get_profile(profile), on_row
        self.fh = open(path, "w") if path else None
        self.written = 0

    def write(self, source) -> int:
        new = self.profile.ground_truth(source)[self.written:]
        for row in new:
            if self.fh is not None:
                self.fh.write(json.dumps(row.to_json()) + "\n")
            if self.on_row is not None:
                self.on_row(row.to_json())
        if self.fh is not None:
            self.fh.flush()
        self.written += len(new)
        return len(new)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
