"""Fault kinds, fault schedules and the ground-truth rows the simulator writes.

Sits at the very start of the data path: a schedule (preset or file) says which asset misbehaves
how and when; the plant simulator injects exactly that, and the same rows, written as JSON lines,
are what evaluations score windows and events against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from schemas.envelope import format_time, parse_time
from schemas.errors import ConfigError

# fault kind -> modalities whose evidence the fault involves ("frames", "audio", "logs").
# For cross-modal kinds every modality on its own looks like normal operation; the listed
# modalities are the ones that contradict each other (docs/simulator.md has the full story).
FAULT_KINDS: dict[str, tuple[str, ...]] = {
    # visual only
    "surface_defect": ("frames",),
    "missing_component": ("frames",),
    "misaligned_part": ("frames",),
    "camera_occlusion": ("frames",),  # a sensor fault: dirty/blurred lens, not a product fault
    # acoustic only
    "bearing_fault": ("audio",),
    "imbalance": ("audio",),
    "belt_squeal": ("audio",),
    "cavitation": ("audio",),
    # logs only
    "unseen_error_code": ("logs",),
    "log_rate_anomaly": ("logs",),
    # cross-modal
    "motor_runs_conveyor_stopped": ("frames", "audio"),
    "estop_but_moving": ("frames", "audio", "logs"),
    "cycles_without_parts": ("frames", "logs"),
}
CROSS_MODAL_KINDS: frozenset[str] = frozenset(k for k, m in FAULT_KINDS.items() if len(m) > 1)
VISUAL_KINDS = frozenset(k for k, m in FAULT_KINDS.items() if m == ("frames",))
ACOUSTIC_KINDS = frozenset(k for k, m in FAULT_KINDS.items() if m == ("audio",))
LOG_KINDS = frozenset(k for k, m in FAULT_KINDS.items() if m == ("logs",))

PRESETS = ("none", "all", "demo")
# The demo's first fault comes once the stations have learned their own normal: a monitored
# station learns its baseline from its first 120 windows (models/adaptation.py), 2 minutes at the
# default 1 s hop, and only a guard threshold opens an event meanwhile
DEMO_LEAD_S = 150.0
MIN_FAULT_S, MAX_FAULT_S = 8.0, 30.0
# Faults need a running line to be visible or audible at all; the plant keeps every asset running
# from this long before a fault until this long after it, so idle periods never mask one.
FAULT_GUARD_S = 3.0


@dataclass(frozen=True)
class Fault:
    """One injected fault; also one ground-truth row."""

    asset: str
    kind: str
    start: float  # epoch seconds
    end: float  # epoch seconds, exclusive
    modalities: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"unknown fault kind {self.kind!r}; known kinds: {', '.join(FAULT_KINDS)}")
        if not self.end > self.start:
            raise ConfigError(f"fault {self.kind} on {self.asset} ends ({self.end}) before it starts ({self.start})")
        if not self.modalities:
            object.__setattr__(self, "modalities", FAULT_KINDS[self.kind])
        else:
            object.__setattr__(self, "modalities", tuple(self.modalities))

    @property
    def cross_modal(self) -> bool:
        return self.kind in CROSS_MODAL_KINDS

    @property
    def duration(self) -> float:
        return self.end - self.start

    def active(self, t: float) -> bool:
        return self.start <= t < self.end

    def overlaps(self, start: float, end: float) -> bool:
        return self.start < end and start < self.end

    def to_json(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "kind": self.kind,
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "modalities": list(self.modalities),
            "cross_modal": self.cross_modal,
            "start_time": format_time(self.start),
            "end_time": format_time(self.end),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], origin: float | None = None) -> "Fault":
        """Accepts epoch seconds, RFC 3339 strings, or (with `origin`) offsets in seconds from it."""
        try:
            return cls(str(obj["asset"]), str(obj["kind"]), _time(obj["start"], origin), _time(obj["end"], origin),
                       tuple(obj.get("modalities") or ()))
        except KeyError as e:
            raise ConfigError(f"fault row {obj!r} lacks {e}; rows need asset, kind, start, end") from None


def _time(value: Any, origin: float | None) -> float:
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError:
            value = float(value)
    value = float(value)
    # Numbers below 1e9 (before 2001) cannot be real epoch times of a simulation: they are offsets.
    if value < 1e9:
        if origin is None:
            raise ConfigError(f"fault time {value} looks like an offset; give the schedule's start time "
                              "(e.g. `--start-time`) or use epoch seconds / RFC 3339")
        return origin + value
    return value


def load_schedule(path: str | Path, origin: float | None = None) -> list[Fault]:
    """Read a schedule from a JSON list or JSON-lines file of {asset, kind, start, end}."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"fault schedule {path} does not exist; pass a preset ({', '.join(PRESETS)}) or a file") from None
    text_s = text.strip()
    try:
        rows = json.loads(text_s) if text_s.startswith("[") else [json.loads(line) for line in text_s.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is neither a JSON list nor JSON lines of faults: {e}") from None
    faults = sorted((Fault.from_json(r, origin) for r in rows), key=lambda f: (f.start, f.asset))
    _check_no_overlap(faults)
    return faults


def write_ground_truth(faults: Iterable[Fault], path: str | Path) -> None:
    with open(path, "w") as fh:
        for f in faults:
            fh.write(json.dumps(f.to_json()) + "\n")


def _check_no_overlap(faults: list[Fault]) -> None:
    last: dict[str, Fault] = {}
    for f in faults:
        prev = last.get(f.asset)
        if prev is not None and prev.end > f.start:
            raise ConfigError(f"faults overlap on {f.asset}: {prev.kind} until {format_time(prev.end)} and "
                              f"{f.kind} from {format_time(f.start)}; one fault per asset at a time")
        last[f.asset] = f


def min_duration_for_all(n_assets: int) -> float:
    """Shortest run (s) in which preset 'all' fits every kind once, at the shortest gaps and lengths."""
    per_asset = -(-len(FAULT_KINDS) // max(n_assets, 1))
    return _WARMUP_S + per_asset * (MIN_FAULT_S + _MIN_GAP_S) + 1.0


_WARMUP_S = 10.0
_MIN_GAP_S, _MAX_GAP_S = 12.0, 90.0


def fault_schedule(preset: str, assets: list[str], start: float, duration_s: float, seed: int) -> list[Fault]:
    """A schedule from a preset name ("none", "all", "demo") or a schedule file path.

    "all": every fault kind at least once, spread round-robin over the assets, never overlapping on
    one asset, each 8–30 s long with 12–90 s of normal operation between faults; kinds repeat
    (reshuffled) while time remains. "demo": once the stations have learned their baselines
    (`DEMO_LEAD_S`), a visual, an acoustic and a cross-modal fault within a minute, then one fault
    somewhere every 60–120 s.
    """
    if not assets:
        raise ConfigError("a fault schedule needs at least one asset")
    if preset not in PRESETS:
        if Path(preset).exists():
            return load_schedule(preset, origin=start)
        raise ConfigError(f"--faults {preset!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file")
    if preset == "none":
        return []
    rng = np.random.default_rng([seed, 0xFA17])
    end = start + duration_s
    faults: list[Fault] = []
    if preset == "all":
        if duration_s < min_duration_for_all(len(assets)):
            raise ConfigError(
                f"preset 'all' needs at least {min_duration_for_all(len(assets)):.0f} s for {len(assets)} asset(s) "
                "to fit every fault kind; pass a longer --duration or more --assets")
        # Tight runs get the shortest lengths/gaps so every kind still fits; long ones get variety.
        slack = duration_s / min_duration_for_all(len(assets))
        max_len = min(MAX_FAULT_S, MIN_FAULT_S * slack)
        max_gap = min(_MAX_GAP_S, _MIN_GAP_S * slack)
        cursor = {a: start + _WARMUP_S + float(rng.uniform(0, 5)) * (slack > 1.5) for a in assets}
        first_pass = True
        ai = int(rng.integers(len(assets)))
        while True:
            kinds = list(FAULT_KINDS)
            rng.shuffle(kinds)
            placed_any = False
            for kind in kinds:
                for _ in range(len(assets)):  # the next asset with room for this fault
                    asset = assets[ai % len(assets)]
                    ai += 1
                    length = float(rng.uniform(MIN_FAULT_S, max(max_len, MIN_FAULT_S)))
                    gap = float(rng.uniform(_MIN_GAP_S, max(max_gap, _MIN_GAP_S))) if cursor[asset] > start + _WARMUP_S + 5 else 0.0
                    f_start = cursor[asset] + gap
                    if f_start + length <= end:
                        faults.append(Fault(asset, kind, round(f_start, 3), round(f_start + length, 3)))
                        cursor[asset] = f_start + length
                        placed_any = True
                        break
                else:
                    if first_pass:  # cannot happen when the duration check above holds
                        raise ConfigError(f"preset 'all' could not fit {kind}; pass a longer --duration")
            first_pass = False
            if not placed_any:
                break
    else:  # demo
        openers = [sorted(VISUAL_KINDS)[int(rng.integers(len(VISUAL_KINDS)))],
                   sorted(ACOUSTIC_KINDS)[int(rng.integers(len(ACOUSTIC_KINDS)))],
                   sorted(CROSS_MODAL_KINDS)[int(rng.integers(len(CROSS_MODAL_KINDS)))]]
        t = start + DEMO_LEAD_S
        cursor = {a: start for a in assets}
        for i, kind in enumerate(openers):
            asset = assets[i % len(assets)]
            t0 = max(t, cursor[asset] + _MIN_GAP_S)
            length = float(rng.uniform(12, 20))
            if t0 + length > end:
                break
            faults.append(Fault(asset, kind, round(t0, 3), round(t0 + length, 3)))
            cursor[asset] = t0 + length
            t += 25.0
        kinds = list(FAULT_KINDS)
        while True:
            t += float(rng.uniform(60, 120))
            asset = assets[int(rng.integers(len(assets)))]
            t0 = max(t, cursor[asset] + _MIN_GAP_S)
            length = float(rng.uniform(MIN_FAULT_S, MAX_FAULT_S))
            if t0 + length > end:
                break
            faults.append(Fault(asset, kinds[int(rng.integers(len(kinds)))], round(t0, 3), round(t0 + length, 3)))
            cursor[asset] = t0 + length
    faults.sort(key=lambda f: (f.start, f.asset))
    _check_no_overlap(faults)
    return faults
