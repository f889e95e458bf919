"""`fusionwatch notify`: run the notifier; `notify test` sends one test message; `notify dead-letters`
lists what was given up on."""

from __future__ import annotations

import typer

app = typer.Typer()
notify_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
app.add_typer(notify_app, name="notify")


def _settings(database_url: str | None = None):
    from services.settings import get_settings

    settings = get_settings()
    if database_url:
        settings = settings.model_copy(update={"database": settings.database.model_copy(update={"url": database_url})})
    return settings


def _no_channels() -> None:
    from schemas.errors import ConfigError

    raise ConfigError("no notification channels are configured: add a notify.webhooks.NAME or notify.mqtt.NAME "
                      "table and notify.rules to the config file, or FW_NOTIFY__WEBHOOKS / FW_NOTIFY__MQTT / "
                      "FW_NOTIFY__RULES (docs/production.md, \"Delivering alerts\")")


@notify_app.callback()
def notify(
    ctx: typer.Context,
    bootstrap: str = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers (default FW_KAFKA_BOOTSTRAP, "
                                  "else the embedded broker at FW_BROKER__HOST:FW_BROKER__PORT)."),
    database_url: str = typer.Option(None, "--database-url", help="Database URL (default FW_DATABASE_URL)."),
    metrics: bool = typer.Option(True, "--metrics/--no-metrics", help="Serve /metrics, /healthz, /readyz on "
                                 "metrics.base_port + 4."),
) -> None:
    """Run the notifier: a consumer group on fw.events that sends each event's opened / escalated /
    closed transition to the channels its routing rules name, at least once, and never twice per
    revision and channel in normal operation (a ledger in SQL). Ctrl-C stops.
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from services import db
    from services.kafka import Topics, wait_for_broker
    from services.lifecycle import install_stop_handlers
    from services.notify.service import NotifierService
    from services.summarizer.service import bootstrap_of

    settings = _settings(database_url)
    if not settings.notify.channels:
        _no_channels()
    bootstrap = bootstrap or bootstrap_of(settings)
    engine = db.make_engine(settings.database.url)
    db.wait_for_database(engine, settings.database.connect_timeout_s, settings.database.url)
    wait_for_broker(bootstrap, settings.kafka.connect_timeout_s)
    console = Console(stderr=True)
    topics = Topics.from_settings(settings.kafka)
    service = NotifierService(settings, bootstrap, db.session_factory(engine), topics)
    stop = install_stop_handlers()
    server = None
    if metrics:
        from services.observability.server import CheckResult, database_reachable, kafka_reachable, serve_metrics

        server = serve_metrics(settings, "notify", {
            "database": database_reachable(engine),
            "kafka": kafka_reachable(settings.kafka, bootstrap, [topics.events]),
            "partitions": lambda: CheckResult(service.ready.is_set(), "waiting for the group's partitions"),
        })
        console.print(f"metrics on {server.url}/metrics")
    console.print(f"notifying from [bold]{topics.events}[/] to {', '.join(settings.notify.channels)} (Ctrl-C stops)")
    try:
        service.run(stop, on_handled=lambda h: h.notification and h.channels and console.print(
            f"{h.notification.asset} {h.notification.transition} rev {h.notification.revision}: "
            f"delivered {', '.join(h.outcome.delivered) or '-'}"
            + (f", dead-lettered {', '.join(h.outcome.dead_lettered)}" if h.outcome.dead_lettered else "")))
    finally:
        if server is not None:
            server.stop()


@notify_app.command("test")
def notify_test(channel: str = typer.Option(..., "--channel", help="A configured channel name."),
                ) -> None:
    """Send one test notification (transition "test", asset fusionwatch-test) through CHANNEL, once,
    and say whether the receiver acknowledged it. Nothing is written to the ledger."""
    from rich.console import Console

    from schemas.errors import ConfigError
    from services.notify.service import build_channels, send_test

    settings = _settings()
    if not settings.notify.channels:
        _no_channels()
    if channel not in settings.notify.channels:
        raise ConfigError(f"no channel named {channel!r}; configured: {', '.join(settings.notify.channels)}")
    ch = build_channels(settings.notify.model_copy(update={
        "mqtt": {k: v for k, v in settings.notify.mqtt.items() if k == channel},
        "webhooks": {k: v for k, v in settings.notify.webhooks.items() if k == channel}, "rules": []}))[channel]
    console = Console(stderr=True)
    try:
        notification, result = send_test(ch, settings.notify.base_url)
    finally:
        ch.close()
    if result.ok:
        console.print(f"{ch.kind} channel [bold]{channel}[/]: test {notification.key} delivered")
        return
    console.print(f"[bold red]{ch.kind} channel {channel}: not delivered[/] ({result.error})")
    raise typer.Exit(1)


@notify_app.command("dead-letters")
def dead_letters(limit: int = typer.Option(20, "--limit", min=1),
                 database_url: str = typer.Option(None, "--database-url")) -> None:
    """List the newest notifications that were given up on (the notify_dead_letters table)."""
    from services import db
    from services.notify.ledger import Ledger

    settings = _settings(database_url)
    rows = Ledger(db.session_factory(db.make_engine(settings.database.url))).dead_letters(limit)
    for r in rows:
        print(f"{r.created_at.isoformat()}  {r.channel:16} {r.event_id}:{r.revision} {r.transition:9} "
              f"{r.attempts} attempts  {r.last_error}")
    if not rows:
        print("no dead letters")
