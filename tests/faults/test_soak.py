"""One hour at nominal load (marked `soak`: never part of the default run).

    .venv/bin/python -m pytest -m soak tests/faults/test_soak.py -s      # FW_SOAK_MINUTES=60 by default
"""

from __future__ import annotations

import os

import pytest

from tests.faults.soak import soak

# only `soak`: `pytest -m faults` must not pick up an hour-long run
pytestmark = [pytest.mark.soak]
MINUTES = float(os.environ.get("FW_SOAK_MINUTES", "60"))


@pytest.mark.timeout(int(MINUTES * 60 + 600))
def test_soak_no_growth_in_memory_fds_or_lag(tmp_path):
    result = soak(MINUTES, workdir=tmp_path, every_s=max(5.0, MINUTES * 60 / 240))
    print({k: v for k, v in result.items() if k != "samples"})
    assert result["monitor_exit_code"] == 0
    # memory: under 20 MB/h of growth over the second half (a leak of one window per second, ~50 kB,
    # would show as ~180 MB/h); fds and threads: flat
    assert result["second_half_rss_slope_mb_per_h"] < 20, result["second_half_rss_slope_mb_per_h"]
    assert result["second_half_fd_change"] <= 2
    assert result["second_half_thread_change"] <= 1
    # lag: the monitor keeps up. Committed lag includes the windows still open (2 s window + 2 s
    # lateness, ~4 s of input); at 56 records/s anything under 10 s of input is keeping up.
    assert result["end"]["lag_records"] < 10 * 56
