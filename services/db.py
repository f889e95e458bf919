"""Database access: engines, sessions, migrations. The only module that knows connection
details; services write through `session_scope` and keep their queries next to their job."""

from __future__ import annotations

import json
import logging
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, unquote

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from schemas.errors import ConfigError, DependencyUnavailable

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent / "schemas" / "migrations"


# query parameters of a database URL that carry secrets (libpq: password, sslpassword; others: pwd…)
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|credential", re.I)
MASK = "***"


def _json_strict(value) -> str:
    # NaN/inf are not JSON: PostgreSQL refuses them (and the whole transaction) and the review
    # page's JSON.parse fails on what SQLite would have stored. Refuse them on every backend alike.
    return json.dumps(value, allow_nan=False)


def url_secrets(url) -> list[str]:
    """Every secret a database URL carries: the password, and query parameters named like one."""
    text = str(url) if not hasattr(url, "render_as_string") else url.render_as_string(hide_password=False)
    out = []
    userinfo = re.match(r"^[^:/]+://([^@/?#]*)@", text)
    if userinfo and ":" in userinfo.group(1):
        out.append(userinfo.group(1).split(":", 1)[1])
    query = text.split("?", 1)[1] if "?" in text else ""
    out += [v for k, v in parse_qsl(query, keep_blank_values=False) if _SECRET_PARAM.search(k)]
    return [x for s in out if s for x in {s, unquote(s)}]


def safe_url(url) -> str:
    """A database URL fit to print: the password in the user part and in every query parameter
    named like a secret (`?password=`, `sslpassword`, …) replaced with ***."""
    text = str(url) if not hasattr(url, "render_as_string") else url.render_as_string(hide_password=False)
    text = re.sub(r"^([^:/]+://[^:@/?#]*:)[^@/?#]*@", rf"\1{MASK}@", text)
    if "?" in text:
        base, query = text.split("?", 1)
        parts = []
        for part in query.split("&"):
            name, eq, _ = part.partition("=")
            parts.append(f"{name}={MASK}" if eq and _SECRET_PARAM.search(unquote(name)) else part)
        text = base + "?" + "&".join(parts)
    return text


def redact(message: str, url) -> str:
    """`message` (e.g. a driver's error) with every secret of `url` replaced by ***."""
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        message = message.replace(secret, MASK)
    return message


_URL_HINT = ("write sqlite:///./var/fusionwatch.db or postgresql://USER@HOST:5432/DATABASE "
             "(FW_DATABASE_URL, or --url)")


def engine_url(url: str) -> str:
    """The SQLAlchemy URL for a database URL as people write it (postgres:// included, as libpq
    and hosting providers write it), or a ConfigError that says how to write one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend, _, driver = make_url(url).drivername.partition("+")
    except ArgumentError:
        raise ConfigError(f"{safe_url(url)!r} is not a database URL; {_URL_HINT}") from None
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return url
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise ConfigError(f"the database URL asks for the {driver} driver, which fusionwatch does not ship "
                              "(it uses psycopg 3); write postgresql://USER@HOST:5432/DATABASE")
        return re.sub(r"^[^:]+://", "postgresql+psycopg://", url, count=1)
    raise ConfigError(f"{backend}:// is not a database fusionwatch supports (SQLite and PostgreSQL); {_URL_HINT}")


def make_engine(url: str) -> Engine:
    url = engine_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=_json_strict)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _):
            cur = dbapi_conn.cursor()
            # WAL lets the API read while the monitor writes; NORMAL sync is durable at commit in WAL.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5}, json_serializer=_json_strict)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with factory() as session:
        with session.begin():
            yield session


def wait_for_database(engine: Engine, timeout_s: float = 30.0, url: str | None = None) -> None:
    """Bounded wait for the server to answer; `url` is the database URL as the user wrote it."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except OperationalError as e:
            if time.monotonic() >= deadline:
                within = f" within {timeout_s:.0f} s" if timeout_s > 0 else ""
                raise DependencyUnavailable(
                    f"the database at {safe_url(url or engine.url)} did not answer{within} ({_first_line(e, engine.url)}); "
                    "check FW_DATABASE_URL and that the server runs"
                ) from None
            log.warning("database not reachable yet, retrying in %.1f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _first_line(e: Exception, url) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return redact(text[0] if text else type(e).__name__, url)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head", wait_s: float = 0.0) -> None:
    """Migrate to `revision`; waits up to `wait_s` for the server first (0: one attempt)."""
    from alembic import command

    engine = make_engine(url)  # checks the URL, creates the SQLite parent folder
    try:
        wait_for_database(engine, wait_s, url)
    finally:
        engine.dispose()
    try:
        command.upgrade(alembic_config(url), revision)
    except OperationalError as e:  # the server went away mid-migration, or refused a statement
        raise DependencyUnavailable(f"migrating the database at {safe_url(url)} failed ({_first_line(e, url)}); "
                                    "check the server, then run `fusionwatch db upgrade` again (it is safe to repeat)") from None


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as e:
        raise DependencyUnavailable(f"the database at {safe_url(url)} did not answer ({_first_line(e, url)}); "
                                    "check FW_DATABASE_URL and that the server runs") from None
    finally:
        engine.dispose()
