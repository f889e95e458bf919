"""Media routes: the narrated clip (range requests for seeking), its WebVTT subtitles and the
thumbnail of one event. Files are found by event id through the summaries row, never by a path
from the request (see services/api/media.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse

from schemas import api as shapes
from services.api import media, queries
from services.api.context import ApiError, can_read, ctx

router = APIRouter(prefix="/api/events/{event_id}", tags=["media"])
EventId = Annotated[str, Path(pattern=shapes.EVENT_ID_PATTERN, description="event id (a UUID)")]

_FIELDS = {"clip": "video_path", "subtitles": "subtitles_path", "thumbnail": "thumbnail_path"}
_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"description": "the whole file"}, 206: {"description": "the requested byte range"},
              404: {"model": shapes.ErrorOut}, 416: {"model": shapes.ErrorOut}}


def _serve(request: Request, event_id: str, what: str) -> FileResponse:
    c = ctx(request)
    event_id = event_id.lower()
    with c.sessions() as session:
        summary = queries.summary_of(session, event_id)
        if summary is None:
            if not queries.event_exists(session, event_id):
                raise ApiError(404, f"no event with id {event_id}")
            raise ApiError(404, f"event {event_id} has no summary yet; the summarizer renders it after the event closes")
    path = media.resolve_media(c.media_root, getattr(summary, _FIELDS[what]))
    if path is None:
        raise ApiError(404, f"the {what} of event {event_id} is not available (status {summary.status})")
    stat = path.stat()
    range_header = request.headers.get("range")
    if range_header and "if-range" not in request.headers:
        problem = media.range_error(range_header, stat.st_size)
        if problem:
            status, message = problem
            headers = {"Content-Range": f"bytes */{stat.st_size}"} if status == 416 else None
            raise ApiError(status, message, headers)
    # Starlette's FileResponse answers Range with 206 + Content-Range (and multipart for several ranges)
    return FileResponse(path, media_type=media.media_type(path), stat_result=stat,
                        headers={"Cache-Control": "private, max-age=60"})


@router.get("/clip", dependencies=[Depends(can_read)], responses=_RESPONSES, response_class=FileResponse,
            summary="The narrated MP4 of an event (supports Range requests)")
def clip(request: Request, event_id: EventId) -> FileResponse:
    return _serve(request, event_id, "clip")


@router.get("/subtitles", dependencies=[Depends(can_read)], responses=_RESPONSES, response_class=FileResponse,
            summary="The WebVTT subtitles of the narrated clip")
def subtitles(request: Request, event_id: EventId) -> FileResponse:
    return _serve(request, event_id, "subtitles")


@router.get("/thumbnail", dependencies=[Depends(can_read)], responses=_RESPONSES, response_class=FileResponse,
            summary="The thumbnail image of an event")
def thumbnail(request: Request, event_id: EventId) -> FileResponse:
    return _serve(request, event_id, "thumbnail")
