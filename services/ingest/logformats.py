"""One log line as sites write it → its time, message and level.

Recognised, line by line (a file may mix them):

- syslog RFC 5424 (`<165>1 2026-03-01T08:00:00.003Z host app 1234 ID47 [sd id="x"] msg`) and
  RFC 3164 (`<34>Mar  1 08:00:00 host app[1234]: msg`, also without `<PRI>` as rsyslog writes
  files): the timestamp becomes the event time, the severity the level, MSGID the code; the host
  is returned for ce_source, the app stays in front of the message (`app: msg`) and the pid is
  dropped, so a line repeated by a restarted process stays the same text;
- JSON objects with the common key sets: the contract's own `msg`, ECS (`@timestamp`, `message`,
  `log.level`), structlog (`event`, `timestamp`/`ts`, `level`); fields outside those sets that are
  not transport metadata are kept as `key=value` after the message;
- logfmt (`time=… level=… msg="…"`), alone or after a leading timestamp;
- a leading ISO 8601 / RFC 3339 timestamp (`2026-03-01 08:00:00,250 INFO …`, also in brackets);
- anything else: plain text, timed by the reader.

No well-kept Python library parses RFC 3164 (the PyPI parsers for 5424 and logfmt were last
released in 2018-2019), so this is a small parser with the RFCs' grammar and the files' quirks.
Times without a zone (RFC 3164, naive ISO) are read in `zone`; RFC 3164 has no year, so the
year that puts the line nearest before the reference time (at most a day ahead) is taken.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

# the contract's optional JSON fields (docs/contract.md), at most 128 characters each
CONTRACT_FIELDS = ("level", "code", "serial", "speaker")
# syslog severities 0-7 as level names the model reads (models/features.py LEVELS has no
# emergency or alert: they are critical there too)
SYSLOG_LEVELS = ("CRITICAL", "CRITICAL", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")
# pino / bunyan write numeric levels
_NUMERIC_LEVELS = {10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL"}

_MSG_KEYS = ("msg", "message", "event")  # contract / ECS / structlog, in that order
_TIME_KEYS = ("@timestamp", "timestamp", "time", "ts")
_HOST_KEYS = ("host.hostname", "host.name", "hostname", "host")  # ECS, then the usual flat names
_LEVEL_KEYS = ("level", "log.level", "levelname", "severity", "lvl")
# transport metadata, not what the line says: left out of the message
_META_KEYS = {"pid", "tid", "thread", "thread_name", "threadName", "process", "process_name", "processName",
              "hostname", "host", "filename", "lineno", "func_name", "funcName", "module", "pathname",
              "logger", "logger_name", "name", "caller", "stacklevel", "taskName"}
_META_PREFIXES = ("ecs.", "log.", "process.", "host.", "service.", "agent.", "trace.", "span.", "transaction.",
                  "event.", "data_stream.", "container.", "kubernetes.", "cloud.", "labels.")

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_ISO = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:[Zz]|[+-]\d{2}:?\d{2})?"
_LEADING_ISO = re.compile(rf"^\[?(?P<ts>{_ISO})\]?\s*[-|:]?\s*")
_PRI = re.compile(r"^<(?P<pri>\d{1,3})>")
_RFC5424 = re.compile(
    rf"^1 (?P<ts>-|{_ISO}) (?P<host>\S{{1,255}}) (?P<app>\S{{1,48}}) (?P<procid>\S{{1,128}}) (?P<msgid>\S{{1,32}}) ")
_RFC3164_TS = re.compile(r"^(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (?P<day>[ \d]\d) "
                         r"(?P<hms>\d{2}:\d{2}:\d{2})(?P<frac>\.\d{1,6})? ")
# TAG[pid]: — the app name (RFC 3164 says alphanumerics; real ones carry '.', '-', '/', '_')
_TAG = re.compile(r"^(?P<app>[\w./@-]{1,64})(?:\[(?P<pid>[^\]\s]{1,32})\])?: ?")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$")
_LOGFMT_PAIR = re.compile(r'\s*(?P<key>[A-Za-z_@][\w.@/-]*)=(?:"(?P<q>(?:[^"\\]|\\.)*)"|(?P<v>[^\s"]*))(?=\s|$)')
_SD_PARAM = re.compile(r'\s*(?P<name>[^=\s\]"]{1,32})="(?P<value>(?:[^"\\]|\\.)*)"')
_STANDARD_SD_IDS = {"timeQuality", "origin", "meta"}  # RFC 5424 §7: about the transport, not the event


@dataclass
class ParsedLine:
    msg: str
    time: float | None = None
    fields: dict[str, str] = field(default_factory=dict)  # the contract's level/code/serial/speaker
    host: str | None = None
    format: str = "text"  # text, iso, json, logfmt, rfc3164, rfc5424


def parse_zone(name: str) -> tzinfo | None:
    """`UTC`, `local` (None: this machine's zone, daylight saving included) or an IANA name such
    as Europe/Berlin."""
    from schemas.errors import ConfigError

    if name.upper() == "UTC":
        return timezone.utc
    if name == "local":
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--timezone {name!r} is not a time zone: use UTC, local or an IANA name such as "
                          "Europe/Berlin") from None


def parse_iso(text: str, zone: tzinfo | None = timezone.utc) -> float | None:
    """Epoch seconds from an ISO 8601 / RFC 3339 timestamp; a time without a zone is read in `zone`."""
    m = re.match(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:[.,](\d+))?([Zz]|[+-]\d{2}:?\d{2})?$", text.strip())
    if not m:
        return None
    frac = (m.group(3) or "")[:6]
    try:
        t = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{'.' + frac.ljust(6, '0') if frac else ''}")
    except ValueError:
        return None
    z = m.group(4)
    if z is None:
        return _localize(t, zone)
    if z in ("Z", "z"):
        return t.replace(tzinfo=timezone.utc).timestamp()
    sign = 1 if z[0] == "+" else -1
    hh, mm = int(z[1:3]), int(z[-2:])
    return t.replace(tzinfo=timezone(sign * timedelta(hours=hh, minutes=mm))).timestamp()


def _localize(t: datetime, zone: tzinfo | None) -> float:
    # a naive datetime's timestamp() is this machine's local time, with its daylight saving rules
    return t.timestamp() if zone is None else t.replace(tzinfo=zone).timestamp()


def parse_epoch_or_iso(value: Any, zone: tzinfo | None) -> float | None:
    """A JSON / logfmt time: epoch seconds or milliseconds (number or digits), or ISO text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"\d{9,13}(?:\.\d+)?", value.strip()):
        value = float(value)
    if isinstance(value, (int, float)):
        v = float(value)
        v = v / 1000.0 if v > 1e11 else v  # epoch milliseconds are common in JSON logs
        return v if v >= 1e9 else None  # before 2001: an uptime or a counter, not a time of day
    if isinstance(value, str):
        return parse_iso(value, zone)
    return None


def _rfc3164_time(m: re.Match[str], zone: tzinfo | None, ref: float) -> float | None:
    """RFC 3164 has no year: the year that puts the line at most a day after `ref`, nearest to it."""
    ref_year = datetime.fromtimestamp(ref, timezone.utc).year
    hh, mi, ss = (int(x) for x in m.group("hms").split(":"))
    frac = float(m.group("frac") or 0)
    for year in (ref_year + 1, ref_year, ref_year - 1, ref_year - 2, ref_year - 3, ref_year - 4):
        try:  # Feb 29 exists only in leap years: try further back
            t = _localize(datetime(year, _MONTHS[m.group("mon")], int(m.group("day")), hh, mi, ss), zone) + frac
        except ValueError:
            continue
        if t <= ref + 86400:
            return t
    return None


def _fmt_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return json.dumps(s, ensure_ascii=False) if not s or re.search(r'[\s="]', s) else s


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _extras(items: dict[str, Any], used: set[str]) -> str:
    """What the line says beyond its message, as `key=value` (transport metadata left out)."""
    parts = []
    for k, v in items.items():
        if k in used or k in _META_KEYS or k.startswith(_META_PREFIXES) or v is None or isinstance(v, list):
            continue
        parts.append(f"{k}={_fmt_value(v)}")
    return " ".join(parts)


def _from_mapping(items: dict[str, Any], zone: tzinfo | None, fmt: str) -> ParsedLine | None:
    """The shared part of JSON and logfmt: message, time, level and the contract's fields."""
    msg_key = next((k for k in _MSG_KEYS if isinstance(items.get(k), str)), None)
    time_key = next((k for k in _TIME_KEYS if k in items), None)
    level_key = next((k for k in _LEVEL_KEYS if isinstance(items.get(k), (str, int)) and not isinstance(items.get(k), bool)), None)
    if msg_key is None and (fmt == "json" or time_key is None and level_key is None):
        return None
    used = {k for k in (msg_key, time_key, level_key) if k} | set(CONTRACT_FIELDS)
    extra = _extras(items, used)
    msg = items[msg_key] if msg_key else ""
    msg = f"{msg} {extra}".strip() if extra else msg
    if not msg.strip():
        return None
    fields = {name: str(items[name])[:128] for name in CONTRACT_FIELDS if name != "level" and items.get(name) is not None}
    if level_key:
        level = items[level_key]
        fields["level"] = _NUMERIC_LEVELS.get(level, str(level)) if isinstance(level, int) else level[:128]
    t = parse_epoch_or_iso(items[time_key], zone) if time_key else None
    host = next((items[k] for k in _HOST_KEYS if isinstance(items.get(k), str) and _HOST.match(items[k])), None)
    return ParsedLine(msg, t, fields, host, fmt)


def parse_json(text: str, zone: tzinfo | None) -> ParsedLine | None:
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    return _from_mapping(_flatten(obj), zone, "json")


def parse_logfmt(text: str, zone: tzinfo | None) -> ParsedLine | None:
    """`key=value key="quoted \\" value"` pairs; every token must be a pair (prose is not logfmt)."""
    items: dict[str, Any] = {}
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _LOGFMT_PAIR.match(text, pos)
        if not m:
            return None
        q = m.group("q")
        items[m.group("key")] = re.sub(r"\\(.)", r"\1", q) if q is not None else m.group("v")
        pos = m.end()
    if len(items) < 2:
        return None
    return _from_mapping(items, zone, "logfmt")


def _syslog_body(rest: str) -> tuple[str | None, str | None, str]:
    """HOSTNAME TAG[pid]: MSG → (host, app, msg); a local daemon may leave the host out."""
    tag = _TAG.match(rest)
    if tag:  # "app[pid]: msg" — no host
        return None, tag.group("app"), rest[tag.end():]
    host, sep, after = rest.partition(" ")
    if not sep or not _HOST.match(host):
        return None, None, rest
    tag = _TAG.match(after)
    if tag:
        return host, tag.group("app"), after[tag.end():]
    return host, None, after


def _with_app(app: str | None, msg: str) -> str:
    return f"{app}: {msg}" if app and app != "-" else msg


def parse_rfc5424(rest: str, severity: int | None, zone: tzinfo | None) -> ParsedLine | None:
    m = _RFC5424.match(rest)
    if not m:
        return None
    body = rest[m.end():]
    sd_params: list[str] = []
    if body.startswith("-"):
        body = body[1:]
    else:
        while body.startswith("["):  # [id name="value" ...] — values escape ", \ and ]
            end = re.match(r'\[(?P<id>[^\s\]=]+)(?P<params>(?:\s+[^=\s\]"]+="(?:[^"\\]|\\.)*")*)\s*\]', body)
            if not end:
                return None
            if end.group("id").split("@")[0] not in _STANDARD_SD_IDS:
                for p in _SD_PARAM.finditer(end.group("params")):
                    value = re.sub(r"\\(.)", r"\1", p.group("value"))
                    sd_params.append(f"{p.group('name')}={_fmt_value(value)}")
            body = body[end.end():]
    msg = body[1:] if body.startswith(" ") else body
    msg = msg.removeprefix("\ufeff")  # RFC 5424 marks UTF-8 messages with a BOM
    if sd_params:
        msg = f"{msg} {' '.join(sd_params)}".strip()
    fields = {}
    if severity is not None:
        fields["level"] = SYSLOG_LEVELS[severity]
    if m.group("msgid") != "-":
        fields["code"] = m.group("msgid")
    host = m.group("host") if m.group("host") != "-" and _HOST.match(m.group("host")) else None
    t = parse_iso(m.group("ts"), zone) if m.group("ts") != "-" else None
    return ParsedLine(_with_app(m.group("app"), msg), t, fields, host, "rfc5424")


def parse_rfc3164(rest: str, severity: int | None, zone: tzinfo | None, ref: float) -> ParsedLine | None:
    m = _RFC3164_TS.match(rest)
    if m:
        t = _rfc3164_time(m, zone, ref)
    else:  # rsyslog's high-precision file format: RFC 3339 instead of "Mmm dd hh:mm:ss"
        m = re.match(rf"^(?P<ts>{_ISO}) ", rest)
        if not m:
            return None
        t = parse_iso(m.group("ts"), zone)
    host, app, msg = _syslog_body(rest[m.end():])
    fields = {"level": SYSLOG_LEVELS[severity]} if severity is not None else {}
    return ParsedLine(_with_app(app, msg), t, fields, host, "rfc3164")


def parse_line(text: str, zone: tzinfo | None = timezone.utc, ref: float | None = None) -> ParsedLine:
    """The time, message and fields of one line (no newline); `ref` (epoch s) anchors RFC 3164 years."""
    import time

    ref = time.time() if ref is None else ref
    stripped = text.lstrip()
    if stripped.startswith("{"):
        got = parse_json(stripped, zone)
        if got is not None:
            return got
    pri = _PRI.match(text)
    severity = None
    rest = text
    if pri and int(pri.group("pri")) <= 191:
        severity, rest = int(pri.group("pri")) % 8, text[pri.end():]
        got = parse_rfc5424(rest, severity, zone) if rest.startswith("1 ") else None
        got = got or parse_rfc3164(rest, severity, zone, ref)
        if got is not None:
            return got
        return ParsedLine(rest, None, {"level": SYSLOG_LEVELS[severity]}, format="rfc3164")
    if text[:3] in _MONTHS:
        got = parse_rfc3164(text, None, zone, ref)
        if got is not None:
            return got
    if re.match(rf"^{_ISO} \S+ [\w./@-]+\[[^\]\s]+\]: ", text):
        got = parse_rfc3164(text, None, zone, ref)  # rsyslog file format with a pid: it is syslog
        if got is not None:
            return got
    lead = _LEADING_ISO.match(text)
    if lead and lead.end() < len(text):
        t = parse_iso(lead.group("ts"), zone)
        rest = text[lead.end():]
        got = parse_logfmt(rest, zone)
        if got is not None:
            got.time = got.time if got.time is not None else t
            return got
        # the timestamp lives in ce_time; the message keeps only what was said, so repeated lines stay equal
        return ParsedLine(rest, t, format="iso")
    if "=" in text:
        got = parse_logfmt(text, zone)
        if got is not None:
            return got
    return ParsedLine(text)
