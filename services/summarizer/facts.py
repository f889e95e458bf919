"""The facts of one event, as the narrator and the renderer may use them.

Where it sits: first step of the summarizer hop. An event arrives on `fw.events` (the
`AnomalyCloudEvent` JSON) and is also a row in the `events` table (written by the monitor before
it publishes), plus, for call-centre escalations, a `call_summaries` row with the sentiment curve.
`EventFacts` merges them into one typed, read-only record: everything a summary is allowed to say
comes from here, which is what makes the narration checkable (`narrator.unsupported_claims`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from schemas.envelope import parse_time
from schemas.events import AnomalyData, Attribution, ClosedBy, EvidenceRange

MODALITIES = ("frames", "audio", "logs")


@dataclass(frozen=True)
class SentimentPoint:
    t: float  # epoch s
    negative: float
    neutral: float
    positive: float
    frustration: float


@dataclass(frozen=True)
class CallFacts:
    """The `call_summaries` row of a call-centre event, when there is one."""

    start: datetime | None = None
    curve: tuple[SentimentPoint, ...] = ()
    peak_time: datetime | None = None
    peak_frustration: float | None = None
    turning_point: datetime | None = None
    overall: str | None = None


@dataclass(frozen=True)
class EventFacts:
    event_id: str
    asset: str
    kind: str  # "anomaly", "escalation" or a predicted fault kind
    severity: str
    status: str
    start: datetime
    end: datetime | None
    peak_score: float
    mean_score: float
    threshold: float
    model_version: str
    windows: int
    attribution: Attribution
    serials: tuple[str, ...] = ()
    log_lines: tuple[str, ...] = ()
    scores: tuple[tuple[float, float], ...] = ()  # (window end epoch s, score)
    evidence: dict[str, list[EvidenceRange]] = field(default_factory=dict)
    call: CallFacts | None = None
    closed_by: ClosedBy | None = None  # AnomalyData.closed_by

    @property
    def stream_stopped(self) -> bool:
        """Closed because the asset stopped sending, not because its scores came down."""
        return self.closed_by == "stream_stopped"

    @property
    def is_call(self) -> bool:
        return self.kind == "escalation"

    @property
    def ratio(self) -> float:
        """How unusual: peak score over the threshold in force (1.0 = just at the threshold)."""
        return self.peak_score / self.threshold if self.threshold > 0 else float("inf")

    @property
    def start_s(self) -> float:
        return self.start.timestamp()

    @property
    def end_s(self) -> float:
        """Event end; an open event ends at its last scored window (or one window after start)."""
        if self.end is not None:
            return self.end.timestamp()
        if self.scores:
            return max(t for t, _ in self.scores)
        return self.start_s + max(1, self.windows)

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)

    def score_at(self, t: float) -> float | None:
        """Score of the window covering epoch `t` (the first window ending at or after it);
        None outside the event, where the monitor reported no score."""
        if t < self.start_s or t > self.end_s + 1e-6:
            return None
        if not self.scores:
            return self.peak_score
        for when, score in self.scores:
            if when >= t:
                return score
        return self.scores[-1][1]


# ── construction ────────────────────────────────────────────────────────────────────────────

def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _scores(raw: Any) -> tuple[tuple[float, float], ...]:
    out: list[tuple[float, float]] = []
    for item in raw or ():
        try:
            when, score = item[0], float(item[1])
            t = when if isinstance(when, (int, float)) else parse_time(str(when).replace("+00:00", "Z"))
            out.append((float(t), score))
        except (TypeError, ValueError, IndexError):
            continue  # a malformed point costs that point, not the summary
    return tuple(sorted(out))


def _evidence(raw: Any) -> dict[str, list[EvidenceRange]]:
    """Both shapes: the event message's {modality: [range, ...]} and a row's {modality: range}."""
    out: dict[str, list[EvidenceRange]] = {}
    for modality, value in (raw or {}).items():
        items = value if isinstance(value, list) else [value]
        ranges = []
        for item in items:
            try:
                ranges.append(item if isinstance(item, EvidenceRange) else EvidenceRange.model_validate(item))
            except Exception:
                continue
        if ranges:
            out[str(modality)] = ranges
    return out


def from_event_data(data: AnomalyData, call: CallFacts | None = None) -> EventFacts:
    return EventFacts(
        event_id=data.event_id, asset=data.asset, kind=data.kind, severity=data.severity, status=data.status,
        start=_aware(data.start_time), end=_aware(data.end_time), peak_score=data.peak_score,
        mean_score=data.mean_score, threshold=data.threshold, model_version=data.model_version,
        windows=data.windows, attribution=data.attribution, serials=tuple(data.serials),
        log_lines=tuple(data.log_lines), scores=_scores(getattr(data, "scores", ())),
        evidence=_evidence(data.evidence), call=call, closed_by=data.closed_by,
    )


def from_row(row: Any, call: CallFacts | None = None) -> EventFacts:
    """From a `schemas.tables.Event` row (the on-demand path: `fusionwatch summarize --event`)."""
    try:
        attribution = Attribution.model_validate(row.attribution or {})
    except Exception:
        attribution = Attribution()
    return EventFacts(
        event_id=row.id, asset=row.asset_id, kind=row.kind, severity=row.severity, status=row.status,
        start=_aware(row.start_time), end=_aware(row.end_time), peak_score=row.peak_score,
        mean_score=row.mean_score, threshold=row.threshold, model_version=row.model_version,
        windows=row.windows or 0, attribution=attribution, serials=tuple(str(s) for s in row.serials or ()),
        log_lines=tuple(str(s) for s in row.log_lines or ()), scores=_scores(row.scores),
        evidence=_evidence(row.evidence), call=call, closed_by=getattr(row, "closed_by", None),
    )


def merge(message: EventFacts, row: EventFacts | None) -> EventFacts:
    """The message is the revision being summarized; the row may carry what the message lacks
    (the per-window score series)."""
    if row is None:
        return message
    from dataclasses import replace

    return replace(message, scores=message.scores or row.scores, evidence=message.evidence or row.evidence,
                   log_lines=message.log_lines or row.log_lines, serials=message.serials or row.serials)


def call_from_row(row: Any) -> CallFacts:
    curve = []
    for item in row.sentiment_curve or ():
        try:
            t = parse_time(str(item[0]).replace("+00:00", "Z")) if not isinstance(item[0], (int, float)) else item[0]
            curve.append(SentimentPoint(float(t), *(float(v) for v in item[1:5])))
        except (TypeError, ValueError, IndexError):
            continue
    return CallFacts(start=_aware(row.start_time), curve=tuple(sorted(curve, key=lambda p: p.t)),
                     peak_time=_aware(row.peak_time), peak_frustration=row.peak_frustration,
                     turning_point=_aware(row.turning_point), overall=row.overall)


def load(session, event_id: str) -> EventFacts | None:
    """Facts of one event from SQL (row + call summary), or None when the event is unknown."""
    from schemas.tables import CallSummary, Event

    row = session.get(Event, event_id)
    if row is None:
        return None
    call_row = session.get(CallSummary, row.asset_id) if row.kind == "escalation" else None
    return from_row(row, call_from_row(call_row) if call_row is not None else None)


def clip_span(facts: EventFacts, before_s: float, after_s: float, max_event_s: float) -> tuple[float, float]:
    """Epoch seconds [t0, t1] the video covers: the event plus context, long events trimmed."""
    end = min(facts.end_s, facts.start_s + max_event_s)
    return facts.start_s - before_s, max(end, facts.start_s) + after_s


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)
