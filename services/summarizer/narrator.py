"""The narration of one event: a few sentences a shift lead hears and reads (subtitles).

Where it sits: after `facts` (and after the evidence read, which adds what is missing), before the
TTS and the renderer. The default narrator is a deterministic template: every number, time, code,
serial and quoted line it says is formatted from `EventFacts`, nothing else, so the same event
always gives the same words and a reviewer can trust them. `unsupported_claims` is the independent
check of that promise (used by the tests and by the optional rephraser, `rephrase.py`, which may
only return text that passes it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from services.summarizer.facts import EventFacts

# what each modality is called when spoken; call-centre assets have a voice and a transcript
FACTORY_NAMES = {"frames": "camera", "audio": "microphone", "logs": "logs"}
CALL_NAMES = {"frames": "video", "audio": "voice", "logs": "transcript"}
MAX_QUOTES = 2
MAX_QUOTE_CHARS = 90
MAX_SERIALS = 2
MIN_SHARE = 0.05  # modalities under 5 % of the score are not worth a mention
CROSS_MODAL_MENTION = 0.3


@dataclass(frozen=True)
class MissingEvidence:
    """One thing the evidence reader could not show (also stored in `summaries.missing`)."""

    modality: str  # frames | audio | logs
    reason: str  # gone | partly_gone | corrupt | unreadable
    detail: str  # for operators: topic, partition, offsets
    lost: int | None = None  # records lost, when known
    total: int | None = None  # records expected, when known

    def as_dict(self) -> dict:
        return {"modality": self.modality, "reason": self.reason, "detail": self.detail, "lost": self.lost,
                "total": self.total}


@dataclass(frozen=True)
class Narration:
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


# ── formatting: the only way facts become words ────────────────────────────────────────────

def _zone(tz: str) -> ZoneInfo | timezone:
    return timezone.utc if tz.upper() == "UTC" else ZoneInfo(tz)


def clock(dt: datetime, tz: str = "UTC", seconds: bool = False) -> str:
    """Spoken time of day: minutes are what a listener keeps (the video header shows the rest)."""
    local = dt.astimezone(_zone(tz))
    return f"{local:%H:%M:%S} {local.tzname() or tz}" if seconds else f"{local:%H:%M} {local.tzname() or tz}"


def day(dt: datetime, tz: str = "UTC") -> str:
    local = dt.astimezone(_zone(tz))
    return f"{local.day} {local:%B}"


def duration_words(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} second{'s' if s != 1 else ''}"
    m, s = divmod(s, 60)
    words = f"{m} minute{'s' if m != 1 else ''}"
    return words + (f" {s} second{'s' if s != 1 else ''}" if s else "")


def ratio_words(ratio: float) -> str:
    return "far above" if ratio == float("inf") else f"{ratio:.1f} times"


def percent(share: float) -> str:
    return f"{int(round(100 * share))} percent"


def hertz(value: float) -> str:
    return f"{int(round(value, -1)) if value >= 100 else int(round(value))}"


def humanize(kind: str) -> str:
    """A model's fault-kind label as words ('bearing_fault' -> 'bearing fault'); only safe characters."""
    words = re.sub(r"[^A-Za-z0-9 ]+", " ", kind.replace("_", " ").replace("-", " ")).strip()
    return re.sub(r"\s+", " ", words)[:48].lower()


def listing(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def quote(line: str) -> str:
    """A log or transcript line as spoken: whitespace squeezed, cut at a word boundary."""
    text = re.sub(r"\s+", " ", line).strip().strip('"“”')
    if len(text) > MAX_QUOTE_CHARS:
        text = text[:MAX_QUOTE_CHARS].rsplit(" ", 1)[0] + "…"
    return f"“{text}”"


def region_words(box: Sequence[float]) -> str | None:
    """[x0, y0, x1, y1] in 0..1 -> 'upper left' ... 'centre' (a 3 x 3 grid on the box centre)."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if not (0 <= cx <= 1 and 0 <= cy <= 1):
        return None
    row = "upper" if cy < 1 / 3 else "lower" if cy > 2 / 3 else ""
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    return f"{row} {col}".strip() or "centre"


def _split_speaker(line: str) -> tuple[str | None, str]:
    m = re.match(r"^\s*\[?(customer|agent|caller|operator|supervisor)\]?\s*[:>-]\s*(.+)$", line, re.IGNORECASE)
    return (m.group(1).lower(), m.group(2)) if m else (None, line)


def _shares(facts: EventFacts) -> list[tuple[str, float]]:
    shares = [(m, float(v)) for m, v in (facts.attribution.modality_shares or {}).items()
              if m in FACTORY_NAMES and float(v) >= MIN_SHARE]
    return sorted(shares, key=lambda kv: (-kv[1], kv[0]))


def _missing_sentence(missing: Sequence[MissingEvidence], names: dict[str, str]) -> list[str]:
    out = []
    for item in missing:
        what = {"frames": "frames", "audio": "audio", "logs": "lines"}.get(item.modality, "records")
        name = f"{names.get(item.modality, item.modality)} {what}"
        if item.reason == "gone":
            out.append(f"The {name} of this event are no longer on the broker, so they are not shown.")
        elif item.reason == "corrupt" and item.lost is not None and item.total:
            out.append(f"{item.lost} of {item.total} {name} were unreadable and are not shown.")
        elif item.reason == "partly_gone":
            out.append(f"Part of the {name} is no longer on the broker.")
        else:
            out.append(f"Some {name} could not be read.")
    return list(dict.fromkeys(out))


# ── the template ────────────────────────────────────────────────────────────────────────────

def narrate(facts: EventFacts, missing: Sequence[MissingEvidence] = (), tz: str = "UTC") -> Narration:
    """Deterministic, grounded narration of one event."""
    if facts.is_call:
        sentences = _call_sentences(facts, tz)
        names = CALL_NAMES
    else:
        sentences = _factory_sentences(facts, tz)
        names = FACTORY_NAMES
    sentences += _missing_sentence(missing, names)
    return Narration(tuple(sentences))


def _factory_sentences(f: EventFacts, tz: str) -> list[str]:
    kind = humanize(f.kind)
    what = f"{f.severity.capitalize()}-severity {kind if kind and kind != 'anomaly' else 'anomaly'}"
    if kind and kind != "anomaly":
        what += " suspected"
    tail = f"for {duration_words(f.duration_s)}" if f.end is not None else "still open"
    out = [f"{what} on {f.asset} at {clock(f.start, tz)}, {tail}."]
    if f.stream_stopped:
        out.append("Then the station stopped sending: nothing shows that the fault cleared.")
    out.append(f"Peak score {ratio_words(f.ratio)} the threshold.")
    out += _modality_sentences(f, FACTORY_NAMES)
    codes = list(dict.fromkeys(c for c in f.attribution.log_codes if c))[:3]
    lines = list(dict.fromkeys(f.attribution.top_log_lines or f.log_lines))[:MAX_QUOTES]
    if codes or lines:
        said = []
        if codes:
            said.append(f"code{'s' if len(codes) > 1 else ''} {listing(codes)}")
        said += [quote(line) for line in lines]
        out.append(f"Logs: {'; '.join(said)}.")
    if f.serials:
        serials = list(dict.fromkeys(f.serials))
        shown = serials[:MAX_SERIALS]
        more = len(serials) - len(shown)
        out.append(f"{'Part' if len(serials) == 1 else 'Parts'} {listing(shown + ([f'{more} more'] if more else []))}.")
    return out


def _modality_sentences(f: EventFacts, names: dict[str, str]) -> list[str]:
    shares = _shares(f)
    out = []
    if len(shares) == 1:
        out.append(f"Evidence from the {names[shares[0][0]]}.")
    elif shares:
        parts = [f"{names[m]} {int(round(100 * v))}" for m, v in shares]
        out.append(f"Evidence: {listing(parts)} percent.")
    if f.attribution.cross_modal_share >= CROSS_MODAL_MENTION:
        out.append(f"{percent(f.attribution.cross_modal_share).capitalize()} from the sources disagreeing.")
    return out


def _call_sentences(f: EventFacts, tz: str) -> list[str]:
    call = f.call
    into = ""
    if call and call.start and f.start >= call.start:
        into = f", {duration_words((f.start - call.start).total_seconds())} into the call"
    out = [f"Call {f.asset} escalated at {clock(f.start, tz, seconds=True)}{into}."]
    if call and call.turning_point:
        out.append(f"Sentiment turned at {clock(call.turning_point, tz, seconds=True)}.")
    if call and call.peak_frustration is not None and call.peak_time:
        out.append(f"Frustration peaked at {percent(call.peak_frustration)} at {clock(call.peak_time, tz, seconds=True)}.")
    out.append(f"Escalation score {ratio_words(f.ratio)} the threshold.")
    # An escalation is the frustration head's verdict on the customer, not an anomaly score: its
    # modality shares say nothing about why, so the narration names the customer's turns heard
    # while frustration was over the threshold (the event keeps only those windows' lines).
    turns = customer_turns(f)
    if turns:
        out.append(f"Driven by what the customer said: {'; '.join(quote(t) for t in turns[:MAX_QUOTES])}.")
    else:
        for line in list(dict.fromkeys(f.attribution.top_log_lines or f.log_lines))[:MAX_QUOTES]:
            speaker, text = _split_speaker(line)
            out.append(f"The {speaker} said {quote(text)}." if speaker else f"Transcript: {quote(text)}.")
    if call and call.overall and re.fullmatch(r"[A-Za-z ]{1,16}", call.overall):
        out.append(f"Overall, the call was {call.overall.lower()}.")
    if f.stream_stopped:
        out.append("The call ended while it was escalated.")
    return out


def customer_turns(f: EventFacts) -> list[str]:
    """The customer's transcript lines of an escalation, in the order they were said."""
    said = [_split_speaker(line) for line in dict.fromkeys(f.log_lines or f.attribution.top_log_lines)]
    return [text for speaker, text in said if speaker in ("customer", "caller")]


# ── grounding check ──────────────────────────────────────────────────────────────────────────

_NUMBER = re.compile(r"\d+(?:[.:,]\d+)*")
_IDENT = re.compile(r"\b[A-Za-z]*\d[\w.-]*\b|\b[A-Z]{2,}[-_][\w-]+\b")
_QUOTED = re.compile(r"“([^”]*)”")
_MODALITY_WORDS = {
    "frames": ("camera", "picture", "boxed", "video shows"),
    "audio": ("microphone", "sound", "hertz", "voice"),
    "logs": ("logs", "log said", "code", "transcript"),
}


def _allowed_numbers(f: EventFacts, missing: Sequence[MissingEvidence], tz: str) -> set[str]:
    allowed: set[str] = set()

    def add_text(text: str) -> None:
        allowed.update(_NUMBER.findall(text))

    times = [f.start] + ([f.end] if f.end else [])
    if f.call:
        times += [t for t in (f.call.turning_point, f.call.peak_time, f.call.start) if t]
        if f.call.peak_frustration is not None:
            add_text(percent(f.call.peak_frustration))
        if f.call.start and f.start >= f.call.start:
            add_text(duration_words((f.start - f.call.start).total_seconds()))
    for t in times:
        add_text(clock(t, tz, seconds=True))
        add_text(clock(t, tz))
        add_text(day(t, tz))
    add_text(duration_words(f.duration_s))
    add_text(ratio_words(f.ratio))
    for _, share in _shares(f):
        add_text(percent(share))
    add_text(percent(f.attribution.cross_modal_share))
    for v in f.attribution.audio_band_hz or ():
        add_text(hertz(v))
    serials = list(dict.fromkeys(f.serials))
    if len(serials) > MAX_SERIALS:
        allowed.add(str(len(serials) - MAX_SERIALS))
    for item in missing:
        allowed.update(str(v) for v in (item.lost, item.total) if v is not None)
    return allowed


def unsupported_claims(text: str, facts: EventFacts, missing: Sequence[MissingEvidence] = (),
                       tz: str = "UTC") -> list[str]:
    """What `text` states that the event does not support: quotes that are not (prefixes of) the
    event's log lines, identifiers that are not the asset / its codes / serials, numbers that are
    none of the event's formatted facts, and modalities that played no part. Empty = grounded."""
    problems: list[str] = []
    lines = [re.sub(r"\s+", " ", line).strip() for line in (*facts.attribution.top_log_lines, *facts.log_lines)]
    lines += [_split_speaker(line)[1].strip() for line in lines]
    rest = text
    for quoted in _QUOTED.findall(text):
        body = quoted.rstrip("…").strip()
        if not any(line.startswith(body) or body == line.strip('"“”') for line in lines):
            problems.append(f"quote not in the event: {quoted!r}")
        rest = rest.replace(f"“{quoted}”", " ")
    known = sorted({facts.asset, *facts.attribution.log_codes, *facts.serials}, key=len, reverse=True)
    for ident in known:
        if ident:
            rest = re.sub(rf"(?<![\w-]){re.escape(ident)}(?![\w-])", " ", rest)
    allowed = _allowed_numbers(facts, missing, tz)
    for token in _IDENT.findall(rest):
        if not _NUMBER.fullmatch(token) and not re.fullmatch(r"\d+(?:st|nd|rd|th)", token):
            problems.append(f"identifier not in the event: {token!r}")
    rest = _IDENT.sub(lambda m: m.group(0) if _NUMBER.fullmatch(m.group(0)) else " ", rest)
    for number in _NUMBER.findall(rest):
        if number.rstrip(".,:") not in allowed:
            problems.append(f"number not in the event: {number!r}")
    shares = dict(_shares(facts))
    lowered = rest.lower()
    for modality, words in _MODALITY_WORDS.items():
        present = shares.get(modality, 0) > 0 or (modality == "logs" and (facts.log_lines or facts.attribution.log_codes))
        evidence_named = any(item.modality == modality for item in missing)
        if present or evidence_named or (facts.is_call and modality in ("audio", "logs")):
            continue
        for word in words:
            if re.search(rf"\b{re.escape(word)}\b", lowered):
                problems.append(f"{modality} named but it played no part: {word!r}")
    return problems


def sentence_cues(sentences: Iterable[str], max_chars: int = 84) -> list[str]:
    """Split each sentence into subtitle-sized pieces (at most two short lines on a phone)."""
    pieces: list[str] = []
    for sentence in sentences:
        words, current = sentence.split(), ""
        for word in words:
            if current and len(current) + 1 + len(word) > max_chars:
                pieces.append(current)
                current = word
            else:
                current = f"{current} {word}".strip()
        if current:
            pieces.append(current)
    return pieces
