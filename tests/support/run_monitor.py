"""Run one monitor process with the test scorer (for crash, rebalance and fault tests).

python -m tests.support.run_monitor BOOTSTRAP DB_URL TOPIC_PREFIX GROUP [PARTITIONS]
"""

from __future__ import annotations

import sys

from services import db
from services.kafka import Topics
from services.lifecycle import install_stop_handlers
from services.monitor.service import Monitor
from services.settings import KafkaSettings, Settings
from tests.support.scorers import BrightnessScorer


def main() -> None:
    bootstrap, url, prefix, group = sys.argv[1:5]
    partitions = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    ks = KafkaSettings(topic_prefix=prefix, partitions=partitions)
    settings = Settings(kafka=ks)
    engine = db.make_engine(url)
    stop = install_stop_handlers()
    Monitor(settings, bootstrap, engine, BrightnessScorer(), Topics.from_settings(ks), group_id=group).run(stop)


if __name__ == "__main__":
    main()
