"""Request and response shapes of the review API (`fusionwatch api`, services/api/).

Where it sits: at the end of the data path. The monitor writes events into SQL, the summarizer adds
narrated clips; reviewers read both through these shapes and write verdicts back, which feed
recalibration (services/api/recalibration.py) and the supervised heads of the next training run.

Every query parameter and body is validated here, before any SQL is built, so a bad filter is a 422
with a message that says which parameter and why. Identifiers follow the wire contract (asset ids)
and the event id scheme (`schemas.events.event_id`, a UUID).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from schemas.events import Attribution, ClosedBy

ASSET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # the wire contract's key format
EVENT_ID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
KIND_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$"  # events.kind is String(32)
SERIAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/#-]{0,63}$"
# printable text without control characters: names end up in logs and audit rows
REVIEWER_PATTERN = r"^[^\x00-\x1f\x7f]{1,64}$"

Severity = Literal["low", "medium", "high", "critical"]
Status = Literal["open", "closed", "acknowledged", "resolved"]
Verdict = Literal["real", "false_alarm"]
# "none" = not yet labelled (the review queue), "any" = labelled either way
VerdictFilter = Literal["real", "false_alarm", "none", "any"]
Order = Literal["newest", "oldest", "score"]


def _as_utc(value: datetime | None) -> datetime | None:
    """Naive times in a query are read as UTC (documented in docs/review.md), aware ones converted."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UtcTime = Annotated[datetime, AfterValidator(_as_utc)]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


# --- query parameters -------------------------------------------------------------------------------


class TimeRange(BaseModel):
    """Events that overlap [since, until): an event still open at `since` is included."""

    model_config = ConfigDict(extra="forbid")

    since: UtcTime | None = Field(None, description="RFC 3339 time; naive times are UTC")
    until: UtcTime | None = Field(None, description="RFC 3339 time (exclusive); naive times are UTC")
    asset: str | None = Field(None, pattern=ASSET_PATTERN, description="exact asset id, e.g. L1-S2")
    line: str | None = Field(None, pattern=ASSET_PATTERN,
                             description="production line: the asset prefix before '-S' (L1 for L1-S2) or assets.line")

    @model_validator(mode="after")
    def _ordered(self) -> "TimeRange":
        if self.since and self.until and self.since >= self.until:
            raise ValueError("'since' must be earlier than 'until'")
        return self


class EventFilter(TimeRange):
    """Query parameters of GET /api/events. Unknown parameters are refused, so a typo is not
    silently ignored and the reviewer does not act on a list filtered differently than they think."""

    severity: list[Severity] | None = Field(None, description="one or more of low, medium, high, critical")
    status: list[Status] | None = Field(None, description="one or more of open, closed, acknowledged, resolved")
    kind: str | None = Field(None, pattern=KIND_PATTERN, description="event kind, e.g. anomaly or bearing_fault")
    verdict: VerdictFilter | None = Field(None, description="real, false_alarm, none (unlabelled) or any (labelled)")
    order: Order = Field("newest", description="newest or oldest start first, or highest peak score first")
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=1_000_000)


class SerialQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    serial: str = Field(..., pattern=SERIAL_PATTERN, description="part serial as logged, e.g. SN-0042")
    prefix: bool = Field(False, description="match serials that start with the given text")
    limit: int = Field(50, ge=1, le=500)


# --- request bodies -----------------------------------------------------------------------------------


class ReviewIn(BaseModel):
    """Who does it and why (acknowledge, resolve)."""

    model_config = ConfigDict(extra="forbid")

    reviewer: str = Field(..., pattern=REVIEWER_PATTERN, description="name or badge id of the reviewer")
    note: str | None = Field(None, max_length=2000)


class VerdictIn(ReviewIn):
    """A reviewer's label: the training signal for the supervised heads and for recalibration."""

    verdict: Verdict
    kind: str | None = Field(None, pattern=KIND_PATTERN,
                             description="what it really was (e.g. surface_defect); defaults to the event's kind")


class ThresholdIn(BaseModel):
    """A manual per-asset threshold (an operator's override; recorded in the change history)."""

    model_config = ConfigDict(extra="forbid")

    threshold: Annotated[float, AfterValidator(_finite)] = Field(..., gt=0)
    actor: str = Field(..., pattern=REVIEWER_PATTERN)
    reason: str = Field(..., min_length=3, max_length=2000)


class RecalibrateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = Field(False, description="compute the changes without writing them")


# --- responses --------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    status: int
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorOut(BaseModel):
    """Every error the API returns: `{"error": {"status": 404, "message": "..."}}`."""

    error: ErrorDetail


class VerdictOut(BaseModel):
    verdict: Verdict
    kind: str | None
    reviewer: str | None
    note: str | None
    at: datetime | None


class MediaOut(BaseModel):
    """Links to the narrated summary; null where the summarizer has not (yet) produced the file."""

    status: str | None = Field(None, description="ready | partial | failed, or null when no summary exists yet")
    clip: str | None = None
    subtitles: str | None = None
    thumbnail: str | None = None
    narration: str | None = None
    duration_s: float | None = None
    missing: list[Any] = Field(default_factory=list)


class EventOut(BaseModel):
    """One row of the review queue."""

    id: str
    asset: str
    line: str | None
    start_time: datetime
    end_time: datetime | None
    status: str
    kind: str
    severity: str
    peak_score: float
    mean_score: float
    threshold: float
    model_version: str
    windows: int
    serials: list[str]
    verdict: VerdictOut | None
    media: MediaOut
    updated_at: datetime
    learning: bool = Field(False, description="opened while the asset's baseline was being learned: `threshold` "
                           "is then the guard threshold (models/adaptation.py)")
    closed_by: ClosedBy | None = Field(
        None, description="why a closed event closed: its scores fell under the threshold, or its asset stopped "
        "sending (monitor.stream_stopped_s) — then nothing says the fault went away")


class ScorePoint(BaseModel):
    time: datetime = Field(..., description="window end")
    score: float


class ReviewOut(BaseModel):
    action: str
    reviewer: str
    verdict: str | None
    kind: str | None
    note: str | None
    at: datetime


class EventDetail(EventOut):
    attribution: Attribution
    scores: list[ScorePoint]
    log_lines: list[str]
    evidence: dict[str, Any]
    reviews: list[ReviewOut]
    created_at: datetime


class EventPage(BaseModel):
    items: list[EventOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class AssetDayCount(BaseModel):
    asset: str
    day: str = Field(..., description="UTC calendar day, YYYY-MM-DD")
    events: int
    real: int
    false_alarm: int
    unlabelled: int


class AssetStats(BaseModel):
    asset: str
    events: int
    real: int
    false_alarm: int
    unlabelled: int
    false_alarm_rate: float | None = Field(..., description="false_alarm / (real + false_alarm); null without verdicts")


class StatsOut(BaseModel):
    since: datetime | None
    until: datetime | None
    events: int
    real: int
    false_alarm: int
    unlabelled: int
    false_alarm_rate: float | None
    by_severity: dict[str, int]
    per_asset: list[AssetStats]
    per_asset_day: list[AssetDayCount]


class ThresholdOut(BaseModel):
    asset: str
    threshold: float
    source: Literal["override", "model"] = Field(
        ..., description="override: an asset_thresholds row is in force; model: the checkpoint's calibration "
        "as recorded on the asset's latest event")
    updated_at: datetime | None


class ThresholdChangeOut(BaseModel):
    id: int | None
    asset: str
    old_threshold: float | None
    new_threshold: float
    actor: str
    reason: str
    at: datetime | None


class RecalibrationOut(BaseModel):
    dry_run: bool
    changes: list[ThresholdChangeOut]


class LiveEvent(BaseModel):
    """One Server-Sent Event on /api/events/stream: an event row was created or changed."""

    id: str
    asset: str
    status: str
    severity: str
    kind: str
    verdict: str | None
    start_time: datetime
    updated_at: datetime


# ── baselines: each asset's own normal (models/adaptation.py) ───────────────────────────────
class NewNormalIn(BaseModel):
    """An operator's "new normal" for an asset: after maintenance or a deliberate change the asset
    learns its baseline again from its next windows (recorded with actor and reason)."""

    model_config = ConfigDict(extra="forbid")

    actor: str = Field(..., pattern=REVIEWER_PATTERN)
    reason: str = Field(..., min_length=3, max_length=2000)


class BaselineResetOut(BaseModel):
    id: int
    asset: str
    requested_at: datetime
    requested_by: str
    reason: str
    applied_at: datetime | None = Field(None, description="when a monitor restarted the asset's baseline; "
                                        "None: waiting for the monitor that owns the asset (within ~10 s)")
    applied_by: str | None = None


class BaselineOut(BaseModel):
    asset: str
    phase: Literal["learning", "watching", "pending", "unknown"] = Field(
        ..., description="learning: the baseline is being learned from the asset's own windows (only the guard "
        "threshold opens an event); watching: judged against it; pending: a new normal waits for its monitor; "
        "unknown: no monitor has committed state for the asset yet")
    windows: int = Field(0, description="windows of the asset scored since its baseline (re)started")
    updated_at: datetime | None = None
    last_reset: BaselineResetOut | None = None
