"""Build and run the APScheduler instance: jobs from code, cron triggers, one executor.

Where it sits: the process `fusionwatch scheduler` (and `fusionwatch up`) runs. Jobs live in
APScheduler's memory store and are added from the settings on every start: nothing is read back
from SQL. (APScheduler's SQLAlchemyJobStore pickles each job into the database and unpickles it on
start — whoever can write that table runs code in the scheduler. The `apscheduler_jobs` table of
older versions is no longer read.) A firing missed while the scheduler was down is found from
`job_runs`, which records every firing that ran: if the latest scheduled time of a job lies within
`misfire_grace_s` and has no run, the job is added due at that time and runs at once (coalesced
to one run; `claimed()` keeps a second scheduler from running it again).
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime, timedelta, timezone

from apscheduler.events import EVENT_JOB_MISSED
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from schemas.errors import ConfigError
from services.scheduler.jobs import DIGEST_TASK, ContextExecutor, JobContext, default_owner
from services.scheduler.shifts import parse_shifts, zone
from services.settings import Settings

log = logging.getLogger(__name__)

DIGEST_PREFIX = "digest@"


def _cron(expr: str, tz, what: str) -> CronTrigger:
    try:
        return CronTrigger.from_crontab(expr, timezone=tz)
    except ValueError as e:
        raise ConfigError(f"scheduler.{what} {expr!r} is not a crontab expression "
                          f"('minute hour day month day-of-week', e.g. '30 3 * * *'): {e}") from None


def build_scheduler(settings: Settings, engine, session_factory, name: str | None = None) -> BackgroundScheduler:
    """A configured, not yet started scheduler; `name` identifies this process in `job_runs`."""
    cfg = settings.scheduler
    tz = zone(cfg.timezone)
    context = JobContext(settings, session_factory, name or f"{default_owner()}:{uuid.uuid4().hex[:6]}")
    scheduler = BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},  # never a pickling store: see the module docstring
        executors={"default": ContextExecutor(context)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": cfg.misfire_grace_s},
        timezone=tz,
    )
    scheduler.fusionwatch_context = context  # type: ignore[attr-defined]

    def on_missed(event) -> None:
        from services.scheduler.jobs import record_job_outcome

        record_job_outcome(DIGEST_TASK if event.job_id.startswith(DIGEST_PREFIX) else event.job_id, "missed")
        log.warning("job %s missed its run at %s (scheduler was down longer than misfire_grace_s)",
                    event.job_id, event.scheduled_run_time)

    scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
    return scheduler


def install_jobs(scheduler: BackgroundScheduler, settings: Settings, session_factory=None) -> list[str]:
    """Add the job definitions (call after `start(paused=True)`); with `session_factory`, a job whose
    latest firing was missed (no `job_runs` row, within misfire_grace_s) is added due at once."""
    cfg = settings.scheduler
    tz = zone(cfg.timezone)
    wanted: dict[str, tuple[str, CronTrigger]] = {}
    for t in parse_shifts(cfg.shifts):
        job_id = f"{DIGEST_PREFIX}{t.isoformat()}"
        wanted[job_id] = ("services.scheduler.jobs:digest_job",
                          CronTrigger(hour=t.hour, minute=t.minute, second=t.second, timezone=tz))
    wanted["retention"] = ("services.scheduler.jobs:retention_job", _cron(cfg.retention_cron, tz, "retention_cron"))
    wanted["recalibration"] = ("services.scheduler.jobs:recalibration_job",
                               _cron(cfg.recalibration_cron, tz, "recalibration_cron"))
    for job in scheduler.get_jobs():
        if job.id.startswith(DIGEST_PREFIX) and job.id not in wanted:
            job.remove()  # a shift that is no longer configured
    now = datetime.now(tz)
    for job_id, (func, trigger) in wanted.items():
        extra = {}
        missed = _missed_firing(job_id, trigger, now, cfg.misfire_grace_s, session_factory)
        if missed is not None:
            log.info("job %s missed its run at %s while the scheduler was down; running it now", job_id, missed)
            extra["next_run_time"] = missed
        scheduler.add_job(func, trigger, id=job_id, name=job_id, replace_existing=True, **extra)
    return sorted(wanted)


def _missed_firing(job_id: str, trigger: CronTrigger, now: datetime, grace_s: int, session_factory) -> datetime | None:
    """The job's latest scheduled time within the grace period, when no scheduler ran it."""
    if session_factory is None:
        return None
    from sqlalchemy import select

    from schemas.tables import JobRun

    latest, t = None, trigger.get_next_fire_time(None, now - timedelta(seconds=grace_s))
    for _ in range(100_000):  # bounded: a per-second cron over a day of grace
        if t is None or t > now:
            break
        latest, t = t, trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
    if latest is None:
        return None
    task = DIGEST_TASK if job_id.startswith(DIGEST_PREFIX) else job_id
    with session_factory() as s:
        ran = s.scalar(select(JobRun.job).where(JobRun.job == task,
                                                JobRun.scheduled_for == latest.astimezone(timezone.utc)))
    return None if ran is not None else latest


def start_scheduler(settings: Settings, engine, session_factory, name: str | None = None) -> BackgroundScheduler:
    scheduler = build_scheduler(settings, engine, session_factory, name)
    scheduler.start(paused=True)
    ids = install_jobs(scheduler, settings, session_factory)
    scheduler.resume()
    for job in scheduler.get_jobs():
        log.info("job %s next runs at %s", job.id, job.next_run_time)
    log.info("scheduler %s running %d jobs", scheduler.fusionwatch_context.name, len(ids))  # type: ignore[attr-defined]
    return scheduler


def run_scheduler(settings: Settings, stop: threading.Event, engine=None, session_factory=None) -> None:
    """Run until `stop` is set (the `fusionwatch scheduler` / `up` entry point)."""
    from services import db

    engine = engine or db.make_engine(settings.database.url)
    session_factory = session_factory or db.session_factory(engine)
    scheduler = start_scheduler(settings, engine, session_factory)
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
