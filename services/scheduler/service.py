"""Build and run the APScheduler instance: persistent job store, cron triggers, one executor.

Where it sits: the process `fusionwatch scheduler` (and `fusionwatch up`) runs. Jobs are stored in
the project database (`apscheduler_jobs`, created by the job store itself on start) so a restart
keeps the schedule and runs a firing it missed while down (within `misfire_grace_s`, coalesced to
one run). Job definitions are (re)written from the settings on every start with
`replace_existing`, so changing the shifts in the config and restarting is all it takes.
"""

from __future__ import annotations

import logging
import threading
import uuid

from apscheduler.events import EVENT_JOB_MISSED
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from schemas.errors import ConfigError
from services.scheduler.jobs import DIGEST_TASK, ContextExecutor, JobContext, default_owner
from services.scheduler.shifts import parse_shifts, zone
from services.settings import Settings

log = logging.getLogger(__name__)

JOBSTORE_TABLE = "apscheduler_jobs"
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
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBSTORE_TABLE)},
        executors={"default": ContextExecutor(context)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": cfg.misfire_grace_s},
        timezone=tz,
    )
    scheduler.fusionwatch_context = context  # type: ignore[attr-defined]

    def on_missed(event) -> None:
        from services.scheduler.jobs import _metric

        _metric(DIGEST_TASK if event.job_id.startswith(DIGEST_PREFIX) else event.job_id, "missed")
        log.warning("job %s missed its run at %s (scheduler was down longer than misfire_grace_s)",
                    event.job_id, event.scheduled_run_time)

    scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
    return scheduler


def install_jobs(scheduler: BackgroundScheduler, settings: Settings) -> list[str]:
    """Write the job definitions (call after `start(paused=True)`: the job store must be open)."""
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
    for job_id, (func, trigger) in wanted.items():
        existing = scheduler.get_job(job_id)
        if existing is not None and existing.func_ref == func and str(existing.trigger) == str(trigger):
            continue  # unchanged: keep its stored next run time, so a firing missed while down still runs
        scheduler.add_job(func, trigger, id=job_id, name=job_id, replace_existing=True)
    return sorted(wanted)


def start_scheduler(settings: Settings, engine, session_factory, name: str | None = None) -> BackgroundScheduler:
    scheduler = build_scheduler(settings, engine, session_factory, name)
    scheduler.start(paused=True)
    ids = install_jobs(scheduler, settings)
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
