"""The scheduler's jobs and the machinery that runs each firing exactly once.

Where it sits: between APScheduler (which decides *when*) and the job bodies (digest, retention,
recalibration). Two things APScheduler 3 does not give us:

- **Context without pickling.** Jobs in a persistent store are references to module-level
  functions plus pickled arguments; settings and database engines do not belong in a job table.
  `ContextExecutor` hands its scheduler's `JobContext` (settings, session factory, TTS voice, the
  scheduled time of this firing) to the job through a thread-local, so the stored jobs take no
  arguments at all.
- **One run per firing across processes.** APScheduler's FAQ warns that two schedulers sharing a
  job store may both run a job. `claimed()` inserts a `job_runs` row keyed by (job, scheduled
  time); the primary key lets exactly one process through, the others record nothing and skip.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from schemas.tables import JobRun
from services.db import session_scope
from services.settings import Settings

log = logging.getLogger(__name__)
_local = threading.local()
DIGEST_TASK = "shift_digest"  # the name in job_runs and the metrics' task label


@dataclass
class JobContext:
    settings: Settings
    session_factory: object
    name: str  # this scheduler process, recorded as the owner of the runs it claims
    speaker: object | None = None  # a shared TTS voice (created on first use)
    scheduled_for: datetime | None = None  # set per firing

    def speaker_or_new(self):
        if self.speaker is None:
            from services.summarizer.tts import Speaker

            self.speaker = Speaker(self.settings.summarizer.voice, self.settings.summarizer.speech_wpm)
        return self.speaker


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def current() -> JobContext:
    ctx = getattr(_local, "context", None)
    if ctx is None:
        raise RuntimeError("a fusionwatch job ran outside its scheduler's ContextExecutor")
    return ctx


class ContextExecutor(ThreadPoolExecutor):
    """APScheduler's thread pool, with this scheduler's JobContext visible to the job."""

    def __init__(self, context: JobContext, max_workers: int = 2):
        super().__init__(max_workers)
        self.context = context

    def _do_submit_job(self, job, run_times):
        def call():
            # coalescing hands us the latest missed time: that is the firing being run
            _local.context = JobContext(self.context.settings, self.context.session_factory, self.context.name,
                                        self.context.speaker, run_times[-1])
            try:
                return run_job(job, job._jobstore_alias, run_times, self._logger.name)  # noqa: SLF001 - APScheduler 3 has no public hook for the job context
            finally:
                self.context.speaker = _local.context.speaker
                _local.context = None

        def done(f):
            exc = f.exception()
            if exc:
                self._run_job_error(job.id, exc, getattr(exc, "__traceback__", None))
            else:
                self._run_job_success(job.id, f.result())

        self._pool.submit(call).add_done_callback(done)


@contextmanager
def claimed(ctx: JobContext, job: str) -> Iterator[bool]:
    """Claim this firing of `job`; yields False (and records nothing) when another process has it.
    The outcome (ok / failed) is written to the claim row and counted in the metrics."""
    scheduled = (ctx.scheduled_for or datetime.now(timezone.utc)).astimezone(timezone.utc)
    try:
        with session_scope(ctx.session_factory) as s:
            s.add(JobRun(job=job, scheduled_for=scheduled, owner=ctx.name[:128], outcome="running"))
    except IntegrityError:
        log.info("%s at %s: already claimed by another scheduler; skipping", job, scheduled.isoformat())
        record_job_outcome(job, "skipped")
        yield False
        return
    outcome, detail = "failed", None
    try:
        yield True
        outcome = "ok"
    except Exception as e:
        detail = f"{type(e).__name__}: {e}"[:1000]
        raise
    finally:
        with session_scope(ctx.session_factory) as s:
            s.execute(update(JobRun).where(JobRun.job == job, JobRun.scheduled_for == scheduled).values(
                outcome=outcome, detail=detail, finished_at=datetime.now(timezone.utc)))
        record_job_outcome(job, outcome)


def record_job_outcome(job: str, outcome: str) -> None:
    """ok / failed / missed, or skipped: another scheduler replica had claimed this firing."""
    try:
        from services.observability import metrics
    except ImportError:
        return
    metrics.job_run(job, outcome)


# ── the jobs (referenced by name from the job store; they take no arguments) ────────────────

def digest_job() -> dict | None:
    """Digest of the shift that ends at this firing's scheduled time."""
    from services.scheduler.digest import build_digest
    from services.scheduler.shifts import parse_shifts, shift_ending_at

    ctx = current()
    cfg = ctx.settings.scheduler
    shift = shift_ending_at(ctx.scheduled_for or datetime.now(timezone.utc), parse_shifts(cfg.shifts), cfg.timezone)
    with claimed(ctx, DIGEST_TASK) as mine:
        if not mine:
            return None
        result = build_digest(ctx.session_factory, ctx.settings, shift, ctx.speaker_or_new())
        if result is None:
            return None
        log.info("digest %s: %d of %d events, %.1f s video at %s", shift.label, len(result.events),
                 result.total_events, result.duration_s, result.video)
        return {"video": result.video, "report": result.report, "events": result.events}


def retention_job() -> dict | None:
    from dataclasses import asdict

    from services.scheduler.retention import apply_retention

    ctx = current()
    with claimed(ctx, "retention") as mine:
        if not mine:
            return None
        return asdict(apply_retention(ctx.session_factory, ctx.settings))


def recalibration_job() -> int | None:
    """Calls `services.api.recalibration.recalibrate(session, settings)` (the review feature's
    feedback loop) in one transaction; skips with a log line where that module is not installed."""
    ctx = current()
    try:
        from services.api.recalibration import recalibrate
    except ImportError as e:
        log.info("recalibration skipped: services.api.recalibration is not available (%s)", e)
        record_job_outcome("recalibration", "skipped")
        return None
    with claimed(ctx, "recalibration") as mine:
        if not mine:
            return None
        with session_scope(ctx.session_factory) as s:
            changes = recalibrate(s, ctx.settings)
        log.info("recalibration: %d threshold change(s)", len(changes))
        return len(changes)


JOBS = {"digest": digest_job, "retention": retention_job, "recalibration": recalibration_job}


def run_now(ctx: JobContext, job: str, scheduled_for: datetime | None = None):
    """Run one job in this thread as if the scheduler fired it at `scheduled_for` (default now)."""
    _local.context = JobContext(ctx.settings, ctx.session_factory, ctx.name, ctx.speaker,
                                scheduled_for or datetime.now(timezone.utc))
    try:
        return JOBS[job]()
    finally:
        ctx.speaker = _local.context.speaker
        _local.context = None
