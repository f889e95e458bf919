"""Serving the summarizer's files (clip, subtitles, thumbnail) safely, with HTTP range requests.

Where it sits: the summarizer writes files under the media root and their names into the
`summaries` row; the API looks the row up by event id and serves that file. A request never names a
path: the only input is the event id, and the stored path must still resolve (symlinks followed)
inside the media root, so neither a bad row nor a planted symlink can expose other files.

Range requests (seeking in the `<video>` element) are served by Starlette's FileResponse, which
answers 206 with Content-Range since Starlette 0.39 (checked on the installed 1.x). Starlette
reports a bad or unsatisfiable Range as plain text; `range_error` checks the header first with the
same rules so that the client gets our JSON error shape instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

# The only file types we serve, by suffix; anything else in a row is refused.
MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".vtt": "text/vtt; charset=utf-8",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
}


def resolve_media(media_root: Path, stored: str | None) -> Path | None:
    """The file a summaries row points at, or None when it is missing or outside the media root.
    Relative paths are relative to the media root (what the summarizer writes)."""
    if not stored:
        return None
    root = media_root.resolve()
    candidate = Path(stored)
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = candidate.resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        return None
    if not resolved.is_relative_to(root):
        log.warning("refusing to serve %s: it is outside the media root %s", resolved, root)
        return None
    if not resolved.is_file() or resolved.suffix.lower() not in MEDIA_TYPES:
        return None
    return resolved


def media_type(path: Path) -> str:
    return MEDIA_TYPES[path.suffix.lower()]


def range_error(header: str, size: int) -> tuple[int, str] | None:
    """(status, message) when a Range header is malformed (400) or unsatisfiable (416), else None.
    Mirrors Starlette's FileResponse rules: bytes only; every range must start inside the file."""
    units, sep, spec = header.partition("=")
    if not sep or units.strip().lower() != "bytes":
        return 400, "Range must look like 'bytes=START-END' (only byte ranges are supported)"
    starts: list[tuple[int, int]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part or part == "-" or "-" not in part:
            continue
        a, _, b = (s.strip() for s in part.partition("-"))
        try:
            start = int(a) if a else max(size - int(b), 0)
            end = int(b) + 1 if a and b and int(b) < size else size
        except ValueError:
            continue
        starts.append((start, end))
    if not starts:
        return 400, "Range names no byte range; use e.g. 'bytes=0-1023'"
    if any(not (0 <= s < size) for s, _ in starts):
        return 416, f"Range starts beyond the end of the file ({size} bytes)"
    if any(s >= e for s, e in starts):
        return 400, "Range start must not be after its end"
    return None
