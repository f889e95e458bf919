"""`fusionwatch up` prints events live, and the simulator's injected faults next to them."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from services.stack import up


def _change(kind: str, peak: float, event: str = "e1"):
    data = SimpleNamespace(event_id=event, asset="L1-S2", kind="acoustic", severity="high", peak_score=peak,
                           threshold=8.0, start_time=datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc),
                           attribution=SimpleNamespace(modality_shares={"audio": 0.9, "frames": 0.1}))
    return SimpleNamespace(change=kind, data=data)


def test_updates_print_only_when_the_peak_rises(monkeypatch):
    monkeypatch.setattr(up.console, "width", 200)  # one event per line
    printer = up.LivePrinter()
    with up.console.capture() as cap:
        for kind, peak in [("opened", 9.0), ("updated", 9.0), ("updated", 12.5), ("updated", 11.0), ("closed", 12.5)]:
            printer.change(_change(kind, peak))
    lines = [ln for ln in cap.get().splitlines() if ln.strip()]
    assert [ln.split()[0] for ln in lines] == ["OPENED", "UPDATED", "CLOSED"]
    assert "peak  12.50" in lines[1] and "audio 90%" in lines[0]


def test_injected_faults_print_as_ground_truth_and_calls_do_not(monkeypatch):
    monkeypatch.setattr(up.console, "width", 200)
    with up.console.capture() as cap:
        up.LivePrinter.fault({"asset": "L1-S1", "kind": "cavitation", "start": 1767600000.0, "end": 1767600019.5,
                              "modalities": ["audio"]})
        up.LivePrinter.fault({"call_id": "c1", "call_type": "calm"})
    out = cap.get()
    assert "FAULT" in out and "cavitation" in out and "08:00:00–08:00:19 UTC" in out and "ground truth" in out
    assert "c1" not in out
