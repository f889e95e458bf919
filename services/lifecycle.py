"""Process lifecycle shared by every service: one stop flag set by SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import threading


def install_stop_handlers() -> threading.Event:
    """Return an Event that is set on SIGINT or SIGTERM (call from the main thread)."""
    stop = threading.Event()

    def _handler(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    return stop
