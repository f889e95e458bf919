"""Errors a person can act on, through the real `fusionwatch` command (a subprocess, as a shell
runs it): local inputs are checked before any broker or database is waited for, a configuration
or dependency error is one sentence that says what to do (exit code 2, no traceback, no client
retry log), and a misspelt FW_* setting is refused with the closest valid name."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "models" / "pretrained" / "factory-standard"


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fusionwatch(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FW_")}
    base |= {"FW_VAR_DIR": str(tmp_path / "var"), "FW_DATABASE_URL": f"sqlite:///{tmp_path / 'fw.db'}",
             "FW_METRICS__PORT": "0", "COLUMNS": "400"}  # one line per message: no wrapping to match across
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=base | env,
                          capture_output=True, text=True, timeout=120)


def one_sentence(r: subprocess.CompletedProcess) -> str:
    """The error line of a failed command, after checking it failed the way a person can act on."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and " ERROR " not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_ingest_logs_reports_a_missing_file_before_waiting_for_the_broker(tmp_path):
    r = fusionwatch(tmp_path, "ingest", "logs", "/nonexistent.log", "--asset", "L1-S1", "--bootstrap",
                    f"127.0.0.1:{closed_port()}")
    assert "/nonexistent.log does not exist; check the path" in one_sentence(r)
    assert "Kafka" not in r.stderr  # the broker was never tried
    r = fusionwatch(tmp_path, "ingest", "logs", str(tmp_path), "--asset", "L1-S1", "--follow")
    assert r.returncode == 2 and "is a directory" in r.stderr and "Traceback" not in r.stderr  # typer's own check
    log = tmp_path / "a.log"
    log.write_text("x\n")
    r = fusionwatch(tmp_path, "ingest", "logs", str(log), "--asset", "L1-S1", "--timezone", "Mars/Olympus")
    assert "--timezone 'Mars/Olympus' is not a time zone" in one_sentence(r)


def test_monitor_without_a_broker_says_so_in_one_line(tmp_path):
    port = closed_port()
    r = fusionwatch(tmp_path, "monitor", "--checkpoint", str(CHECKPOINT), "--device", "cpu",
                    FW_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}", FW_KAFKA__CONNECT_TIMEOUT_S="1")
    line = one_sentence(r)
    assert f"no Kafka broker answers at 127.0.0.1:{port} (Connection refused) after 1 s" in line
    assert "fusionwatch broker" in line and "FW_KAFKA_BOOTSTRAP" in line
    # a missing checkpoint is a local input: reported first, with no broker either
    r = fusionwatch(tmp_path, "monitor", "--checkpoint", str(tmp_path / "no-model"),
                    FW_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}", FW_KAFKA__CONNECT_TIMEOUT_S="1")
    assert "no model checkpoint in" in one_sentence(r) and "Kafka" not in r.stderr
    r = fusionwatch(tmp_path, "monitor", "--checkpoint", str(CHECKPOINT), FW_KAFKA_BOOTSTRAP="kafka-without-port")
    assert "Kafka bootstrap 'kafka-without-port' is not HOST:PORT" in one_sentence(r)


def test_db_upgrade_explains_bad_and_refused_database_urls(tmp_path):
    r = fusionwatch(tmp_path, "db", "upgrade", FW_DATABASE_URL="notaurl")
    assert "'notaurl' is not a database URL; write sqlite:///" in one_sentence(r)
    r = fusionwatch(tmp_path, "db", "upgrade", "--url", "mysql://u@db/x")
    assert "mysql:// is not a database fusionwatch supports" in one_sentence(r)
    r = fusionwatch(tmp_path, "db", "upgrade", "--url", "postgresql+psycopg2://u@db/x")
    assert "psycopg2 driver" in one_sentence(r)
    port = closed_port()
    r = fusionwatch(tmp_path, "db", "upgrade", "--url", f"postgresql://fw:s3cret-pw@127.0.0.1:{port}/fw")
    line = one_sentence(r)
    assert f"the database at postgresql://fw:***@127.0.0.1:{port}/fw did not answer" in line
    assert "Connection refused" in line and "s3cret-pw" not in r.stderr + r.stdout


def test_db_upgrade_accepts_the_postgres_scheme(tmp_path, pg_url):
    url = pg_url.replace("postgresql://", "postgres://", 1)
    r = fusionwatch(tmp_path, "db", "upgrade", "--url", url)
    assert r.returncode == 0, r.stderr
    assert f"database at {url} is at revision" in r.stderr


def test_a_misspelt_setting_is_refused_with_the_closest_valid_name(tmp_path):
    r = fusionwatch(tmp_path, "config", FW_MONITOR__WINDOW_SS="3")
    assert "FW_MONITOR__WINDOW_SS (environment variable) is not a fusionwatch setting; did you mean " \
           "FW_MONITOR__WINDOW_S?" in one_sentence(r)
    r = fusionwatch(tmp_path, "db", "current", FW_DATABASE_URI="sqlite:///x.db")
    assert "did you mean FW_DATABASE_URL?" in one_sentence(r)
    toml = tmp_path / "site.toml"
    toml.write_text("[monitor]\nwindow_s = 3\nmax_future_skew = 5\n")
    r = fusionwatch(tmp_path, "--config", str(toml), "config")
    assert "monitor.max_future_skew (in " in one_sentence(r) and "did you mean monitor.max_future_skew_s?" in r.stderr
    # the real names, the short aliases and the test suite's own variables pass
    toml.write_text("[monitor]\nwindow_s = 3\n")
    r = fusionwatch(tmp_path, "--config", str(toml), "config", "--json", FW_MONITOR__HOP_S="0.5",
                    FW_KAFKA_BOOTSTRAP="127.0.0.1:1", FW_TEST_PG_URL="x")
    assert r.returncode == 0, r.stderr
    assert '"window_s": 3.0' in r.stdout and '"hop_s": 0.5' in r.stdout and '"bootstrap": "127.0.0.1:1"' in r.stdout
