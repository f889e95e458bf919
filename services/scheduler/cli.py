"""`fusionwatch scheduler`: shift digests, retention and recalibration on a schedule."""

from __future__ import annotations

import typer

app = typer.Typer()


@app.command()
def scheduler(
    run_now: str = typer.Option(None, "--run-now", help="Run one job now and exit: digest, retention or "
                                "recalibration (still claimed in job_runs, so it never doubles a scheduled run)."),
    shift_end: str = typer.Option(None, "--shift-end", help="With --run-now digest: the shift boundary to digest "
                                  "(ISO 8601, e.g. 2026-11-26T14:00:00+00:00; default: the last shift that ended)."),
    database_url: str = typer.Option(None, "--database-url", help="Database URL (default FW_DATABASE_URL)."),
    metrics: bool = typer.Option(True, "--metrics/--no-metrics", help="Serve /metrics, /healthz, /readyz on "
                                 "metrics.base_port + 2."),
) -> None:
    """Run the scheduler: a digest (MP4 + Markdown report) as each shift ends, daily retention of
    media and rows, and daily threshold recalibration. Jobs persist in the database; running two
    schedulers is safe (each firing is claimed once). Ctrl-C stops.

    Shifts, time zone and cron expressions: FW_SCHEDULER__SHIFTS='["06:00","14:00","22:00"]',
    FW_SCHEDULER__TIMEZONE, FW_SCHEDULER__RETENTION_CRON, FW_SCHEDULER__RECALIBRATION_CRON.
    """
    from datetime import datetime, timezone

    from rich.console import Console

    from schemas.errors import ConfigError
    from services import db
    from services.scheduler.jobs import JOBS, JobContext, default_owner
    from services.scheduler.jobs import run_now as run_job_now
    from services.scheduler.shifts import last_completed_shift, parse_shifts
    from services.settings import get_settings

    settings = get_settings()
    if database_url:
        settings = settings.model_copy(update={"database": settings.database.model_copy(update={"url": database_url})})
    console = Console(stderr=True)
    engine = db.make_engine(settings.database.url)
    db.wait_for_database(engine, settings.database.connect_timeout_s, settings.database.url)
    factory = db.session_factory(engine)
    if run_now:
        if run_now not in JOBS:
            raise ConfigError(f"--run-now {run_now!r}: choose one of {', '.join(JOBS)}")
        when = None
        if run_now == "digest":
            cfg = settings.scheduler
            when = datetime.fromisoformat(shift_end) if shift_end else \
                last_completed_shift(datetime.now(timezone.utc), parse_shifts(cfg.shifts), cfg.timezone).end
            if when.tzinfo is None:
                raise ConfigError("--shift-end needs a zone offset, e.g. 2026-11-26T14:00:00+00:00")
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
            bar.add_task(f"running {run_now}" + (f" for the shift ending {when.isoformat()}" if when else ""), total=None)
            result = run_job_now(JobContext(settings, factory, default_owner()), run_now, when)
        console.print(result if result is not None else "nothing to do (already claimed, or skipped; see the log)")
        return

    from services.lifecycle import install_stop_handlers
    from services.scheduler.service import run_scheduler

    stop = install_stop_handlers()
    server = None
    if metrics:
        from services.observability.metrics import set_build_info
        from services.observability.server import database_reachable, serve_metrics

        set_build_info("scheduler")
        server = serve_metrics(settings, "scheduler", {"database": database_reachable(engine)})
        console.print(f"metrics on {server.url}/metrics")
    console.print(f"scheduler running: shifts {', '.join(settings.scheduler.shifts)} ({settings.scheduler.timezone}); "
                  f"digests into {settings.media_dir / 'digests'} (Ctrl-C stops)")
    try:
        run_scheduler(settings, stop, engine, factory)
    finally:
        if server is not None:
            server.stop()
