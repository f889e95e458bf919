"""`fusionwatch api` (the review API and page) and `fusionwatch recalibrate` (the feedback loop)."""

from __future__ import annotations

import json

import typer

app = typer.Typer()


@app.command()
def api(
    host: str = typer.Option(None, help="Bind address (default FW_API__HOST, 127.0.0.1). Reads need the token "
                             "unless this is a loopback address."),
    port: int = typer.Option(None, help="Port (default FW_API__PORT, 8080)."),
    sample_data: bool = typer.Option(False, "--sample-data", help="Fill an EMPTY database with a few sample events "
                                     "and clips, to try the page without running the pipeline."),
) -> None:
    """Serve the review API and web page: the event queue, narrated clips, verdicts, statistics and
    thresholds (OpenAPI at /openapi.json).

    Writes need `Authorization: Bearer <FW_API_TOKEN>`; without FW_API_TOKEN a token is generated
    and the page link printed with it. Stops on Ctrl-C.
    """
    import uvicorn
    from rich.console import Console

    from services.api.app import create_app, print_review_link
    from services.settings import get_settings

    settings = get_settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update={"api": settings.api.model_copy(update=overrides)})
    application = create_app(settings)
    if sample_data:
        _fill_sample(application)
    print_review_link(application, Console(stderr=True))
    uvicorn.run(application, host=settings.api.host, port=settings.api.port, log_level="warning",
                access_log=False)


def _fill_sample(application) -> None:
    from rich.console import Console
    from sqlalchemy import func, select

    from schemas.tables import Event
    from services.api.sample import write_sample
    from services.db import session_scope

    ctx = application.state.ctx
    with session_scope(ctx.sessions) as session:
        if session.scalar(select(func.count()).select_from(Event)):
            Console(stderr=True).print("[yellow]--sample-data skipped: the database already holds events[/]")
            return
        ids = write_sample(session, ctx.media_root)
    Console(stderr=True).print(f"wrote {len(ids)} sample events (media under {ctx.media_root / 'sample'})")


@app.command()
def recalibrate(
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change without writing it."),
    as_json: bool = typer.Option(False, "--json", help="Print the changes as JSON."),
    actor: str = typer.Option("cli", help="Recorded as who made the change in threshold_changes."),
) -> None:
    """Raise per-asset thresholds from false-alarm verdicts, within the false-alarm budget and never
    above a confirmed real event's score (settings: FW_RECALIBRATION__*; see docs/review.md).

    The scheduler runs the same job on its schedule; every change is recorded with actor and reason.
    """
    from rich.console import Console
    from rich.table import Table

    from services import db
    from services.api.recalibration import plan
    from services.api.recalibration import recalibrate as run
    from services.settings import get_settings

    settings = get_settings()
    engine = db.make_engine(settings.database.url)
    db.wait_for_database(engine, settings.database.connect_timeout_s, settings.database.url)
    sessions = db.session_factory(engine)
    with db.session_scope(sessions) as session:
        plans = plan(session, settings)
        changes = run(session, settings, actor=actor, dry_run=dry_run)
        rows = [{"asset": c.asset_id, "old": c.old_threshold, "new": c.new_threshold, "reason": c.reason}
                for c in changes]
    engine.dispose()
    if as_json:
        print(json.dumps({"dry_run": dry_run, "changes": rows}, indent=2))
        return
    console = Console()
    if not plans:
        console.print("no false-alarm verdicts in the look-back period; nothing to recalibrate")
        return
    table = Table("asset", "in force", "new", "why", title="recalibration" + (" (dry run)" if dry_run else ""))
    changed = {r["asset"]: r for r in rows}
    for p in plans:
        new = changed.get(p.asset)
        table.add_row(p.asset, f"{p.current:.4g}", f"{new['new']:.4g}" if new else "—", p.reason())
    console.print(table)
