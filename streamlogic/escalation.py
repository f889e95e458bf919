"""Call-centre escalations: one event per sustained episode of customer frustration.

A customer's frustration does not fall while they pause or the agent answers, but a per-window
model's estimate does, so one threshold made one angry call open two or three events. An
escalation is therefore the event lifecycle (`event_lifecycle.EventLifecycle`) with two
thresholds: it opens after `open_after` consecutive windows at or above `open_threshold` and closes
only after `close_after` consecutive windows below the lower `close_threshold`. Only windows that
hear the customer count (the call policy judges the others out): the agent's answer between two
angry turns neither breaks the run that opens an escalation nor counts towards closing it — up to
`silence_after` such windows in a row; a longer silence counts as calm, so an escalation whose
customer has stopped talking still closes.

The window's score is the customer's frustration and its threshold `open_threshold` (the call
policy judges it so, services/profiles/callcenter.py); the live monitor and the evaluation
(`services.training.callcenter_eval`) both build their lifecycle here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamlogic.event_lifecycle import EventLifecycle


@dataclass(frozen=True)
class EscalationRule:
    open_threshold: float = 0.6
    close_threshold: float = 0.4
    open_after: int = 3
    close_after: int = 8
    min_customer_speech_s: float = 0.5  # a stereo call's window counts only when it hears this much of the customer
    silence_after: int = 30  # windows without the customer held before their silence counts as calm

    def __post_init__(self) -> None:
        if not 0 < self.open_threshold or not 0 <= self.close_threshold <= self.open_threshold:
            raise ValueError("close_threshold must lie in [0, open_threshold], and open_threshold above 0")
        if self.open_after < 1 or self.close_after < 1 or self.silence_after < 0:
            raise ValueError("open_after and close_after must be >= 1, silence_after >= 0")

    @classmethod
    def from_settings(cls, monitor: Any) -> EscalationRule:
        """From `services.settings.MonitorSettings` (duck-typed: streamlogic imports no settings)."""
        return cls(monitor.escalation_threshold, monitor.escalation_close_threshold, monitor.escalation_open_after,
                   monitor.escalation_close_after, monitor.escalation_min_customer_speech_s,
                   monitor.escalation_silence_after)

    def hears_customer(self, speech_s: dict[str, float] | None) -> bool:
        """Whether a window counts: seconds of speech per channel of a stereo call, None for mono."""
        return speech_s is None or speech_s.get("customer", 0.0) >= self.min_customer_speech_s

    def lifecycle(self) -> EventLifecycle:
        """The lifecycle for windows scored by frustration and judged against `open_threshold`."""
        return EventLifecycle(self.open_after, self.close_after, self.close_threshold / self.open_threshold,
                              hold_unjudged=self.silence_after)
