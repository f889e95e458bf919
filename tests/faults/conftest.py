"""Fault-injection suite fixtures: per-scenario input topics, the fault-free reference run, and the
ledger table printed at the end of the run (`pytest -m faults`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from services.kafka import Topics
from services.settings import KafkaSettings
from tests.faults import inputs as fault_inputs
from tests.faults import ledger
from tests.faults.procs import MonitorProc, wait_for


@dataclass
class ScenarioInput:
    kafka: KafkaSettings
    topics: Topics
    records: list[fault_inputs.InputRecord]
    ends: dict[tuple[str, int], int]

    @property
    def prefix(self) -> str:
        return self.kafka.topic_prefix


@dataclass
class Reference:
    events: list[tuple]
    outbox: list[tuple]
    url: str  # the reference database (copy it before writing: other tests compare against it)
    input: ScenarioInput


def new_input(bootstrap: str) -> ScenarioInput:
    ks = KafkaSettings(topic_prefix=f"f{uuid.uuid4().hex[:10]}.", partitions=fault_inputs.PARTITIONS)
    topics, records = fault_inputs.produce(ks, bootstrap)
    return ScenarioInput(ks, topics, records, fault_inputs.ends(records))


@pytest.fixture(autouse=True)
def _no_leftover_monitors():
    """A test that fails half-way leaves its monitors running (a SIGSTOPped zombie forever):
    kill whatever is still alive, so it cannot load or disturb the next scenario."""
    from tests.faults.procs import STARTED

    yield
    for p in STARTED:
        if p.proc.poll() is None:
            p.kill()
    STARTED.clear()


@pytest.fixture
def scenario_input(broker) -> ScenarioInput:
    return new_input(broker.bootstrap)


@pytest.fixture(scope="session")
def reference(broker, tmp_path_factory) -> Reference:
    """One fault-free run over the same input: the events every scenario must reproduce exactly."""
    from services import db

    work = tmp_path_factory.mktemp("reference")
    inp = new_input(broker.bootstrap)
    url = f"sqlite:///{work / 'reference.db'}"
    db.upgrade(url)
    group = f"ref-{uuid.uuid4().hex[:8]}"
    p = MonitorProc(work, "reference", broker.bootstrap, url, inp.prefix, group)
    wait_for(lambda: ledger.finished(url, group, inp.ends), 180, "the reference run to finish", procs=[p])
    assert p.stop() == 0, p.log()[-3000:]
    events, outbox = ledger.event_rows(url), ledger.outbox_rows(url)
    assert {e[1] for e in events} == set(fault_inputs.FAULTS), f"reference events: {events}"
    lg = ledger.build("fault-free reference", inp.records, url, group,
                      ledger.read_dlq(inp.kafka, broker.bootstrap, inp.topics), events, outbox, [p.stats()])
    lg.assert_clean()
    return Reference(events, outbox, url, inp)


def pytest_terminal_summary(terminalreporter):
    if ledger.REPORTS:
        terminalreporter.section("fault-injection ledger")
        terminalreporter.write_line(ledger.format_table(ledger.REPORTS))
        terminalreporter.write_line("accounted = scored + dead-lettered; re-read = records fetched again after "
                                    "restarts/rebalances (from process counters); dlq redeliv. = at-least-once "
                                    "repeats on fw.dlq")
