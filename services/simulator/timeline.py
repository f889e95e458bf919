"""The operating state of one simulated station over time: what the line is *really* doing.

Every modality of the plant simulator renders from this one timeline (camera: belt position and
parts; microphone: motor speed; PLC: state changes and cycles), which is why normal operation is
consistent across modalities — and why a fault can be modelled as one modality's view departing
from it. The timeline is generated lazily, forward only, from a per-asset random stream, so it is
deterministic for a seed however far and in whatever steps it is extended.

Speed is a factor of nominal (1.0 = 100 % setpoint); it ramps linearly over `RAMP_S` at every
change, like a drive following its setpoint. `rev(t)` is the integral of speed (seconds at nominal
speed): motor phase, belt position and part arrivals all derive from it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from services.simulator.faults import FAULT_GUARD_S, Fault

RAMP_S = 2.0
NOMINAL_BELT_PX_S = 60.0  # belt speed in camera pixels per second at 100 % setpoint
IDLE_REASONS = ("planned_stop", "changeover", "estop", "jam", "material_shortage")
_IDLE_WEIGHTS = np.array([0.25, 0.15, 0.2, 0.2, 0.2])
_IDLE_LEN = {"planned_stop": (20, 60), "changeover": (15, 45), "estop": (6, 20), "jam": (8, 25),
             "material_shortage": (8, 30), "shift_change": (20, 45)}


@dataclass(frozen=True)
class Segment:
    t0: float
    t1: float
    mode: str  # "run" | "idle"
    speed: float  # target speed factor, 0 when idle
    reason: str | None  # idle: why it stopped ("estop", "shift_change", ...); run: None
    shift: int  # shift number since the epoch origin (changes at shift boundaries)

    @property
    def running(self) -> bool:
        return self.mode == "run"


class Timeline:
    def __init__(self, start: float, rng: np.random.Generator, faults: list[Fault], shift_s: float = 8 * 3600.0,
                 shift_origin_s: float = 6 * 3600.0):
        self.start = start
        self._rng = rng
        self.shift_s = shift_s
        self.shift_origin_s = shift_origin_s  # shifts start at 06:00, 14:00, 22:00 UTC by default
        # guard windows in which the line must run (faults need it running to show at all)
        self._guards = sorted((f.start - FAULT_GUARD_S, f.end + FAULT_GUARD_S) for f in faults)
        speed0 = self._pick_speed(1.0)
        self.segments: list[Segment] = []
        self._t0s: list[float] = []
        # speed breakpoints (piecewise linear) and the cumulative integral at each breakpoint
        self._bp_t = [start - 1e6, start]
        self._bp_v = [speed0, speed0]
        self._bp_c = [-1e6 * speed0, 0.0]
        self._append(Segment(start, start + float(rng.uniform(20, 120)), "run", speed0, None, self.shift_of(start)))
        self._arrays()

    # ── generation ────────────────────────────────────────────────────────────────────────────
    def shift_of(self, t: float) -> int:
        return int((t - self.shift_origin_s) // self.shift_s)

    def _pick_speed(self, current: float) -> float:
        while True:
            s = round(float(self._rng.choice(np.arange(0.6, 1.41, 0.05))), 2)
            if abs(s - current) >= 0.1:
                return s

    def _guard_overlapping(self, t0: float, t1: float) -> tuple[float, float] | None:
        for g in self._guards:
            if g[0] < t1 and t0 < g[1]:
                return g
        return None

    def _append(self, seg: Segment) -> None:
        prev_speed = self._bp_v[-1]
        ramp_end = seg.t0 + min(RAMP_S, seg.t1 - seg.t0)
        if seg.t0 > self._bp_t[-1]:  # hold the previous speed until this segment starts
            self._add_bp(seg.t0, prev_speed)
        self._add_bp(ramp_end, seg.speed)
        self.segments.append(seg)
        self._t0s.append(seg.t0)

    def _add_bp(self, t: float, v: float) -> None:
        t_prev, v_prev = self._bp_t[-1], self._bp_v[-1]
        if t <= t_prev:
            return
        self._bp_c.append(self._bp_c[-1] + (t - t_prev) * (v_prev + v) / 2.0)
        self._bp_t.append(t)
        self._bp_v.append(v)

    def _next_segment(self) -> Segment:
        last = self.segments[-1]
        t0 = last.t1
        rng = self._rng
        shift = self.shift_of(t0 + 1e-6)
        boundary = self.shift_origin_s + (shift + 1) * self.shift_s
        if shift != last.shift and last.reason != "shift_change":
            mode, reason = "idle", "shift_change"  # the handover: the line stops while crews swap
        elif not last.running:
            mode, reason = "run", None
        elif rng.random() < 0.45:
            mode, reason = "idle", str(rng.choice(IDLE_REASONS, p=_IDLE_WEIGHTS))
        else:
            mode, reason = "run", None  # a speed change
        lo, hi = _IDLE_LEN[reason] if mode == "idle" and reason is not None else (25, 150)
        t1 = t0 + float(rng.uniform(lo, hi))
        if mode == "idle":
            speed = 0.0
        elif last.running:
            speed = self._pick_speed(last.speed)
        else:
            speed = self._pick_speed(0.0) if rng.random() < 0.5 else self._last_run_speed()
        if mode == "run" and t1 > boundary:
            t1 = max(boundary, t0 + 1.0)  # a run ends at the shift boundary
        if mode == "idle":
            g = self._guard_overlapping(t0, t1)
            if g is not None:
                if g[0] - t0 >= 5.0:
                    t1 = g[0]  # stop only until a fault needs the line running
                else:  # postpone the stop (a handover waits too) and run through the fault
                    run_speed = last.speed if last.running else self._last_run_speed()
                    return Segment(t0, g[1] + float(rng.uniform(5, 30)), "run", run_speed, None, last.shift)
        return Segment(t0, t1, mode, speed, reason, shift)

    def _last_run_speed(self) -> float:
        for seg in reversed(self.segments):
            if seg.running:
                return seg.speed
        return 1.0

    def extend_to(self, t: float) -> None:
        grew = False
        while self.segments[-1].t1 <= t + RAMP_S:
            self._append(self._next_segment())
            grew = True
        if grew:
            self._arrays()

    def _arrays(self) -> None:
        self.bp_t = np.asarray(self._bp_t)
        self.bp_v = np.asarray(self._bp_v)
        self.bp_c = np.asarray(self._bp_c)

    # ── queries (call extend_to first; Plant does) ──────────────────────────────────────────────
    def segment_at(self, t: float) -> Segment:
        self.extend_to(t)
        return self.segments[max(bisect.bisect_right(self._t0s, t) - 1, 0)]

    def segments_between(self, t0: float, t1: float) -> list[Segment]:
        self.extend_to(t1)
        i = max(bisect.bisect_right(self._t0s, t0) - 1, 0)
        out = []
        while i < len(self.segments) and self.segments[i].t0 < t1:
            out.append(self.segments[i])
            i += 1
        return out

    def speed(self, t: np.ndarray | float) -> np.ndarray:
        return np.interp(t, self.bp_t, self.bp_v)

    def rev(self, t: np.ndarray | float) -> np.ndarray:
        """Integral of speed from the start: seconds of travel at nominal speed."""
        t = np.asarray(t, dtype=np.float64)
        i = np.clip(np.searchsorted(self.bp_t, t, side="right") - 1, 0, len(self.bp_t) - 1)
        v = np.interp(t, self.bp_t, self.bp_v)
        return self.bp_c[i] + (t - self.bp_t[i]) * (self.bp_v[i] + v) / 2.0
