"""Event routes: the review queue, one event's evidence, live updates, and the reviewer's actions
(acknowledge, resolve, label). Thin: validation lives in schemas/api.py, SQL in queries.py and
writes.py."""

from __future__ import annotations

from typing import Annotated, AsyncIterator

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from schemas import api as shapes
from services.api import live, queries, writes
from services.api.context import ApiError, can_read, can_write, ctx
from services.db import session_scope

router = APIRouter(prefix="/api", tags=["events"])
EventId = Annotated[str, Path(pattern=shapes.EVENT_ID_PATTERN, description="event id (a UUID)")]


def _not_found(event_id: str) -> ApiError:
    return ApiError(404, f"no event with id {event_id}")


@router.get("/events", response_model=shapes.EventPage, dependencies=[Depends(can_read)],
            summary="List and filter events (the review queue)")
def list_events(request: Request, filters: Annotated[shapes.EventFilter, Query()]) -> shapes.EventPage:
    with ctx(request).sessions() as session:
        return queries.list_events(session, filters)


@router.get("/events/stream", response_class=EventSourceResponse, dependencies=[Depends(can_read)],
            summary="Server-Sent Events: one message per created or changed event")
async def stream_events(
    request: Request,
    max_s: Annotated[float, Query(gt=0, le=3600, description="end the stream after this many seconds; "
                                  "EventSource reconnects by itself and resumes from Last-Event-ID")] = 300.0,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> AsyncIterator[ServerSentEvent]:
    c = ctx(request)
    async for message in live.changes(c.sessions, after=live.parse_cursor(last_event_id), poll_s=c.live_poll_s,
                                      max_s=max_s):
        yield message


@router.get("/events/{event_id}", response_model=shapes.EventDetail, dependencies=[Depends(can_read)],
            summary="One event with its score timeline, attribution, log lines, serials and evidence")
def get_event(request: Request, event_id: EventId) -> shapes.EventDetail:
    with ctx(request).sessions() as session:
        detail = queries.event_detail(session, event_id.lower())
    if detail is None:
        raise _not_found(event_id)
    return detail


def _reviewed(request: Request, event_id: str) -> shapes.EventDetail:
    with ctx(request).sessions() as session:
        detail = queries.event_detail(session, event_id)
    assert detail is not None  # just written in a committed transaction
    return detail


@router.post("/events/{event_id}/acknowledge", response_model=shapes.EventDetail, dependencies=[Depends(can_write)],
             summary="Acknowledge an event (someone is looking at it)")
def acknowledge(request: Request, event_id: EventId, body: shapes.ReviewIn) -> shapes.EventDetail:
    return _status(request, event_id.lower(), "acknowledged", body)


@router.post("/events/{event_id}/resolve", response_model=shapes.EventDetail, dependencies=[Depends(can_write)],
             summary="Resolve an event (dealt with)")
def resolve(request: Request, event_id: EventId, body: shapes.ReviewIn) -> shapes.EventDetail:
    return _status(request, event_id.lower(), "resolved", body)


def _status(request: Request, event_id: str, status: str, body: shapes.ReviewIn) -> shapes.EventDetail:
    with session_scope(ctx(request).sessions) as session:
        result = writes.set_status(session, event_id, status, body)
        if result is None:
            raise _not_found(event_id)
        if isinstance(result, writes.WriteRefused):
            raise ApiError(409, result.message)
    return _reviewed(request, event_id)


@router.post("/events/{event_id}/verdict", response_model=shapes.EventDetail, dependencies=[Depends(can_write)],
             summary="Label an event: real defect or false alarm (with the kind, reviewer and a note)")
def label(request: Request, event_id: EventId, body: shapes.VerdictIn) -> shapes.EventDetail:
    event_id = event_id.lower()
    with session_scope(ctx(request).sessions) as session:
        if writes.set_verdict(session, event_id, body) is None:
            raise _not_found(event_id)
    return _reviewed(request, event_id)


@router.get("/search", response_model=list[shapes.EventOut], dependencies=[Depends(can_read)],
            summary="Events that involve a part serial (exact, or by prefix)")
def search_serial(request: Request, q: Annotated[shapes.SerialQuery, Query()]) -> list[shapes.EventOut]:
    with ctx(request).sessions() as session:
        return queries.events_by_serial(session, q)
