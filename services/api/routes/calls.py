"""The supervisor's view (call-centre profile): calls live and recent, one call's transcript by
speaker with per-turn sentiment, its frustration curve and escalations with their clips, and
full-text search over every transcript. Thin: SQL and shapes live in services/api/call_queries.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from schemas import api as shapes
from services.api import call_queries as calls
from services.api.context import ApiError, can_read, ctx

router = APIRouter(prefix="/api", tags=["calls"])
CallId = Annotated[str, Path(pattern=shapes.ASSET_PATTERN, description="call id, e.g. call-000123")]
LiveWithin = Annotated[float, Query(gt=0, le=86400, description="a call is live when one of its windows was scored "
                                                                 "this many seconds ago or less")]


@router.get("/calls", response_model=calls.CallPage, dependencies=[Depends(can_read)],
            summary="Calls, most recently active first: live, ended or all")
def list_calls(request: Request, state: calls.CallState = "all", live_within_s: LiveWithin = 30.0,
               limit: Annotated[int, Query(ge=1, le=200)] = 50,
               offset: Annotated[int, Query(ge=0)] = 0) -> calls.CallPage:
    with ctx(request).sessions() as session:
        return calls.list_calls(session, state, live_within_s, limit, offset)


@router.get("/calls/{call_id}", response_model=calls.CallDetail, dependencies=[Depends(can_read)],
            summary="One call: transcript by speaker with per-turn sentiment, frustration curve, escalations and clips")
def get_call(request: Request, call_id: CallId, live_within_s: LiveWithin = 30.0) -> calls.CallDetail:
    c = ctx(request)
    monitor = c.settings.monitor
    with c.sessions() as session:
        detail = calls.call_detail(session, call_id, live_within_s,
                                   (monitor.escalation_threshold, monitor.escalation_close_threshold))
    if detail is None:
        raise ApiError(404, f"no call with id {call_id} (the monitor writes a call when it has scored its first window)")
    return detail


@router.get("/transcripts/search", response_model=calls.SearchOut, dependencies=[Depends(can_read)],
            summary='Full-text search over call transcripts: words, "a phrase", prefix*, -excluded, a OR b')
def search(request: Request,
           q: Annotated[str, Query(min_length=1, max_length=200, description="the search (docs/callcenter.md)")],
           call: Annotated[str | None, Query(pattern=shapes.ASSET_PATTERN, description="only this call")] = None,
           limit: Annotated[int, Query(ge=1, le=200)] = 50) -> calls.SearchOut:
    with ctx(request).sessions() as session:
        try:
            return calls.search_turns(session, q, call, limit)
        except calls.SearchSyntaxError as e:
            raise ApiError(422, f"search {q!r}: {e}") from None
