"""The SQL tables (SQLAlchemy 2.x). SQLite is the embedded default, PostgreSQL the production one;
Alembic migrations in `schemas/migrations` create and evolve them (`fusionwatch db upgrade`).

Times are stored as timezone-aware UTC and always come back aware, on both databases.
Rows written by the monitor have natural unique keys so that a replay changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UtcDateTime(TypeDecorator):
    """DateTime that refuses naive values and returns aware UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use an aware datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Asset(Base):
    """A monitored thing: a station on a line, or a call (call-centre profile)."""

    __tablename__ = "assets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="station")  # station | call
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    path: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)


class ConsumerOffset(Base):
    """Next offset to read, written in the same transaction as the results it produced
    ("storing offsets outside Kafka"); the consumer seeks here on assignment."""

    __tablename__ = "consumer_offsets"
    group_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
    # highest offset already processed when this row was written: on replay, records between
    # next_offset and here that fall only into finished windows are skipped, not re-counted as late
    processed_through: Mapped[int] = mapped_column(BigInteger, default=-1)
    # the topic id (KIP-516) of the log these offsets count records of: a topic deleted and
    # re-created (an embedded broker restarted empty) starts a new log, and its offsets start at 0
    log_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class MonitorState(Base):
    """Per-asset stream state committed with the offsets: the last window emitted and the event
    lifecycle (hysteresis counters, the open event), so a restarted or rebalanced monitor
    continues exactly where the last commit left off."""

    __tablename__ = "monitor_state"
    group_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, index=True)
    last_window_start: Mapped[float] = mapped_column(Float)  # epoch s of the last emitted window
    lifecycle: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Event(Base):
    """One anomaly (or call escalation), from open to close, with its evidence offsets."""

    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid5 of the natural key
    asset_id: Mapped[str] = mapped_column(String(64), index=True)
    start_time: Mapped[datetime]
    end_time: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="open")  # open|closed|acknowledged|resolved
    kind: Mapped[str] = mapped_column(String(32), default="anomaly")
    severity: Mapped[str] = mapped_column(String(16), default="low")  # low|medium|high|critical
    peak_score: Mapped[float] = mapped_column(Float)
    mean_score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64))
    windows: Mapped[int] = mapped_column(Integer, default=0)
    attribution: Mapped[dict[str, Any]] = mapped_column(default=dict)  # modality shares, frames, band, lines
    scores: Mapped[list[Any]] = mapped_column(default=list)  # [[window_end_iso, score], ...]
    serials: Mapped[list[Any]] = mapped_column(default=list)
    log_lines: Mapped[list[Any]] = mapped_column(default=list)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {modality: {topic, partition, first, last}}
    # opened by the guard threshold while the asset's baseline was being learned (models/adaptation.py)
    learning: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    closed_by: Mapped[str | None] = mapped_column(String(16))  # scores | stream_stopped (AnomalyData.closed_by)
    verdict: Mapped[str | None] = mapped_column(String(16))  # real | false_alarm
    verdict_kind: Mapped[str | None] = mapped_column(String(32))
    reviewer: Mapped[str | None] = mapped_column(String(64))
    verdict_note: Mapped[str | None] = mapped_column(Text)
    verdict_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("asset_id", "start_time", name="uq_events_asset_start"),
        Index("ix_events_start", "start_time"),
        Index("ix_events_status_severity", "status", "severity"),
    )


class Outbox(Base):
    """fw.events publications written in the event's transaction, relayed at least once."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(16))  # opened | updated | closed
    payload: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("event_id", "revision", name="uq_outbox_event_revision"),)


class Summary(Base):
    """The narrated video of one event (files live under the media root, names chosen by us)."""

    __tablename__ = "summaries"
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # ready | partial | failed
    video_path: Mapped[str | None] = mapped_column(Text)
    subtitles_path: Mapped[str | None] = mapped_column(Text)
    thumbnail_path: Mapped[str | None] = mapped_column(Text)
    narration: Mapped[str] = mapped_column(Text, default="")
    duration_s: Mapped[float | None] = mapped_column(Float)
    missing: Mapped[list[Any]] = mapped_column(default=list)  # what evidence could not be read
    render_s: Mapped[float | None] = mapped_column(Float)
    rendered_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventReview(Base):
    """Audit trail of review actions (acknowledge, resolve, label) on an event: who, when, what, why.
    The event row holds the current verdict; this keeps every earlier one too."""

    __tablename__ = "event_reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(16))  # acknowledge | resolve | label
    reviewer: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str | None] = mapped_column(String(16))
    verdict_kind: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class AssetThreshold(Base):
    """Per-asset threshold in force when it differs from the checkpoint's calibration."""

    __tablename__ = "asset_thresholds"
    asset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    threshold: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ThresholdChange(Base):
    """Audit trail: who or what changed a threshold, and why."""

    __tablename__ = "threshold_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[str] = mapped_column(String(64), index=True)
    old_threshold: Mapped[float | None] = mapped_column(Float)
    new_threshold: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class BaselineReset(Base):
    """An operator's "new normal" for an asset (after maintenance, a new camera position, a replaced
    pump): who asked, when and why, and when a monitor applied it — the asset then learns its
    baseline again from its next windows (models/adaptation.py). A monitor marks it applied in the
    same transaction that commits the asset's restarted baseline."""

    __tablename__ = "baseline_resets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[str] = mapped_column(String(64), index=True)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    requested_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    applied_at: Mapped[datetime | None]
    applied_by: Mapped[str | None] = mapped_column(String(128))  # the monitor's consumer group


class Digest(Base):
    """One shift digest; the unique shift start makes a second scheduler's run a no-op."""

    __tablename__ = "digests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    shift_start: Mapped[datetime] = mapped_column(unique=True)
    shift_end: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="running")
    video_path: Mapped[str | None] = mapped_column(Text)
    report_path: Mapped[str | None] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobRun(Base):
    """One firing of a scheduled job, claimed by the scheduler process that runs it. The primary
    key (job, scheduled_for) is the lock: when two schedulers fire the same job, the second
    insert fails and that scheduler skips the run."""

    __tablename__ = "job_runs"
    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    scheduled_for: Mapped[datetime] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))  # host:pid/scheduler name that claimed it
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(16), default="running")  # running | ok | failed
    detail: Mapped[str | None] = mapped_column(Text)


class CallSummary(Base):
    """Call-centre profile: the sentiment story of one call."""

    __tablename__ = "call_summaries"
    call_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    start_time: Mapped[datetime]
    end_time: Mapped[datetime | None]
    sentiment_curve: Mapped[list[Any]] = mapped_column(default=list)  # [[t_iso, neg, neu, pos, frustration, customer heard]]
    peak_time: Mapped[datetime | None]
    peak_frustration: Mapped[float | None] = mapped_column(Float)
    turning_point: Mapped[datetime | None]
    overall: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CallTurn(Base):
    """Call-centre profile: one transcript line of a call as the monitor heard it, with what the
    model made of the customer in the windows that held the line (mean sentiment, peak frustration).

    Written by the monitor with the call's summary, in the same transaction as the offsets. Full-text
    search over `text` lives outside this mapping, per database (migration 0005): an FTS5 table
    `call_turns_fts` kept by triggers on SQLite, a generated `tsv` tsvector column with a GIN index
    on PostgreSQL; services/api/call_queries.py queries whichever the database has."""

    __tablename__ = "call_turns"
    __table_args__ = (Index("ix_call_turns_call_at", "call_id", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]  # the line's ce_time: the turn's start
    speaker: Mapped[str | None] = mapped_column(String(128))  # agent | customer, as the line said; None: not said
    text: Mapped[str] = mapped_column(Text)
    windows: Mapped[int] = mapped_column(Integer, default=0)  # scored windows that held the line
    negative: Mapped[float] = mapped_column(Float, default=0.0)  # mean over those windows
    neutral: Mapped[float] = mapped_column(Float, default=0.0)
    positive: Mapped[float] = mapped_column(Float, default=0.0)
    frustration: Mapped[float] = mapped_column(Float, default=0.0)  # the highest of those windows


class NotifyDelivery(Base):
    """The notifier's ledger: one row per (event revision, channel) that was delivered or given up
    on. Written right after the receiver acknowledged, before the Kafka offset is committed, so a
    replayed fw.events record finds its row and is not sent again (services/notify/ledger.py)."""

    __tablename__ = "notify_deliveries"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    transition: Mapped[str] = mapped_column(String(16))  # opened | escalated | closed | test
    outcome: Mapped[str] = mapped_column(String(16))  # delivered | dead_lettered
    attempts: Mapped[int] = mapped_column(Integer)
    finished_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class NotifyDeadLetter(Base):
    """A notification the notifier gave up on after its attempt or age limit, kept whole (the
    payload as it would have been sent) so an operator can see what was missed and replay it."""

    __tablename__ = "notify_dead_letters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(64))
    transition: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer)
    first_attempt_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime]
    last_error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class NotifyEventState(Base):
    """The highest severity the notifier has seen per event: fw.events says only "updated", and an
    update is an escalation when its severity is above this one."""

    __tablename__ = "notify_event_state"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)
