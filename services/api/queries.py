"""Read queries of the review API: events, serial search, statistics, thresholds.

Where it sits: between the SQL tables the monitor and summarizer write and the API routes. Every
value from a request reaches SQL as a bound parameter through SQLAlchemy expressions (never
string-built SQL); LIKE patterns are escaped with `autoescape`. The two JSON-array look-ups (serial
search) and the UTC calendar day differ between SQLite and PostgreSQL, so they are chosen per
dialect here and nowhere else.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, get_args

from pydantic import ValidationError
from sqlalchemy import Select, and_, case, exists, func, or_, select
from sqlalchemy.orm import Session, defer

from schemas import api as shapes
from schemas.events import Attribution, ClosedBy
from schemas.tables import Asset, AssetThreshold, Event, EventReview, Summary, ThresholdChange

log = logging.getLogger(__name__)

# --- filters ------------------------------------------------------------------------------------------


def line_of(asset_id: str, asset_line: str | None) -> str | None:
    """The production line of an asset: the assets.line column, else the prefix before '-S'."""
    if asset_line:
        return asset_line
    head, sep, _ = asset_id.partition("-S")
    return head if sep else None


def _line_clause(line: str):
    return or_(
        Event.asset_id.startswith(f"{line}-S", autoescape=True),
        Event.asset_id.in_(select(Asset.id).where(Asset.line == line)),
    )


def range_clauses(f: shapes.TimeRange) -> list[Any]:
    clauses: list[Any] = []
    if f.asset:
        clauses.append(Event.asset_id == f.asset)
    if f.line:
        clauses.append(_line_clause(f.line))
    if f.until:
        clauses.append(Event.start_time < f.until)
    if f.since:
        # overlap, not containment: an event still open at `since` belongs to the range
        clauses.append(or_(Event.end_time.is_(None), Event.end_time >= f.since))
    return clauses


def event_clauses(f: shapes.EventFilter) -> list[Any]:
    clauses = range_clauses(f)
    if f.severity:
        clauses.append(Event.severity.in_(f.severity))
    if f.status:
        clauses.append(Event.status.in_(f.status))
    if f.kind:
        clauses.append(Event.kind == f.kind)
    if f.verdict == "none":
        clauses.append(Event.verdict.is_(None))
    elif f.verdict == "any":
        clauses.append(Event.verdict.is_not(None))
    elif f.verdict:
        clauses.append(Event.verdict == f.verdict)
    return clauses


_ORDER = {
    "newest": (Event.start_time.desc(), Event.id.desc()),
    "oldest": (Event.start_time.asc(), Event.id.asc()),
    "score": (Event.peak_score.desc(), Event.start_time.desc(), Event.id.desc()),
}


def _rows(stmt: Select) -> Select:
    return stmt.outerjoin(Summary, Summary.event_id == Event.id).outerjoin(Asset, Asset.id == Event.asset_id)


def _base_select() -> Select:
    return _rows(select(Event, Summary, Asset.line))


def _list_select() -> Select:
    # a queue row needs none of the bulky JSON (a timeline holds up to 3600 points): leave it in SQL
    return _base_select().options(defer(Event.scores), defer(Event.log_lines), defer(Event.evidence),
                                  defer(Event.attribution))


# --- shaping ------------------------------------------------------------------------------------------


def media_out(event_id: str, summary: Summary | None) -> shapes.MediaOut:
    if summary is None:
        return shapes.MediaOut()
    base = f"/api/events/{event_id}"
    return shapes.MediaOut(
        status=summary.status,
        clip=f"{base}/clip" if summary.video_path else None,
        subtitles=f"{base}/subtitles" if summary.subtitles_path else None,
        thumbnail=f"{base}/thumbnail" if summary.thumbnail_path else None,
        narration=summary.narration or None,
        duration_s=summary.duration_s,
        missing=list(summary.missing or []),
    )


def event_out(event: Event, summary: Summary | None, asset_line: str | None) -> shapes.EventOut:
    return shapes.EventOut(**_common(event, summary, asset_line))


def _common(event: Event, summary: Summary | None, asset_line: str | None) -> dict[str, Any]:
    verdict = None
    if event.verdict in ("real", "false_alarm"):
        verdict = shapes.VerdictOut(verdict=event.verdict, kind=event.verdict_kind, reviewer=event.reviewer,
                                    note=event.verdict_note, at=event.verdict_at)
    return dict(
        id=event.id, asset=event.asset_id, line=line_of(event.asset_id, asset_line),
        start_time=event.start_time, end_time=event.end_time, status=event.status, kind=event.kind,
        severity=event.severity, peak_score=event.peak_score, mean_score=event.mean_score,
        threshold=event.threshold, model_version=event.model_version, windows=event.windows,
        serials=[str(s) for s in (event.serials or [])], verdict=verdict,
        media=media_out(event.id, summary), updated_at=event.updated_at, learning=bool(event.learning),
        closed_by=event.closed_by if event.closed_by in get_args(ClosedBy) else None,
    )


def parse_scores(raw: list[Any] | None) -> list[shapes.ScorePoint]:
    """[[window_end_iso, score], ...] as written by the monitor; malformed points are skipped, not
    fatal, because one bad point must not hide the rest of the evidence from a reviewer."""
    points = []
    for item in raw or []:
        try:
            t, s = item[0], item[1]
            points.append(shapes.ScorePoint(time=t, score=float(s)))
        except (TypeError, ValueError, IndexError, ValidationError):
            log.warning("skipping malformed score point %r", item)
    return points


def parse_attribution(raw: dict[str, Any] | None, event_id: str) -> Attribution:
    try:
        return Attribution.model_validate(raw or {})
    except ValidationError as e:
        log.warning("event %s has an attribution that does not match the schema: %s", event_id, e)
        return Attribution()


def _log_line(item: Any) -> str:
    if isinstance(item, dict):  # tolerate {"msg": ...} records as well as plain strings
        return str(item.get("msg", item))
    return str(item)


# --- events ---------------------------------------------------------------------------------------------


def list_events(session: Session, f: shapes.EventFilter) -> shapes.EventPage:
    clauses = event_clauses(f)
    total = session.scalar(select(func.count()).select_from(Event).where(*clauses)) or 0
    stmt = _list_select().where(*clauses).order_by(*_ORDER[f.order]).limit(f.limit).offset(f.offset)
    items = [event_out(e, s, line) for e, s, line in session.execute(stmt)]
    next_offset = f.offset + len(items) if f.offset + len(items) < total else None
    return shapes.EventPage(items=items, total=total, limit=f.limit, offset=f.offset, next_offset=next_offset)


def event_detail(session: Session, event_id: str) -> shapes.EventDetail | None:
    row = session.execute(_base_select().where(Event.id == event_id)).first()
    if row is None:
        return None
    event, summary, line = row
    reviews = session.scalars(
        select(EventReview).where(EventReview.event_id == event_id).order_by(EventReview.at, EventReview.id)
    ).all()
    return shapes.EventDetail(
        **_common(event, summary, line),
        attribution=parse_attribution(event.attribution, event.id),
        scores=parse_scores(event.scores),
        log_lines=[_log_line(x) for x in (event.log_lines or [])],
        evidence=dict(event.evidence or {}),
        reviews=[shapes.ReviewOut(action=r.action, reviewer=r.reviewer, verdict=r.verdict, kind=r.verdict_kind,
                                  note=r.note, at=r.at) for r in reviews],
        created_at=event.created_at,
    )


def summary_of(session: Session, event_id: str) -> Summary | None:
    return session.get(Summary, event_id)


def event_exists(session: Session, event_id: str) -> bool:
    return session.scalar(select(func.count()).select_from(Event).where(Event.id == event_id)) == 1


def _serial_elements(session: Session):
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return func.json_each(Event.serials).table_valued("value")
    if dialect == "postgresql":
        return func.json_array_elements_text(Event.serials).table_valued("value")
    raise NotImplementedError(f"serial search is implemented for SQLite and PostgreSQL, not {dialect}")


def events_by_serial(session: Session, q: shapes.SerialQuery) -> list[shapes.EventOut]:
    """Events whose `serials` JSON array holds the serial (or a serial starting with it)."""
    elements = _serial_elements(session)
    value = elements.c.value
    match = value.startswith(q.serial, autoescape=True) if q.prefix else value == q.serial
    stmt = (_list_select().where(exists(select(1).select_from(elements).where(match)))
            .order_by(*_ORDER["newest"]).limit(q.limit))
    return [event_out(e, s, line) for e, s, line in session.execute(stmt)]


def changed_since(session: Session, after: datetime, limit: int = 200) -> list[Event]:
    """Events created or updated at or after `after`, oldest change first (live updates)."""
    stmt = (select(Event).where(Event.updated_at >= after)
            .order_by(Event.updated_at, Event.id).limit(limit))
    return list(session.scalars(stmt))


# --- statistics ----------------------------------------------------------------------------------------


def _utc_day(session: Session):
    if session.get_bind().dialect.name == "postgresql":
        # timestamptz -> the UTC wall clock, whatever the session time zone is
        return func.to_char(func.timezone("UTC", Event.start_time), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", Event.start_time)  # SQLite stores naive UTC text


def _rate(real: int, false: int) -> float | None:
    return false / (real + false) if real + false else None


def stats(session: Session, f: shapes.TimeRange) -> shapes.StatsOut:
    clauses = range_clauses(f)
    real = func.coalesce(func.sum(case((Event.verdict == "real", 1), else_=0)), 0)
    false = func.coalesce(func.sum(case((Event.verdict == "false_alarm", 1), else_=0)), 0)
    unlabelled = func.coalesce(func.sum(case((Event.verdict.is_(None), 1), else_=0)), 0)
    day = _utc_day(session).label("day")

    per_day = [
        shapes.AssetDayCount(asset=a, day=str(d), events=n, real=r, false_alarm=fa, unlabelled=u)
        for a, d, n, r, fa, u in session.execute(
            select(Event.asset_id, day, func.count(), real, false, unlabelled)
            .where(*clauses).group_by(Event.asset_id, day).order_by(Event.asset_id, day))
    ]
    per_asset = [
        shapes.AssetStats(asset=a, events=n, real=r, false_alarm=fa, unlabelled=u, false_alarm_rate=_rate(r, fa))
        for a, n, r, fa, u in session.execute(
            select(Event.asset_id, func.count(), real, false, unlabelled)
            .where(*clauses).group_by(Event.asset_id).order_by(Event.asset_id))
    ]
    by_severity = {s: n for s, n in session.execute(
        select(Event.severity, func.count()).where(*clauses).group_by(Event.severity))}
    tot_r = sum(a.real for a in per_asset)
    tot_f = sum(a.false_alarm for a in per_asset)
    return shapes.StatsOut(
        since=f.since, until=f.until, events=sum(a.events for a in per_asset), real=tot_r, false_alarm=tot_f,
        unlabelled=sum(a.unlabelled for a in per_asset), false_alarm_rate=_rate(tot_r, tot_f),
        by_severity=by_severity, per_asset=per_asset, per_asset_day=per_day,
    )


# --- thresholds -----------------------------------------------------------------------------------------


def thresholds(session: Session) -> list[shapes.ThresholdOut]:
    """The threshold in force per asset: an override row, else the one on the asset's latest event
    (the checkpoint's calibration the monitor applied)."""
    out: dict[str, shapes.ThresholdOut] = {}
    latest = (select(Event.asset_id, func.max(Event.start_time).label("t")).group_by(Event.asset_id).subquery())
    for asset, threshold, at in session.execute(
        select(Event.asset_id, Event.threshold, Event.start_time)
        .join(latest, and_(latest.c.asset_id == Event.asset_id, latest.c.t == Event.start_time))
    ):
        out[asset] = shapes.ThresholdOut(asset=asset, threshold=threshold, source="model", updated_at=at)
    for row in session.scalars(select(AssetThreshold)):
        out[row.asset_id] = shapes.ThresholdOut(asset=row.asset_id, threshold=row.threshold, source="override",
                                                updated_at=row.updated_at)
    return [out[k] for k in sorted(out)]


def change_out(c: ThresholdChange) -> shapes.ThresholdChangeOut:
    return shapes.ThresholdChangeOut(id=c.id, asset=c.asset_id, old_threshold=c.old_threshold,
                                     new_threshold=c.new_threshold, actor=c.actor, reason=c.reason, at=c.at)


def threshold_changes(session: Session, asset: str | None, limit: int) -> list[shapes.ThresholdChangeOut]:
    stmt = select(ThresholdChange).order_by(ThresholdChange.at.desc(), ThresholdChange.id.desc()).limit(limit)
    if asset:
        stmt = stmt.where(ThresholdChange.asset_id == asset)
    return [change_out(c) for c in session.scalars(stmt)]
