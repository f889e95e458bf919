"""Keep the embedded broker up, its topics created, and its memory bounded."""

from __future__ import annotations

import logging
import threading

from services.broker.embedded import EmbeddedBroker
from services.kafka import Topics, ensure_topics
from services.lifecycle import install_stop_handlers
from services.settings import Settings

log = logging.getLogger(__name__)


class BrokerSupervisor:
    """Start Tansu, create the topics, and restart it (with fresh topics) past the memory cap.

    Tansu's memory storage ignores retention, so a long demo grows without bound. A restart
    empties the log; consumers then find their stored offsets past the new end and restart from
    the earliest record (see the monitor's offset-reset handling). That is the embedded
    default's bound: at most `broker.max_rss_mb` of RAM, never durability.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        b = settings.broker
        log_path = settings.var_dir / "broker.log"
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker(host=b.host, port=b.port, startup_timeout_s=b.startup_timeout_s, log_path=log_path)
        self.restarts = 0

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def start(self) -> Topics:
        self.broker.start()
        return ensure_topics(self.settings.kafka, self.bootstrap)

    def check(self) -> None:
        """Call periodically: restart a dead broker, or one past its memory cap."""
        if not self.broker.alive():
            log.error("embedded broker died; restarting it (its records are lost)")
        elif self.broker.rss_mb() > self.settings.broker.max_rss_mb:
            log.warning("embedded broker uses %.0f MB > %d MB cap; restarting it with empty topics",
                        self.broker.rss_mb(), self.settings.broker.max_rss_mb)
            self.broker.stop()
        else:
            return
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        self.broker.stop()


def serve_broker(settings: Settings, stop: threading.Event | None = None) -> None:
    stop = stop or install_stop_handlers()
    sup = BrokerSupervisor(settings)
    topics = sup.start()
    log.info("broker ready at %s with topics %s; Ctrl-C to stop", sup.bootstrap, ", ".join(topics.all()))
    try:
        while not stop.wait(5.0):
            sup.check()
    finally:
        sup.stop()
