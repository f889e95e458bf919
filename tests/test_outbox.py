"""The outbox relay marks a row sent only once the broker has taken it."""

from __future__ import annotations

import json

from kafka.errors import KafkaTimeoutError
from kafka.future import Future
from sqlalchemy import select

from schemas.tables import Outbox
from services import db
from services.monitor.outbox import OutboxRelay


class FlakyProducer:
    """Takes every record but the ones listed as failing; records what it was given."""

    def __init__(self, failing: set[int]):
        self.failing, self.sent = failing, []

    def send(self, topic, key, value, headers):
        future = Future()
        n = len(self.sent)
        self.sent.append(value)
        if n in self.failing:
            future.failure(KafkaTimeoutError("expired in the producer's buffer"))
        else:
            future.success(None)
        return future

    def flush(self):
        pass


def test_rows_after_a_failed_delivery_stay_unsent_and_go_again_in_order(sqlite_url):
    engine = db.make_engine(sqlite_url)
    with db.session_factory(engine)() as s:
        s.add_all([Outbox(event_id=f"e{i}", revision=0, change="opened", payload={"subject": "L1-S1", "n": i})
                   for i in range(4)])
        s.commit()
    flaky = FlakyProducer(failing={1})  # the second record of the first round fails
    relay = OutboxRelay(engine, flaky, "fw.events")
    assert relay.relay_once() == 1  # only the first is marked: the rest keep their order
    assert relay.relay_once() == 3  # the next round sends the other three
    assert relay.relay_once() == 0
    with db.session_factory(engine)() as s:
        assert all(o.sent_at is not None for o in s.scalars(select(Outbox)))
    assert [json.loads(v)["n"] for v in flaky.sent] == [0, 1, 2, 3, 1, 2, 3]
    engine.dispose()
