"""Log files into contract-v1 log records: a whole file at once, or followed like `tail -F`.

Each line becomes one record, read in the formats sites write (services/ingest/logformats.py:
syslog RFC 3164 / 5424, JSON with the ECS / structlog / contract keys, logfmt, a leading ISO
timestamp, plain text). A line with a level or other contract fields goes out as
`application/json`, anything else as `text/plain`. The event time comes from the line when it
has one (times without a zone are read in `zone`), else from the clock when the line was read.
Lines over the contract's 16 KiB are cut at a character boundary and marked, bytes that are not
UTF-8 are replaced — both counted — so the consumer never has to reject what ingest could repair.

Following survives rotation and truncation: when the path's inode changes, the file shrinks or
its first bytes change, it is reopened from the start, and a line without its newline yet waits
until it is complete. With a PositionTracker the position after each delivered line is saved
(services/ingest/position.py), so a restart resumes where the last run stopped — also when the
file was rotated meanwhile: the rotated file (found by its inode beside the log) is read to its
end first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from datetime import timezone, tzinfo
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from schemas.envelope import ContractLimits, Kind, encode_log
from schemas.errors import ConfigError
from services.ingest.common import IngestStats, RunIds, source_uri
from services.ingest.logformats import parse_line
from services.ingest.media import Record
from services.ingest.position import HEAD_BYTES, SAVE_EVERY_LINES, SAVE_EVERY_S, FilePosition, PositionTracker

log = logging.getLogger(__name__)

TIME_SOURCES = ("auto", "line", "now")
_TRUNCATION_MARK = " …[truncated]"


def check_log_file(path: Path, follow: bool = False) -> None:
    """Fail at once, before any broker is waited for, on a path that cannot be read."""
    if not path.exists():
        hint = f" (nor does its folder {path.parent})" if not path.parent.exists() else ""
        when = " (with --follow it must exist when ingest starts; rotation later is fine)" if follow else ""
        raise ConfigError(f"{path} does not exist{hint}; check the path{when}")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give one log file (start one ingest per file)")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{path} is not readable by this user; add the user to the file's group (often 'adm' for "
                          "/var/log) or run ingest as the log's owner")


def _cut(text: str, limit: int) -> tuple[str, bool]:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, False
    room = limit - len(_TRUNCATION_MARK.encode("utf-8"))
    return raw[:room].decode("utf-8", errors="ignore") + _TRUNCATION_MARK, True


def line_record(raw: bytes, asset: str, source: str, ids: RunIds, time_source: str, stats: IngestStats,
                limits: ContractLimits = ContractLimits(), zone: tzinfo | None = timezone.utc) -> Record | None:
    """One record from one line (without its newline), or None for a line with nothing to say."""
    text = raw.decode("utf-8", errors="replace")
    if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
        stats.replaced_bytes_lines += 1
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    line = parse_line(text, zone)
    if not line.msg.strip():
        return None  # e.g. a syslog header with an empty message: the contract refuses empty lines
    t = line.time if time_source != "now" else None
    if t is None:
        if time_source == "line":
            raise ConfigError(f"--time-source line: no timestamp in line {text[:80]!r}; use --time-source auto")
        t = time.time()
    limit = limits.max_log_bytes
    payload: str | dict[str, Any]
    if line.fields or line.format == "json":
        payload = {"msg": line.msg, **line.fields}
        payload["msg"], cut = _cut(line.msg, limit - 200 - sum(len(v) for v in line.fields.values()))
    else:
        payload, cut = _cut(line.msg, limit)
    stats.truncated_lines += cut
    if line.host:
        source = f"//{line.host}{source}"  # a URI reference: this file, as written on that host
    rid, seq = ids.next(Kind.LOG)
    return Kind.LOG, encode_log(asset, source, t, payload, id=rid, sequence=seq), t


def log_records(path: str | Path, asset: str, stats: IngestStats, follow: bool = False, from_start: bool | None = None,
                time_source: str = "auto", stop: threading.Event | None = None, poll_s: float = 0.2,
                ids: RunIds | None = None, zone: tzinfo | None = timezone.utc,
                tracker: PositionTracker | None = None) -> Iterator[Record]:
    """Records for the lines of a file; with follow, keeps yielding new lines until `stop` is set.
    With a tracker (follow only), resumes from its saved position and reports each line's end."""
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
                rec = line_record(raw, asset, source, ids, time_source, stats, zone=zone)
                if rec is not None:
                    yield rec
        return
    for raw, pos in follow_lines(path, bool(from_start), stop, poll_s, tracker):
        rec = line_record(raw, asset, source, ids, time_source, stats, zone=zone)
        if tracker is not None:
            tracker.advance(pos, rec is not None)
        if rec is not None:
            yield rec


def _open(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None  # not created yet, or mid-rotation


def _find_rotated(path: Path, saved: FilePosition) -> BinaryIO | None:
    """The file the saved position belongs to, renamed beside the log (app.log.1, app.log-20261205)."""
    try:
        device = path.parent.stat().st_dev
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]
    except OSError:
        return None
    for p in sorted(candidates):
        try:
            st = p.stat()
        except OSError:
            continue
        if st.st_ino == saved.inode and st.st_dev == device and st.st_size >= saved.offset:
            fh = open(p, "rb")
            if saved.same_file(fh):
                return fh
            fh.close()
    return None


def _resume(path: Path, saved: FilePosition | None) -> tuple[BinaryIO | None, int, bool]:
    """(a file to read first and where, whether the log at `path` is then read from its start)."""
    if saved is None:
        return None, 0, False
    current = _open(path)
    if current is not None:
        if os.fstat(current.fileno()).st_ino == saved.inode and saved.same_file(current):
            size = os.fstat(current.fileno()).st_size
            if size >= saved.offset:
                log.info("resuming %s at byte %d (saved position)", path, saved.offset)
                return current, saved.offset, True
            log.info("%s is shorter than the saved position (truncated meanwhile): reading it from its start", path)
            return current, 0, True
        current.close()
    old = _find_rotated(path, saved)
    if old is not None:
        log.info("%s was rotated since the last run: reading the rest of %s first", path, Path(old.name).name)
        return old, saved.offset, True
    log.warning("%s was replaced since the last run and the old file is not beside it (compressed or deleted): "
                "lines written to it after the saved position are lost; reading the new file from its start", path)
    return None, 0, True


class _OpenLog:
    """A followed file: its handle, inode, and its first bytes as read (to tell a rewrite)."""

    def __init__(self, fh: BinaryIO, offset: int, rotated: bool = False):
        self.fh, self.rotated = fh, rotated
        self.inode = os.fstat(fh.fileno()).st_ino
        fh.seek(offset)
        self.head = os.pread(fh.fileno(), min(fh.tell(), HEAD_BYTES), 0)

    def read_line(self) -> bytes:
        chunk = self.fh.readline()
        if len(self.head) < HEAD_BYTES and self.fh.tell() - len(chunk) == len(self.head):
            self.head = (self.head + chunk)[:HEAD_BYTES]
        return chunk

    def position(self) -> FilePosition:
        """Just past what was read (the caller calls this at line ends only)."""
        offset = self.fh.tell()
        head = self.head[:min(offset, HEAD_BYTES)]
        return FilePosition(self.inode, offset, len(head), hashlib.sha256(head).hexdigest())

    def replaced(self, path: Path) -> bool:
        """At the end: was the log rotated (a new inode at the path), truncated (shorter than our
        position) or rewritten in place (its first bytes differ from those read)?"""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False  # mid-rotation: keep the old file until a new one appears
        if st.st_ino != self.inode or st.st_size < self.fh.tell():
            return True
        return os.pread(self.fh.fileno(), len(self.head), 0) != self.head

    def close(self) -> None:
        self.fh.close()


def follow_lines(path: Path, from_start: bool, stop: threading.Event, poll_s: float = 0.2,
                 tracker: PositionTracker | None = None) -> Iterator[tuple[bytes, FilePosition]]:
    """Complete lines of a followed file, each with the position just past it, until `stop`."""
    checkpoint: Callable[[], None] = tracker.checkpoint if tracker is not None else (lambda: None)
    fh, offset, from_start_after = _resume(path, tracker.saved if tracker is not None else None)
    from_start = from_start or from_start_after
    cur = _OpenLog(fh, offset, rotated=Path(fh.name) != path) if fh is not None else None
    pending = b""
    lines, saved_at = 0, time.monotonic()
    try:
        while not stop.is_set():
            if cur is None:
                fh = _open(path)
                if fh is None:
                    stop.wait(poll_s)
                    continue
                cur = _OpenLog(fh, 0 if from_start else os.fstat(fh.fileno()).st_size)
                pending = b""
                from_start = True  # files that appear later (rotation) are read from their start
            chunk = cur.read_line()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    line, pending = pending, b""
                    yield line, cur.position()
                    lines += 1
                    if lines % SAVE_EVERY_LINES == 0 or time.monotonic() - saved_at > SAVE_EVERY_S:
                        checkpoint()
                        saved_at = time.monotonic()
                continue
            if cur.rotated:  # the rest of a rotated-away file is read: on to the log itself
                cur.close()
                cur, pending = None, b""
                continue
            checkpoint()  # caught up: every line handed out was sent
            saved_at = time.monotonic()
            if cur.replaced(path):
                cur.close()
                cur, pending = None, b""
                continue
            stop.wait(poll_s)
    finally:
        if cur is not None:
            cur.close()
