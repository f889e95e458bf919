"""Retention: summary/digest files and database rows past their age.

Where it sits: a daily scheduler job. Two horizons:
- `scheduler.media_retention_days` for files (videos are the bulk of the disk): the files are
  deleted and the rows keep their text (narration, report path cleared), so the review page still
  says what happened;
- `database.retention_days` for rows: events (their summaries and reviews go with them, by the
  foreign keys' ON DELETE CASCADE), call summaries, digests and finished job runs.
Files under the media root that no row points at (a crash between rename and commit, a half file
`.part` from a killed render) are removed once they are an hour old.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import delete, select

from schemas.tables import CallSummary, Digest, Event, JobRun, Summary
from services.db import session_scope
from services.settings import Settings
from services.summarizer import media

log = logging.getLogger(__name__)

ORPHAN_GRACE_S = 3600.0
MEDIA_DIRS = ("summaries", "digests")


@dataclass
class RetentionResult:
    files_deleted: int = 0
    bytes_freed: int = 0
    summaries_expired: int = 0
    digests_expired: int = 0
    events_deleted: int = 0
    rows_deleted: dict[str, int] = field(default_factory=dict)
    orphans_deleted: int = 0


def _unlink(root: Path, rel: str | None, result: RetentionResult) -> None:
    if not rel:
        return
    try:
        path = media.resolve(root, rel)
    except ValueError:
        log.warning("not deleting %r: it is outside the media root", rel)
        return
    try:
        size = path.stat().st_size
        path.unlink()
        result.files_deleted += 1
        result.bytes_freed += size
    except FileNotFoundError:
        pass


def apply_retention(session_factory, settings: Settings, now: datetime | None = None) -> RetentionResult:
    now = now or datetime.now(timezone.utc)
    root = Path(settings.media_dir)
    result = RetentionResult()
    media_cutoff = now - timedelta(days=settings.scheduler.media_retention_days)
    row_cutoff = now - timedelta(days=settings.database.retention_days)

    # rows past the row horizon: their files first, then the rows (summaries/reviews cascade)
    with session_scope(session_factory) as s:
        old = s.execute(select(Summary.video_path, Summary.subtitles_path, Summary.thumbnail_path)
                        .join(Event, Event.id == Summary.event_id).where(Event.start_time < row_cutoff)).all()
        for paths in old:
            for rel in paths:
                _unlink(root, rel, result)
        result.events_deleted = s.execute(delete(Event).where(Event.start_time < row_cutoff)).rowcount or 0
        for digest in s.scalars(select(Digest).where(Digest.shift_start < row_cutoff)):
            _unlink(root, digest.video_path, result)
            _unlink(root, digest.report_path, result)
        result.rows_deleted = {
            "digests": s.execute(delete(Digest).where(Digest.shift_start < row_cutoff)).rowcount or 0,
            "call_summaries": s.execute(delete(CallSummary).where(CallSummary.start_time < row_cutoff)).rowcount or 0,
            "job_runs": s.execute(delete(JobRun).where(JobRun.scheduled_for < row_cutoff,
                                                       JobRun.outcome != "running")).rowcount or 0,
        }

    # files past the media horizon: delete, keep the rows' text
    with session_scope(session_factory) as s:
        for summary in s.scalars(select(Summary).where(Summary.rendered_at < media_cutoff,
                                                       Summary.video_path.is_not(None))):
            for rel in (summary.video_path, summary.subtitles_path, summary.thumbnail_path):
                _unlink(root, rel, result)
            summary.video_path = summary.subtitles_path = summary.thumbnail_path = None
            summary.missing = [*(summary.missing or []), {"modality": None, "reason": "expired",
                                                          "detail": f"media deleted by retention on {now:%Y-%m-%d}"}]
            result.summaries_expired += 1
        for digest in s.scalars(select(Digest).where(Digest.created_at < media_cutoff, Digest.video_path.is_not(None))):
            _unlink(root, digest.video_path, result)
            digest.video_path = None
            result.digests_expired += 1

    result.orphans_deleted = _remove_orphans(session_factory, root)
    log.info("retention: %d files (%.1f MB) deleted, %d summaries and %d digests expired, %d events deleted, "
             "%d orphan files", result.files_deleted, result.bytes_freed / 1e6, result.summaries_expired,
             result.digests_expired, result.events_deleted, result.orphans_deleted)
    return result


def _remove_orphans(session_factory, root: Path) -> int:
    with session_factory() as s:
        known = set()
        for paths in s.execute(select(Summary.video_path, Summary.subtitles_path, Summary.thumbnail_path)):
            known.update(p for p in paths if p)
        for paths in s.execute(select(Digest.video_path, Digest.report_path)):
            known.update(p for p in paths if p)
    # a digest's WebVTT sidecar is not in the row; it lives and dies with its video
    known.update(p[: -len(".mp4")] + ".vtt" for p in list(known) if p.endswith(".mp4"))
    deadline = time.time() - ORPHAN_GRACE_S
    removed = 0
    for sub in MEDIA_DIRS:
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if not path.is_file():
                continue
            rel = f"{sub}/{path.name}"
            if rel in known or path.stat().st_mtime > deadline:
                continue  # referenced, or young enough to belong to a render in progress
            path.unlink(missing_ok=True)
            removed += 1
    return removed
