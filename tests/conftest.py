"""Shared fixtures: real parts, unique names.

- `broker`: one real Tansu process per test session on a free port.
- `make_topics`: a factory for uniquely prefixed, pre-created topic sets (tests never share state).
- `sqlite_url` / `pg_url` / `db_url`: migrated databases — a SQLite file in a temp dir, and a fresh
  database on the running PostgreSQL (127.0.0.1:5432) per test; `db_url` runs a test on both.
"""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PG_ADMIN_URL = os.environ.get("FW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    from services.broker.embedded import EmbeddedBroker, free_port

    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(port=free_port(), log_path=log_path) as b:
        yield b


@pytest.fixture
def kafka_settings():
    from services.settings import KafkaSettings

    return KafkaSettings(partitions=4)


@pytest.fixture
def make_topics(broker, kafka_settings):
    """make_topics(partitions=4) -> (KafkaSettings with a unique prefix, Topics), topics created."""
    from services.kafka import ensure_topics

    def _make(partitions: int = 4):
        ks = kafka_settings.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}.", "partitions": partitions})
        return ks, ensure_topics(ks, broker.bootstrap)

    return _make


@pytest.fixture
def unique_group():
    return lambda: f"g-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sqlite_url(tmp_path):
    from services.db import upgrade

    url = f"sqlite:///{tmp_path / 'fw.db'}"
    upgrade(url)
    return url


def _pg_available() -> bool:
    import psycopg

    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=2).close()
        return True
    except Exception:
        return False


@pytest.fixture
def pg_url():
    """A fresh, migrated PostgreSQL database for this test, dropped afterwards."""
    import psycopg

    from services.db import upgrade

    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; CI must run against it")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    name = f"fw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    from sqlalchemy.pool import NullPool  # noqa: F401  (engines are disposed by their owners)

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def pytest_terminal_summary(terminalreporter):
    """The poison suite's ledger (tests/test_poison.py), when it ran."""
    import sys

    mod = sys.modules.get("tests.test_poison")
    if mod is not None and mod.LEDGERS:
        terminalreporter.section("poison ledger")
        for line in mod.LEDGERS:
            terminalreporter.write_line(line)
