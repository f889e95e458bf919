"""Call-centre escalations: one event per sustained episode of customer frustration.

The factory lifecycle (`event_lifecycle.EventLifecycle`) opens and closes on one threshold. A
customer's frustration does not fall while they pause or the agent answers, but a per-window
model's estimate does, so one threshold made one angry call open two or three events. Here the
event opens after `open_after` consecutive windows at or above `open_threshold` and closes only
after `close_after` consecutive windows below the lower `close_threshold`; a window between the
two thresholds neither counts towards opening nor towards closing (it resets both runs).

Pure logic, the same state format as `EventLifecycle` (plain JSON, committed with the offsets),
so the live monitor and the evaluation (`services.training.callcenter_eval`) run this one class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamlogic.event_lifecycle import (
    UPDATE_EVERY,
    EventChange,
    EventLifecycle,
    ScoredWindow,
    add_window,
    new_event,
    severity,
    window_dict,
)


@dataclass(frozen=True)
class EscalationRule:
    open_threshold: float = 0.6
    close_threshold: float = 0.4
    open_after: int = 3
    close_after: int = 8

    def __post_init__(self) -> None:
        if not 0 <= self.close_threshold <= self.open_threshold:
            raise ValueError("close_threshold must lie in [0, open_threshold]")
        if self.open_after < 1 or self.close_after < 1:
            raise ValueError("open_after and close_after must be >= 1")

    @classmethod
    def from_settings(cls, monitor: Any) -> "EscalationRule":
        """From `services.settings.MonitorSettings` (duck-typed: streamlogic imports no settings)."""
        return cls(monitor.escalation_threshold, monitor.escalation_close_threshold, monitor.escalation_open_after,
                   monitor.escalation_close_after)


class EscalationLifecycle(EventLifecycle):
    """`EventLifecycle` with two thresholds. The window's `score` is the customer's frustration;
    its `threshold` is ignored in favour of the rule's (the event still records the open threshold)."""

    def __init__(self, rule: EscalationRule = EscalationRule()):
        super().__init__(rule.open_after, rule.close_after)
        self.rule = rule

    def update(self, w: ScoredWindow) -> list[EventChange]:
        st = self.state(w.asset)
        over = w.judged and w.score >= self.rule.open_threshold
        below = not w.judged or w.score < self.rule.close_threshold
        ev = st["open"]
        if ev is None:
            if not over:
                st["over"], st["pending"] = 0, []
                return []
            st["over"] += 1
            st["pending"].append(window_dict(w) | {"threshold": self.rule.open_threshold})
            if st["over"] < self.open_after:
                return []
            ev = st["open"] = new_event(st["pending"])
            st["over"], st["pending"] = 0, []
            return [self._change("opened", ev)]
        add_window(ev, window_dict(w), over)
        if not below:
            ev["under"] = 0
            if over:
                old = ev["severity"]
                ev["severity"] = severity(ev["peak"], ev["threshold"])
                if ev["severity"] != old or ev["windows"] % UPDATE_EVERY == 0:
                    return [self._change("updated", ev)]
            return []
        ev["under"] += 1
        if ev["under"] >= self.close_after:
            st["open"] = None
            ev["status"] = "closed"
            return [self._change("closed", ev)]
        return []
