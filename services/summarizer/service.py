"""The summarizer as a service: a consumer group on `fw.events`, one summary per closed event.

Where it sits: downstream of the monitor's outbox relay. For each record: parse the structured
CloudEvent, decide (closed → summarize; opened/updated → only when `summarizer.open_after_s` is set
and the event is that old and has no summary yet), merge the message with the event's SQL row,
run `pipeline.Summarizer`, write the `summaries` row, then commit the Kafka offset (at least once;
a replayed event whose summary already post-dates its close is skipped, and a re-render replaces
the same files atomically, so a replay changes nothing a viewer can see).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from pydantic import ValidationError

from schemas.events import AnomalyCloudEvent
from services.kafka import Topics, make_consumer
from services.settings import Settings
from services.summarizer import facts as facts_mod
from services.summarizer import media
from services.summarizer.evidence import EvidenceReader
from services.summarizer.pipeline import Summarizer, SummaryResult
from services.summarizer.render import Layout
from services.summarizer.tts import Speaker

log = logging.getLogger(__name__)

ROW_WAIT_S = 3.0  # the monitor commits the row before it publishes; allow for replication lag


def bootstrap_of(settings: Settings) -> str:
    """The configured cluster, or the embedded broker `fusionwatch broker` / `up` runs."""
    return settings.kafka.bootstrap or f"{settings.broker.host}:{settings.broker.port}"


class SummarizerService:
    def __init__(self, settings: Settings, bootstrap: str, session_factory, topics: Topics | None = None,
                 speaker: Speaker | None = None):
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = topics or Topics.from_settings(settings.kafka)
        self.session_factory = session_factory
        cfg = settings.summarizer
        speaker = speaker or Speaker(cfg.voice, cfg.speech_wpm)
        layout = Layout(cfg.width // 2 * 2, cfg.height // 2 * 2)
        self.reader = EvidenceReader(settings.kafka, bootstrap, frame_box=layout.box_size(layout.camera),
                                     sample_rate=speaker.sample_rate, timeout_s=cfg.read_timeout_s)
        self.summarizer = Summarizer(settings, self.reader, speaker)
        self._consumer = None

    # one record
    def handle(self, value: bytes | None) -> SummaryResult | None:
        try:
            cloud = AnomalyCloudEvent.model_validate_json(value or b"")
        except (ValidationError, ValueError) as e:
            log.warning("skipping an fw.events record that is not an anomaly CloudEvent: %s", str(e)[:200])
            _skipped()
            return None
        data = cloud.data
        if not self._wanted(data):
            return None
        row_facts = self._row_facts(data.event_id)
        if row_facts is None:
            log.warning("event %s is not in the events table; no summary (was the database reset?)", data.event_id)
            _skipped()
            return None
        call = row_facts.call
        facts = facts_mod.merge(facts_mod.from_event_data(data, call), row_facts)
        result = self.summarizer.summarize(facts, self.session_factory)
        log.info("summary of %s (%s, %s): %s in %.2f s%s", data.event_id, data.asset, data.kind, result.status,
                 result.render_s, f", missing {len(result.missing)}" if result.missing else "")
        return result

    def _wanted(self, data) -> bool:
        from schemas.tables import Summary

        with self.session_factory() as session:
            existing = session.get(Summary, data.event_id)
        if data.change == "closed":
            # a replay of the close after a summary was made for it: nothing to do
            return not (existing and existing.status != "failed" and data.end_time
                        and existing.rendered_at >= data.end_time)
        open_after = self.settings.summarizer.open_after_s
        if open_after is None or existing is not None:
            return False
        return (datetime.now(timezone.utc) - data.start_time).total_seconds() >= open_after

    def _row_facts(self, event_id: str):
        deadline = time.monotonic() + ROW_WAIT_S
        while True:
            with self.session_factory() as session:
                found = facts_mod.load(session, event_id)
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    # the loop
    def run(self, stop: threading.Event, on_result: Callable[[SummaryResult], None] | None = None) -> None:
        consumer = make_consumer(self.settings.kafka, self.bootstrap, self.settings.summarizer.group_id,
                                 max_poll_records=10, max_poll_interval_ms=600_000)
        self._consumer = consumer
        swept = media.sweep_partial_files(self.settings.media_dir)  # nothing to sweep when it does not exist yet
        if swept:
            log.warning("removed %d partial media file(s) left by a writer that was killed mid-write", len(swept))
        consumer.subscribe([self.topics.events])
        log.info("summarizer consuming %s as group %s", self.topics.events, self.settings.summarizer.group_id)
        try:
            while not stop.is_set():
                batch = consumer.poll(timeout_ms=500)
                self._report_lag(consumer)
                for tp, records in batch.items():
                    for rec in records:
                        if stop.is_set():
                            return
                        result = self.handle(rec.value)
                        consumer.commit({tp: _offset(rec.offset + 1)})
                        if result is not None and on_result is not None:
                            on_result(result)
                self._report_lag(consumer)
        finally:
            consumer.close()
            self.reader.close()

    @staticmethod
    def _report_lag(consumer) -> None:
        lag = 0
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)  # ListOffsets is wrong on the embedded broker (README.md)
            if highwater is not None:
                lag += max(0, highwater - consumer.position(tp))
        try:
            from services.observability import metrics

            metrics.SUMMARIZER_LAG.set(lag)
        except ImportError:
            pass


def _offset(n: int):
    from kafka.structs import OffsetAndMetadata

    return OffsetAndMetadata(n, "", -1)


def _skipped() -> None:
    try:
        from services.observability import metrics

        metrics.SUMMARIES_RENDERED.labels(status="skipped").inc()
    except ImportError:
        pass

