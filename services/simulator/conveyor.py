"""The belt of one simulated station and the parts riding on it.

Belt position (camera pixels) is the timeline's speed integral, minus belt slip: while the fault
`motor_runs_conveyor_stopped` is active, the motor turns but the belt does not move. Parts sit at
fixed belt coordinates, generated lazily with pitch jitter and occasional gaps (an upstream
station starving this one). A part "cycles" — the PLC counts it — when it crosses the camera's
centre line, so the camera and the logs agree by construction in normal operation.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from services.simulator.faults import Fault
from services.simulator.timeline import NOMINAL_BELT_PX_S, Timeline

CENTER_X = 160.0  # image x of the station's centre line (320-px frame)
PITCH_PX = 100.0  # nominal spacing of parts on the belt
VISIBLE_MARGIN = 60.0
_KEEP_PARTS = 500  # parts kept behind the camera (~5 min of travel at 100 %): crossings look back seconds only


@dataclass(frozen=True)
class Part:
    index: int
    pos: float  # belt coordinate: image x of the part is belt_pos(t) - pos
    shade: float
    variety: int


class Conveyor:
    def __init__(self, timeline: Timeline, faults: list[Fault], rng: np.random.Generator):
        self.timeline = timeline
        self._rng = rng
        self._slips = sorted((f.start, f.end) for f in faults if f.kind == "motor_runs_conveyor_stopped")
        self.parts: list[Part] = []
        self._positions: list[float] = []
        self._next_pos = -320.0 - VISIBLE_MARGIN  # the belt starts full
        self._gap_until = -1

    def belt_pos(self, t: np.ndarray | float) -> np.ndarray:
        tl = self.timeline
        tl.extend_to(float(np.max(t)))
        rev = tl.rev(t)
        for s, e in self._slips:
            rev = rev - (tl.rev(np.clip(t, s, e)) - tl.rev(s))
        return NOMINAL_BELT_PX_S * rev

    def _extend_parts(self, pos: float) -> None:
        rng = self._rng
        while self._next_pos <= pos:
            i = self.parts[-1].index + 1 if self.parts else 0
            self.parts.append(Part(i, self._next_pos, float(np.clip(rng.normal(1.0, 0.035), 0.9, 1.1)),
                                   int(rng.integers(1 << 30))))
            self._positions.append(self._next_pos)
            step = PITCH_PX * float(np.clip(rng.normal(1.0, 0.06), 0.8, 1.2))
            if rng.random() < 0.025:  # upstream starves this station for a while
                step += PITCH_PX * float(rng.uniform(3, 12))
            self._next_pos += step

    def parts_in_range(self, lo: float, hi: float) -> list[Part]:
        """Parts with lo <= pos < hi."""
        self._extend_parts(hi)
        return self.parts[bisect.bisect_left(self._positions, lo): bisect.bisect_left(self._positions, hi)]

    def visible(self, belt_pos: float) -> list[Part]:
        """Parts whose sprite overlaps the frame when the belt is at belt_pos."""
        if len(self.parts) > 4 * _KEEP_PARTS:  # long runs: forget parts far downstream (bounded memory)
            cut = bisect.bisect_left(self._positions, belt_pos - _KEEP_PARTS * PITCH_PX)
            del self.parts[:cut], self._positions[:cut]
        return self.parts_in_range(belt_pos - 320.0 - VISIBLE_MARGIN, belt_pos + VISIBLE_MARGIN)

    @property
    def last_index(self) -> int:
        """Index of the most recently loaded part (-1 before any)."""
        return self.parts[-1].index if self.parts else -1

    def crossings(self, t0: float, t1: float) -> list[tuple[float, Part]]:
        """(time, part) for parts crossing the centre line in [t0, t1), time interpolated linearly."""
        p0, p1 = (float(x) for x in self.belt_pos(np.array([t0, t1])))
        if p1 <= p0:
            return []
        return [(t0 + (t1 - t0) * (p.pos + CENTER_X - p0) / (p1 - p0), p)
                for p in self.parts_in_range(p0 - CENTER_X, p1 - CENTER_X)]

    def crossing_range(self, f: Fault) -> tuple[float, float]:
        """Belt coordinates of parts that cross the centre line while fault f is active."""
        p0, p1 = (float(x) for x in self.belt_pos(np.array([f.start, f.end])))
        return p0 - CENTER_X, p1 - CENTER_X
