"""`fusionwatch summarize`: run the summarizer service, or render one event on demand."""

from __future__ import annotations

import typer

app = typer.Typer()


@app.command()
def summarize(
    event: str = typer.Option(None, "--event", "-e", help="Render this event id now (from the events table) and "
                              "exit, instead of consuming fw.events."),
    bootstrap: str = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers (default FW_KAFKA_BOOTSTRAP, "
                                  "else the embedded broker at FW_BROKER__HOST:FW_BROKER__PORT)."),
    database_url: str = typer.Option(None, "--database-url", help="Database URL (default FW_DATABASE_URL)."),
    media_root: str = typer.Option(None, "--media-root", help="Where MP4/WebVTT/thumbnails go (default "
                                   "FW_MEDIA_ROOT, else <var_dir>/media)."),
    metrics: bool = typer.Option(True, "--metrics/--no-metrics", help="Serve /metrics, /healthz, /readyz on "
                                 "metrics.base_port + 1 (service mode only)."),
) -> None:
    """Narrated video summaries of anomaly events (MP4 with H.264 + AAC + subtitles, WebVTT, thumbnail).

    Without --event: a consumer group on fw.events that summarizes every closed event (and, with
    FW_SUMMARIZER__OPEN_AFTER_S, long-open ones) until Ctrl-C. With --event ID: re-reads that event's
    evidence from Kafka, renders it, updates its `summaries` row and prints where the files are.
    """
    from pathlib import Path

    from rich.console import Console

    from services import db
    from services.kafka import wait_for_broker
    from services.settings import get_settings
    from services.summarizer.service import SummarizerService, bootstrap_of

    settings = get_settings()
    updates = {}
    if media_root:
        updates["media_root"] = Path(media_root)
    if database_url:
        updates["database"] = settings.database.model_copy(update={"url": database_url})
    settings = settings.model_copy(update=updates) if updates else settings
    bootstrap = bootstrap or bootstrap_of(settings)
    engine = db.make_engine(settings.database.url)
    db.wait_for_database(engine, settings.database.connect_timeout_s, settings.database.url)
    wait_for_broker(bootstrap, settings.kafka.connect_timeout_s)  # one sentence if it is down, not the client's log
    factory = db.session_factory(engine)
    service = SummarizerService(settings, bootstrap, factory)
    console = Console(stderr=True)
    if event:
        _one(service, factory, event, settings, console)
        return
    from services.lifecycle import install_stop_handlers

    stop = install_stop_handlers()
    server = None
    if metrics:
        from services.observability.metrics import set_build_info
        from services.observability.server import database_reachable, serve_metrics

        set_build_info("summarizer")
        server = serve_metrics(settings, "summarizer", {"database": database_reachable(engine)})
        console.print(f"metrics on {server.url}/metrics")
    console.print(f"summarizing closed events from [bold]{service.topics.events}[/] into {settings.media_dir} "
                  "(Ctrl-C stops)")
    try:
        service.run(stop, on_result=lambda r: console.print(
            f"{r.event_id}: [bold]{r.status}[/] {r.paths.video if r.paths else ''} ({r.render_s:.1f} s)"))
    finally:
        if server is not None:
            server.stop()


def _one(service, factory, event_id: str, settings, console) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from schemas.errors import FusionwatchError
    from services.summarizer import facts as facts_mod

    with factory() as session:
        found = facts_mod.load(session, event_id)
    if found is None:
        raise FusionwatchError(f"event {event_id} is not in the events table at {settings.database.url}; "
                               "list events with the review API or check FW_DATABASE_URL")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        bar.add_task(f"rendering event {event_id} ({found.asset}, {found.kind})", total=None)
        result = service.summarizer.summarize(found, factory)
    service.reader.close()
    console.print(f"status: [bold]{result.status}[/]  render {result.render_s:.2f} s for a "
                  f"{result.duration_s or 0:.1f} s video")
    for item in result.missing:
        console.print(f"  missing {item.get('modality')}: {item.get('detail')}")
    if result.paths:
        for rel in (result.paths.video, result.paths.subtitles, result.paths.thumbnail):
            print(result.paths.abs(rel))
    console.print(f"narration: {result.narration}")
    if result.status == "failed":
        raise typer.Exit(1)
