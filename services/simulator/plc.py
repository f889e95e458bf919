"""The PLC/MES log stream of one simulated station: JSON lines {"msg","level","code","serial"}.

The third modality of the plant simulator, generated one second at a time in order (the
generator keeps a little state, like a real PLC: cycle counter, motor temperature, when it last
saw a part). Lines are templated but varied: cycle completions with part serials and cycle times,
drive telemetry, heartbeats, state changes with reasons (stops, E-STOPs, jams, changeovers, shift
handovers, speed changes), starvation notices, and the occasional known warning or error.

What the logs *believe* can differ from what the line does: during `estop_but_moving` the PLC
reports an E-STOP and an idle line (no cycles) while the camera and microphone show it running.
Log-only faults add an error code never seen in normal operation, or a burst of ordinary lines
at an abnormal rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.simulator.conveyor import Conveyor
from services.simulator.faults import Fault
from services.simulator.timeline import Segment, Timeline

OPERATORS = ("OP-104", "OP-117", "OP-121", "OP-133", "OP-140", "OP-152", "OP-166", "OP-178")
SHIFT_NAMES = ("A", "B", "C")
RECIPES = ("BRK-200", "BRK-210", "HSG-31", "HSG-33", "CAP-7")
FEEDERS = ("feeder F1", "feeder F2", "the bowl feeder", "the pallet buffer")
# (code, level, template); {serial} only in templates that concern a part
KNOWN_WARNINGS = (
    ("W220", "WARN", "lube level low on {station}, refill at next stop"),
    ("W230", "WARN", "air pressure {bar:.1f} bar below setpoint 6.0 bar"),
    ("W310", "WARN", "vision retry on part {serial}"),
    ("E210", "ERROR", "barcode read failed on part {serial}, routed to manual check"),
    ("W240", "WARN", "guard door {door} opened briefly"),
    ("I410", "INFO", "operator {op} acknowledged alarm"),
)
# Every code normal operation can emit (state changes, cycles, telemetry, heartbeats, known warnings).
NORMAL_CODES = frozenset({"C100", "T200", "H000", "S100", "S101", "S105", "S110", "S120", "S130", "S131", "S140",
                          "S141", "S150", "S160", "I400", "S900", "S901"} | {c for c, _, _ in KNOWN_WARNINGS})
# Codes no normal run ever emits (log-only fault "unseen_error_code").
UNSEEN_ERRORS = (
    ("E771", "servo axis {axis} following error {mm:.2f} mm exceeds limit"),
    ("E804", "safety relay K{axis} feedback mismatch"),
    ("E915", "encoder checksum error on axis {axis}"),
    ("F102", "hydraulic unit pressure transducer out of range ({bar:.0f} bar)"),
)


class PlcLog:
    def __init__(self, asset: str, timeline: Timeline, conveyor: Conveyor, faults: list[Fault],
                 rng: np.random.Generator, start: float):
        self.asset = asset
        self.station = asset
        self.timeline = timeline
        self.conveyor = conveyor
        self.faults = faults
        self._estops = [f for f in faults if f.kind == "estop_but_moving"]
        self._rng = rng
        self.start = start
        self.counter = int(rng.integers(1000, 90000))  # cycle counter carried over from before the run
        self.last_cycle_t: float | None = None
        self.temp = float(rng.uniform(34, 42))
        self.next_telemetry = start + float(rng.uniform(0, 8))
        self.next_heartbeat = start + float(rng.uniform(0, 30))
        self.next_status = start + 5.0
        self.recipe = RECIPES[int(rng.integers(len(RECIPES)))]

    def _estop_at(self, t: float) -> Fault | None:
        for f in self._estops:
            if f.active(t):
                return f
        return None

    def running_view(self, t: float) -> tuple[bool, Segment]:
        """What the PLC believes at t: (running?, segment)."""
        seg = self.timeline.segment_at(t)
        return seg.running and self._estop_at(t) is None, seg

    def _line(self, out: list, t: float, msg: str, level: str = "INFO", code: str | None = None,
              serial: str | None = None) -> None:
        rec: dict[str, Any] = {"msg": msg, "level": level}
        if code:
            rec["code"] = code
        if serial:
            rec["serial"] = serial
        out.append((t, rec))

    def serial(self, index: int) -> str:
        return f"{self.asset.replace('-', '')}-{index:07d}"

    def second(self, b0: float) -> list[tuple[float, dict[str, Any]]]:
        """Every line with time in [b0, b0 + 1); call for consecutive seconds."""
        out: list[tuple[float, dict[str, Any]]] = []
        rng, b1 = self._rng, b0 + 1.0
        # state changes that start in this second
        for seg in self.timeline.segments_between(b0, b1):
            if b0 <= seg.t0 < b1 and seg.t0 > self.start and self._estop_at(seg.t0) is None:
                self._transition(out, seg, seg.t0 + float(rng.uniform(0.02, 0.3)), rng)
        for f in self._estops:
            if b0 <= f.start < b1:
                self._line(out, f.start + 0.05, f"E-STOP pressed at panel P{int(rng.integers(1, 4))}", "WARN", "S900")
            if b0 <= f.end < b1:
                pct = round(100 * float(self.timeline.speed(f.end)))
                self._line(out, f.end + 0.1, f"E-STOP reset, line restarted at {pct}%", "INFO", "S901")
        # cycles: parts crossing the station while the PLC believes the line runs
        for t, part in self.conveyor.crossings(b0, b1):
            if not self.running_view(t)[0]:
                continue
            self.counter += 1
            serial = self.serial(part.index)
            ct = t - self.last_cycle_t if self.last_cycle_t is not None else float(rng.uniform(1.5, 2.5))
            self.last_cycle_t = t
            self._line(out, t, f"cycle {self.counter} complete, part {serial}, ct={min(ct, 999):.2f}s", "INFO", "C100", serial)
        running, seg = self.running_view(b0)
        speed = float(self.timeline.speed(b0)) if running else 0.0
        self.temp += (34.0 + 9.0 * speed - self.temp) / 300.0  # slow thermal drift towards load
        if b0 >= self.next_status:
            since = max(self.last_cycle_t or self.start, seg.t0)
            if running and b0 - since > 4.0:
                self._line(out, b0 + float(rng.uniform(0, 1)), f"waiting for part from upstream, {b0 - since:.0f} s", "INFO", "S120")
            elif not running:
                reason = "estop" if self._estop_at(b0) else seg.reason
                self._line(out, b0 + float(rng.uniform(0, 1)), f"line idle ({reason}), {b0 - seg.t0:.0f} s", "INFO", "S110")
            self.next_status = b0 + float(rng.uniform(4, 7))
        if b0 >= self.next_telemetry:
            self._telemetry(out, b0 + float(rng.uniform(0, 1)), speed, rng)
            self.next_telemetry = b0 + float(rng.uniform(5, 12))
        if b0 >= self.next_heartbeat:
            self._line(out, b0 + float(rng.uniform(0, 1)), f"PLC heartbeat ok, scan {int(rng.integers(3, 7))} ms", "DEBUG", "H000")
            self.next_heartbeat = b0 + float(rng.uniform(28, 32))
        if rng.random() < 1 / 90:
            code, level, tpl = KNOWN_WARNINGS[int(rng.integers(len(KNOWN_WARNINGS)))]
            if running or "{serial}" not in tpl:
                named = self.serial(max(self.conveyor.last_index - 3, 0)) if "{serial}" in tpl else None
                msg = tpl.format(station=self.station, bar=float(rng.uniform(5.2, 5.8)), serial=named,
                                 door=int(rng.integers(1, 5)), op=OPERATORS[int(rng.integers(len(OPERATORS)))])
                self._line(out, b0 + float(rng.uniform(0, 1)), msg, level, code, named)
        for f in self.faults:
            if f.overlaps(b0, b1):  # own random stream: the normal lines around a fault stay as they were
                self._fault_lines(out, f, b0, b1, speed, np.random.default_rng([int(f.start * 1000), int(b0 * 1000)]))
        return sorted((x for x in out if b0 <= x[0] < b1 + 0.5), key=lambda x: x[0])

    def _telemetry(self, out: list, t: float, speed: float, rng: np.random.Generator) -> None:
        rpm = int(round(1470 * speed + (rng.normal(0, 4) if speed else 0)))
        current = 2.1 + 2.4 * speed + float(rng.normal(0, 0.05)) if speed else float(rng.uniform(0.02, 0.08))
        self._line(out, t, f"drive: speed {rpm} rpm, current {current:.2f} A, motor temp {self.temp:.1f} C", "INFO", "T200")

    def _transition(self, out: list, seg: Segment, t: float, rng: np.random.Generator) -> None:
        prev = self.timeline.segment_at(seg.t0 - 1e-6)
        pct = round(100 * seg.speed)
        if not seg.running:
            reason = seg.reason
            if reason == "estop":
                self._line(out, t, f"E-STOP pressed at panel P{int(rng.integers(1, 4))}", "WARN", "S900")
            elif reason == "jam":
                self._line(out, t, "jam detected at infeed, line stopped", "WARN", "S140")
            elif reason == "material_shortage":
                self._line(out, t, f"line stopped: material shortage at {FEEDERS[int(rng.integers(len(FEEDERS)))]}", "WARN", "S150")
            elif reason == "changeover":
                nxt = RECIPES[(RECIPES.index(self.recipe) + 1 + int(rng.integers(len(RECIPES) - 1))) % len(RECIPES)]
                self._line(out, t, f"changeover started: recipe {self.recipe} -> {nxt}", "INFO", "S160")
                self.recipe = nxt
            elif reason == "shift_change":
                self._line(out, t, f"shift handover: operator {self._operator(prev.shift)} logging out", "INFO", "S130")
            else:
                self._line(out, t, f"planned stop: {('break', 'cleaning', 'quality check')[int(rng.integers(3))]}", "INFO", "S100")
        elif not prev.running:
            if prev.reason == "estop":
                self._line(out, t, f"E-STOP reset, line restarted at {pct}%", "INFO", "S901")
            elif prev.reason == "jam":
                self._line(out, t, f"jam cleared by operator, line restarted at {pct}%", "INFO", "S141")
            elif prev.reason == "changeover":
                self._line(out, t, f"recipe {self.recipe} loaded, line started at {pct}%", "INFO", "I400")
            elif prev.reason == "shift_change":
                self._line(out, t, f"operator {self._operator(seg.shift)} logged in (shift {SHIFT_NAMES[seg.shift % 3]}), "
                                   f"line started at {pct}%", "INFO", "S131")
            else:
                self._line(out, t, f"line started at {pct}%", "INFO", "S101")
        else:
            self._line(out, t, f"speed setpoint {round(100 * prev.speed)}% -> {pct}%", "INFO", "S105")

    def _operator(self, shift: int) -> str:
        return OPERATORS[(shift * 3 + sum(map(ord, self.asset))) % len(OPERATORS)]

    def _fault_lines(self, out: list, f: Fault, b0: float, b1: float, speed: float, rng: np.random.Generator) -> None:
        lo, hi = max(b0, f.start), min(b1, f.end)
        if f.kind == "unseen_error_code":
            frng = np.random.default_rng(int(f.start * 1000) % (2 ** 32))
            code, tpl = UNSEEN_ERRORS[int(frng.integers(len(UNSEEN_ERRORS)))]
            period = float(frng.uniform(2.0, 4.0))
            k0 = int(np.ceil((lo - f.start - 0.3) / period))
            while (t := f.start + 0.3 + k0 * period) < hi:
                if t >= lo:
                    msg = tpl.format(axis=int(frng.integers(1, 5)), mm=float(rng.uniform(0.4, 1.6)), bar=float(rng.uniform(240, 320)))
                    self._line(out, t, msg, "ERROR", code)
                k0 += 1
        elif f.kind == "log_rate_anomaly":
            # ordinary lines (telemetry, heartbeats) at ~10x their normal rate: only the rate is wrong
            for _ in range(int(rng.poisson(10.0 * (hi - lo)))):
                t = float(rng.uniform(lo, hi))
                if rng.random() < 0.5:
                    self._telemetry(out, t, speed, rng)
                else:
                    self._line(out, t, f"PLC heartbeat ok, scan {int(rng.integers(3, 7))} ms", "DEBUG", "H000")
