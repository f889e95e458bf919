"""Read queries of the supervisor's view (call-centre profile): calls live and recent, one call's
story (transcript by speaker with per-turn sentiment, the frustration curve, escalations and their
clips) and full-text search over transcripts.

Where it sits: reads what the monitor writes (`call_summaries`, `call_turns`, escalation `events`)
and the summarizer's clips (`summaries`). Full-text search is the one thing that differs by
database — FTS5 on SQLite, tsvector + GIN on PostgreSQL (migration 0005) — and `search_turns`
chooses by dialect here and nowhere else.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, case, func, literal_column, select, text
from sqlalchemy.orm import Session

from schemas.envelope import parse_time
from schemas.tables import CallSummary, CallTurn, Event, Summary
from services.api import transcript_search
from services.api.queries import media_out
from services.api.transcript_search import SearchSyntaxError
from streamlogic.call_summary import CLASSES

log = logging.getLogger(__name__)
CallState = Literal["live", "ended", "all"]


# ── shapes ────────────────────────────────────────────────────────────────────────────────────

class CurvePoint(BaseModel):
    time: datetime  # the window's end
    negative: float
    neutral: float
    positive: float
    frustration: float
    # the window heard the customer (an escalation counts only those); None: mono call or older row
    customer_heard: bool | None = None


class CallOut(BaseModel):
    call_id: str
    start_time: datetime
    end_time: datetime | None
    live: bool = Field(description="a window of the call was scored within live_within_s of now")
    overall: str | None = Field(None, description="the customer's sentiment as the call ended (or stands now)")
    peak_frustration: float | None
    peak_time: datetime | None
    turning_point: datetime | None
    now: CurvePoint | None = Field(None, description="the latest scored window")
    turns: int
    escalations: int
    escalation_open: bool


class CallPage(BaseModel):
    items: list[CallOut]
    total: int
    limit: int
    offset: int


class TurnOut(BaseModel):
    id: int
    at: datetime
    speaker: str | None
    text: str
    sentiment: str | None = Field(None, description="the customer's sentiment in the windows that held the line "
                                                    "(the most likely class); null before a window held it")
    negative: float
    neutral: float
    positive: float
    frustration: float = Field(description="the highest frustration of those windows")
    windows: int


class EscalationOut(BaseModel):
    id: str
    start_time: datetime
    end_time: datetime | None
    status: str
    severity: str
    peak_frustration: float
    clip: str | None = None
    subtitles: str | None = None
    thumbnail: str | None = None
    narration: str | None = None
    media_status: str | None = None


class CallDetail(CallOut):
    curve: list[CurvePoint]
    transcript: list[TurnOut]
    escalation_list: list[EscalationOut]
    escalation_threshold: float
    escalation_close_threshold: float


class TurnHit(TurnOut):
    call_id: str


class SearchOut(BaseModel):
    query: str
    words: list[str] = Field(description="the words searched for, lower-case (for highlighting)")
    items: list[TurnHit]


# ── calls ──────────────────────────────────────────────────────────────────────────────────────

def _curve(raw: list[Any] | None, call_id: str) -> list[CurvePoint]:
    """[[t_iso, neg, neu, pos, frustration, customer heard], ...] as the monitor writes it (rows
    written before "heard" have five items); a malformed point is skipped (and logged) so that it
    cannot hide the rest of the call."""
    out = []
    for item in raw or []:
        try:
            out.append(CurvePoint(time=datetime.fromtimestamp(parse_time(item[0]), timezone.utc), negative=item[1],
                                  neutral=item[2], positive=item[3], frustration=item[4],
                                  customer_heard=bool(item[5]) if len(item) > 5 else None))
        except (TypeError, ValueError, IndexError):
            log.warning("call %s: skipping malformed curve point %r", call_id, item)
    return out


def _event_counts():
    return (select(Event.asset_id.label("call_id"), func.count().label("n"),
                   func.sum(case((Event.status == "open", 1), else_=0)).label("open"))
            .group_by(Event.asset_id).subquery())


def _turn_counts():
    return select(CallTurn.call_id, func.count().label("n")).group_by(CallTurn.call_id).subquery()


def _call_out(row: CallSummary, turns: int, events: int, open_events: int, live_after: datetime) -> dict[str, Any]:
    curve = _curve(row.sentiment_curve, row.call_id)
    return dict(call_id=row.call_id, start_time=row.start_time, end_time=row.end_time,
                live=row.end_time is not None and row.end_time >= live_after, overall=row.overall,
                peak_frustration=row.peak_frustration, peak_time=row.peak_time, turning_point=row.turning_point,
                now=curve[-1] if curve else None, turns=turns or 0, escalations=events or 0,
                escalation_open=bool(open_events))


def list_calls(session: Session, state: CallState, live_within_s: float, limit: int, offset: int) -> CallPage:
    """Calls, the most recently active first; `live`: scored within `live_within_s` of now."""
    live_after = datetime.now(timezone.utc) - timedelta(seconds=live_within_s)
    clauses = []
    if state == "live":
        clauses.append(CallSummary.end_time >= live_after)
    elif state == "ended":
        clauses.append(CallSummary.end_time < live_after)
    total = session.scalar(select(func.count()).select_from(CallSummary).where(*clauses)) or 0
    ev, tu = _event_counts(), _turn_counts()
    stmt = (select(CallSummary, tu.c.n, ev.c.n, ev.c.open)
            .outerjoin(tu, tu.c.call_id == CallSummary.call_id).outerjoin(ev, ev.c.call_id == CallSummary.call_id)
            .where(*clauses).order_by(CallSummary.end_time.desc().nulls_last(), CallSummary.call_id).limit(limit).offset(offset))
    items = [CallOut(**_call_out(row, n_turns, n_events, n_open, live_after))
             for row, n_turns, n_events, n_open in session.execute(stmt)]
    return CallPage(items=items, total=total, limit=limit, offset=offset)


def _turn_fields(t: CallTurn) -> dict[str, Any]:
    probs = (t.negative, t.neutral, t.positive)
    sentiment = CLASSES[max(range(3), key=lambda i: probs[i])] if t.windows else None
    return dict(id=t.id, at=t.at, speaker=t.speaker, text=t.text, sentiment=sentiment, negative=t.negative,
                neutral=t.neutral, positive=t.positive, frustration=t.frustration, windows=t.windows)


def call_detail(session: Session, call_id: str, live_within_s: float, thresholds: tuple[float, float]) -> CallDetail | None:
    row = session.get(CallSummary, call_id)
    if row is None:
        return None
    turns = list(session.scalars(select(CallTurn).where(CallTurn.call_id == call_id)
                                 .order_by(CallTurn.at, CallTurn.id)))
    events = session.execute(select(Event, Summary).outerjoin(Summary, Summary.event_id == Event.id)
                             .where(Event.asset_id == call_id).order_by(Event.start_time, Event.id)).all()
    escalations = []
    for e, summary in events:
        media = media_out(e.id, summary)
        escalations.append(EscalationOut(id=e.id, start_time=e.start_time, end_time=e.end_time, status=e.status,
                                         severity=e.severity, peak_frustration=e.peak_score, clip=media.clip,
                                         subtitles=media.subtitles, thumbnail=media.thumbnail,
                                         narration=media.narration, media_status=media.status))
    live_after = datetime.now(timezone.utc) - timedelta(seconds=live_within_s)
    base = _call_out(row, len(turns), len(events), sum(e.status == "open" for e, _ in events), live_after)
    return CallDetail(**base, curve=_curve(row.sentiment_curve, call_id),
                      transcript=[TurnOut(**_turn_fields(t)) for t in turns], escalation_list=escalations,
                      escalation_threshold=thresholds[0], escalation_close_threshold=thresholds[1])


# ── full-text search ─────────────────────────────────────────────────────────────────────────

def search_turns(session: Session, query: str, call_id: str | None, limit: int) -> SearchOut:
    """Transcript lines matching `query` (services/api/transcript_search.py), best match first.
    Raises SearchSyntaxError for a query that searches for nothing."""
    parsed = transcript_search.parse(query)
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        ids = _sqlite_matches(session, transcript_search.fts5_query(parsed), call_id, limit)
    elif dialect == "postgresql":
        ids = _postgres_matches(session, transcript_search.tsquery(parsed), call_id, limit)
    else:
        raise NotImplementedError(f"transcript search is implemented for SQLite and PostgreSQL, not {dialect}")
    rows = {t.id: t for t in session.scalars(select(CallTurn).where(CallTurn.id.in_(ids)))} if ids else {}
    items = [TurnHit(call_id=rows[i].call_id, **_turn_fields(rows[i])) for i in ids if i in rows]
    return SearchOut(query=query, words=transcript_search.words_of(parsed), items=items)


def _sqlite_matches(session: Session, expr: str, call_id: str | None, limit: int) -> list[int]:
    # bm25: lower is better; ties (the same words) go to the most recent line
    # one fixed statement: a NULL :call_id matches every call
    stmt = text("SELECT t.id FROM call_turns_fts JOIN call_turns AS t ON t.id = call_turns_fts.rowid "
                "WHERE call_turns_fts MATCH :expr AND (:call_id IS NULL OR t.call_id = :call_id) "
                "ORDER BY bm25(call_turns_fts), t.at DESC, t.id DESC LIMIT :limit")
    params: dict[str, Any] = {"expr": expr, "limit": limit, "call_id": call_id}
    return [int(i) for i, in session.execute(stmt, params)]


def _postgres_matches(session: Session, expr: str, call_id: str | None, limit: int) -> list[int]:
    tsv: ColumnElement[Any] = literal_column("call_turns.tsv")
    tsq = func.to_tsquery("english", expr)
    stmt = (select(CallTurn.id).where(tsv.op("@@")(tsq))
            .order_by(func.ts_rank(tsv, tsq).desc(), CallTurn.at.desc(), CallTurn.id.desc()).limit(limit))
    if call_id:
        stmt = stmt.where(CallTurn.call_id == call_id)
    return list(session.scalars(stmt))


__all__ = ["CallDetail", "CallPage", "SearchOut", "SearchSyntaxError", "call_detail", "list_calls", "search_turns"]
