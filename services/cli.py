"""`fusionwatch` — the one command-line entry point.

Each service subpackage owns its commands in `services/<name>/cli.py` (a `typer.Typer` called
`app` whose commands are added at top level). Command modules import heavy libraries (torch,
PyAV) inside the command bodies so that `--help` and `config` stay fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from schemas.errors import FusionwatchError

COMMAND_MODULES = ("broker", "simulator", "ingest", "monitor", "training", "summarizer", "scheduler", "api",
                   "bench", "stack", "notify")

app = typer.Typer(
    name="fusionwatch",
    help="Multimodal industrial monitoring: camera frames, audio and logs from Kafka, fused by a "
    "cross-attention model into anomaly events in SQL, with narrated video summaries and Prometheus "
    "metrics.\n\nStart with `fusionwatch up` (everything on one box), then see each command's --help.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
err = Console(stderr=True)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(), format="%(name)s: %(message)s", datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)], force=True,
    )
    for noisy in ("kafka", "alembic", "httpx", "uvicorn.access", "apscheduler.executors"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def main(
    config: str = typer.Option(None, "--config", "-c", envvar="FW_CONFIG", help="TOML settings file (FW_* env vars override it)."),
    log_level: str = typer.Option(None, "--log-level", help="DEBUG, INFO, WARNING (default from FW_LOG_LEVEL or INFO)."),
) -> None:
    import os

    from services.settings import check_environment, get_settings

    if config:
        os.environ["FW_CONFIG"] = config
        get_settings.cache_clear()
    check_environment()  # a misspelt FW_* variable stops every command, not only those that read it
    setup_logging(log_level or os.environ.get("FW_LOG_LEVEL", "INFO"))


@app.command("config")
def show_config(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Print the effective configuration (defaults < config file < FW_* environment), secrets masked."""
    from services.settings import get_settings, masked_dump

    data = masked_dump(get_settings())
    if as_json:
        print(json.dumps(data, indent=2))
        return
    from rich.table import Table

    table = Table("setting", "value", "environment variable", title="fusionwatch configuration")

    def walk(prefix: list[str], node) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(prefix + [key], value)
            else:
                path = prefix + [key]
                table.add_row(".".join(path), str(value), "FW_" + "__".join(p.upper() for p in path))

    walk([], data)
    Console().print(table)


db_app = typer.Typer(help="Database schema: migrate SQLite or PostgreSQL with Alembic.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    url: str = typer.Option(None, "--url", help="Database URL (default: FW_DATABASE_URL or the SQLite file under var/)."),
    revision: str = typer.Option("head", help="Target revision."),
    wait_s: float = typer.Option(0.0, "--wait-s", min=0,
                                 help="Wait up to this long for the server to answer (e.g. an init container "
                                      "started with the database); default: one attempt."),
) -> None:
    """Create or migrate the database to the latest schema. Safe to run repeatedly."""
    from services import db
    from services.settings import get_settings

    url = url or get_settings().database.url
    db.upgrade(url, revision, wait_s=wait_s)
    err.print(f"database at {db.safe_url(url)} is at revision [bold]{db.current_revision(url)}[/]")


@db_app.command("current")
def db_current(url: str = typer.Option(None, "--url")) -> None:
    """Show the schema revision of the database."""
    from services import db
    from services.settings import get_settings

    print(db.current_revision(url or get_settings().database.url) or "empty (run `fusionwatch db upgrade`)")


baseline_app = typer.Typer(
    help="Each asset's own normal: where its baseline stands, and marking a new normal after maintenance "
    "or a deliberate change (the asset then learns its baseline again from its next windows).",
    no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("status")
def baseline_status(url: str = typer.Option(None, "--url", help="Database URL (default: FW_DATABASE_URL).")) -> None:
    """Print each asset's baseline phase (learning / watching / pending) and its last new normal."""
    from rich.table import Table

    from services import baselines, db
    from services.settings import get_settings

    engine = db.make_engine(url or get_settings().database.url)
    with db.session_factory(engine)() as session:
        rows = baselines.baselines(session)
    table = Table("asset", "baseline", "windows", "last new normal", title="fusionwatch baselines")
    for b in rows:
        r = b.last_reset
        last = f"{r.requested_at:%Y-%m-%d %H:%M} UTC by {r.requested_by}: {r.reason}" if r else ""
        table.add_row(b.asset, b.phase, str(b.windows), last)
    Console().print(table if rows else "no asset has a baseline yet (no monitor has committed state)")


@baseline_app.command("reset")
def baseline_reset(
    asset: str = typer.Argument(..., help="The asset, e.g. L1-S2."),
    reason: str = typer.Option(..., "--reason", "-r", help="Why (recorded): 'pump replaced', 'camera moved'..."),
    by: str = typer.Option(None, "--by", help="Who (recorded; default: the login name)."),
    url: str = typer.Option(None, "--url", help="Database URL (default: FW_DATABASE_URL)."),
) -> None:
    """Mark an asset's new normal: its monitor restarts its baseline within ~10 s, and while it learns
    only the guard threshold opens an event."""
    import getpass
    import re

    from pydantic import ValidationError

    from schemas import api as shapes
    from schemas.errors import ConfigError
    from services import baselines, db
    from services.settings import get_settings

    try:
        body = shapes.NewNormalIn(actor=by or getpass.getuser(), reason=reason)
    except ValidationError as e:
        raise ConfigError(f"cannot record that new normal: {e.errors()[0]['msg']}") from None
    if not re.fullmatch(shapes.ASSET_PATTERN, asset):
        raise ConfigError(f"{asset!r} is not an asset id (letters, digits, '.', '_', '-'; e.g. L1-S2)")
    engine = db.make_engine(url or get_settings().database.url)
    with db.session_scope(db.session_factory(engine)) as session:
        r = baselines.request_new_normal(session, asset, body.actor, body.reason)
    err.print(f"new normal #{r.id} for {asset} recorded ({r.requested_by}: {r.reason}); "
              "its monitor applies it within ~10 s — `fusionwatch baseline status` shows it learning")


def _register_service_commands() -> None:
    for name in COMMAND_MODULES:
        module_name = f"services.{name}.cli"
        if importlib.util.find_spec(f"services.{name}") is None or importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        for info in module.app.registered_commands:
            app.registered_commands.append(info)
        for group in module.app.registered_groups:
            app.registered_groups.append(group)


_register_service_commands()


def _dependency_failure(e: BaseException) -> str | None:
    """One sentence for a broker or database that stopped answering mid-run (the checks at start
    catch the common cases; these come from deep inside the clients), else None."""
    kind = type(e).__name__
    if type(e).__module__.startswith("kafka") and kind in ("KafkaTimeoutError", "NoBrokersAvailable",
                                                          "KafkaConnectionError"):
        return (f"the Kafka broker stopped answering ({str(e).splitlines()[0][:200]}); check that it runs and "
                "FW_KAFKA_BOOTSTRAP, then start the command again")
    if type(e).__module__.startswith("sqlalchemy") and kind == "OperationalError":
        from services import db
        from services.settings import get_settings

        try:
            url = get_settings().database.url
        except FusionwatchError:
            url = ""
        text = str(getattr(e, "orig", None) or e).strip().splitlines()
        return (f"the database stopped answering ({db.redact(text[0][:200] if text else kind, url)}); check the "
                "server and FW_DATABASE_URL, then start the command again")
    return None


def run() -> None:
    """Console-script entry: turn our own errors, and a dependency gone mid-run, into one clear
    line and exit code 2."""
    try:
        app()
    except FusionwatchError as e:
        err.print(f"[bold red]error:[/] {e}")
        sys.exit(2)
    except Exception as e:
        line = _dependency_failure(e)
        if line is None:
            raise
        err.print(f"[bold red]error:[/] {line}")
        sys.exit(2)


if __name__ == "__main__":
    run()
