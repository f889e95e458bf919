"""Log files into contract-v1 log records: a whole file at once, or followed like `tail -F`.

Each line becomes one record. JSON lines that carry a "msg" go out as `application/json` (with
level/code/serial/speaker kept); anything else as `text/plain`. The event time comes from the line
when it has one (a leading ISO 8601 / RFC 3339 timestamp, moved out of the message into ce_time, or
a "time"/"ts"/"timestamp" field in JSON, epoch seconds or text), else from the clock when the line
was read. Lines over the
contract's 16 KiB are cut at a character boundary and marked, bytes that are not UTF-8 are
replaced — both counted — so the consumer never has to reject what ingest could repair.

Following survives rotation and truncation: when the path's inode changes or the file shrinks,
it is reopened from the start, and a line without its newline yet waits until it is complete.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from schemas.envelope import ContractLimits, Kind, encode_log
from schemas.errors import ConfigError
from services.ingest.common import IngestStats, RunIds, source_uri
from services.ingest.media import Record

TIME_SOURCES = ("auto", "line", "now")
_LEADING_TS = re.compile(
    r"^\[?(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:Z|z|[+-]\d{2}:?\d{2})?)\]?\s*[-|:]?\s*")
_JSON_TIME_FIELDS = ("time", "ts", "timestamp", "@timestamp")
_TRUNCATION_MARK = " …[truncated]"


def parse_line_time(text: str) -> float | None:
    """Epoch seconds from an ISO 8601 / RFC 3339 timestamp; naive times are taken as UTC."""
    text = text.strip().replace(",", ".")
    m = re.match(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|z|[+-]\d{2}:?\d{2})?$", text)
    if not m:
        return None
    frac = (m.group(3) or "")[:7]
    zone = m.group(4) or "+00:00"
    zone = "+00:00" if zone in ("Z", "z") else (zone if ":" in zone else zone[:3] + ":" + zone[3:])
    try:
        return datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{frac}{zone}").astimezone(timezone.utc).timestamp()
    except ValueError:
        return None


def _json_time(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        return v / 1000.0 if v > 1e11 else v  # epoch milliseconds are common in JSON logs
    if isinstance(value, str):
        return parse_line_time(value)
    return None


def _cut(text: str, limit: int) -> tuple[str, bool]:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, False
    room = limit - len(_TRUNCATION_MARK.encode("utf-8"))
    return raw[:room].decode("utf-8", errors="ignore") + _TRUNCATION_MARK, True


def line_record(raw: bytes, asset: str, source: str, ids: RunIds, time_source: str, stats: IngestStats,
                limits: ContractLimits = ContractLimits()) -> Record | None:
    """One record from one line (without its newline), or None for a blank line."""
    text = raw.decode("utf-8", errors="replace")
    if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
        stats.replaced_bytes_lines += 1
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    t: float | None = None
    payload: str | dict[str, Any] = text
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("msg") or obj.get("message"), str):
            msg = obj.get("msg") or obj.get("message")
            payload = {"msg": msg}
            for name in ("level", "code", "serial", "speaker"):
                v = obj.get(name)
                if v is not None:
                    payload[name] = str(v)[:128]
            if time_source != "now":
                t = next((_json_time(obj[f]) for f in _JSON_TIME_FIELDS if f in obj), None)
    if isinstance(payload, str):
        m = _LEADING_TS.match(text)
        if m and m.end() < len(text):
            if time_source != "now":
                t = parse_line_time(m.group("ts"))
            # the timestamp lives in ce_time; the message keeps only what was said, so repeated lines stay equal
            payload = text[m.end():]
    if t is None:
        if time_source == "line":
            raise ConfigError(f"--time-source line: no timestamp in line {text[:80]!r}; use --time-source auto")
        t = time.time()
    limit = limits.max_log_bytes
    if isinstance(payload, dict):
        payload["msg"], cut = _cut(payload["msg"], limit - 200)  # room for the JSON around it
    else:
        payload, cut = _cut(payload, limit)
    stats.truncated_lines += cut
    rid, seq = ids.next(Kind.LOG)
    return Kind.LOG, encode_log(asset, source, t, payload, id=rid, sequence=seq), t


def log_records(path: str | Path, asset: str, stats: IngestStats, follow: bool = False, from_start: bool | None = None,
                time_source: str = "auto", stop: threading.Event | None = None, poll_s: float = 0.2,
                ids: RunIds | None = None) -> Iterator[Record]:
    """Records for the lines of a file; with follow, keeps yielding new lines until `stop` is set."""
    if time_source not in TIME_SOURCES:
        raise ConfigError(f"--time-source must be one of {', '.join(TIME_SOURCES)}")
    path = Path(path)
    ids = ids or RunIds()
    stop = stop or threading.Event()
    source = source_uri("logs", str(path))
    if not follow:
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            raise ConfigError(f"{path} does not exist") from None
        with fh:
            for raw in fh:
                rec = line_record(raw, asset, source, ids, time_source, stats)
                if rec is not None:
                    yield rec
        return
    from_start = False if from_start is None else from_start
    fh, inode, pending = None, None, b""
    while not stop.is_set():
        if fh is None:
            try:
                fh = open(path, "rb")
            except FileNotFoundError:
                stop.wait(poll_s)  # not created yet (or mid-rotation)
                continue
            inode = os.fstat(fh.fileno()).st_ino
            if not from_start:
                fh.seek(0, os.SEEK_END)
            from_start = True  # files that appear later (rotation) are read from their start
        chunk = fh.readline()
        if chunk:
            pending += chunk
            if pending.endswith(b"\n"):
                rec = line_record(pending, asset, source, ids, time_source, stats)
                pending = b""
                if rec is not None:
                    yield rec
            continue
        # at the end: rotated (new inode at the path) or truncated (shorter than our position)?
        try:
            st = os.stat(path)
            if st.st_ino != inode or st.st_size < fh.tell():
                fh.close()
                fh, pending = None, b""
                continue
        except FileNotFoundError:
            pass
        stop.wait(poll_s)
    if fh is not None:
        fh.close()
