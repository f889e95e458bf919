"""Transcripts a call centre already has (OpenAI Whisper, AWS Transcribe, Google Speech-to-Text, a
plain JSONL of turns) read into one shape: timed pieces of speech with the vendor's speaker label.

Each vendor format has its own small parser module; `read_transcript` picks one by name. Turning
pieces into turns and speaker labels into agent/customer is `turns.py`'s job, so every format
groups and maps alike.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from schemas.errors import ConfigError


@dataclass(frozen=True)
class SpeechPiece:
    """A word, a segment or a whole turn, timed in seconds from the start of the call's audio."""

    start: float
    end: float
    text: str
    speaker: str | None  # the vendor's label as written (spk_0, "2", SPEAKER_01, agent), ch_N for a channel


@dataclass(frozen=True)
class Transcript:
    pieces: list[SpeechPiece]
    # True when each piece already is a turn (JSONL): grouping would merge turns someone cut on purpose
    pieces_are_turns: bool = False


class TranscriptError(ConfigError):
    """A transcript that cannot be read as the format it was given as (one sentence, the CLI's exit)."""


def channel_label(index: int) -> str:
    """Channels are counted from 0, as in the audio file (AWS writes ch_0; Google's channelTag 1 is ch_0)."""
    return f"ch_{index}"


def checked_piece(start: Any, end: Any, text: str, speaker: str | None, where: str) -> SpeechPiece:
    """A piece whose times are finite, not negative and in order; TranscriptError naming `where` otherwise."""
    try:
        s, e = float(start), float(end)
    except (TypeError, ValueError):
        raise TranscriptError(f"{where}: start/end {start!r}/{end!r} are not numbers of seconds") from None
    if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e < s:
        raise TranscriptError(f"{where}: times {s:g}..{e:g} s are not a span from the call's start (0 s or later, "
                              "end not before start)")
    return SpeechPiece(s, e, text.strip(), speaker)


def load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TranscriptError(f"{path} does not exist") from None
    except UnicodeDecodeError:
        raise TranscriptError(f"{path} is not UTF-8 text, so it is no {what} JSON") from None
    except json.JSONDecodeError as e:
        raise TranscriptError(f"{path} is not {what} JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None


def first_error(e: ValidationError) -> str:
    """Pydantic's first complaint as 'results.items.3.start_time: Field required'."""
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "the document"
    return f"{where}: {err['msg']}"


def parse_with(model: type, data: Any, path: Path, what: str):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise TranscriptError(f"{path} is not in the {what} format ({first_error(e)})") from None


def _parsers() -> dict[str, Callable[[Path], Transcript]]:
    from services.ingest.transcripts import aws, google, jsonl, whisper

    return {"whisper": whisper.parse, "aws": aws.parse, "google": google.parse, "jsonl": jsonl.parse}


FORMATS = ("whisper", "aws", "google", "jsonl")


def read_transcript(path: Path, fmt: str) -> Transcript:
    """The pieces of `path` read as `fmt`, sorted by start; TranscriptError for anything else."""
    parsers = _parsers()
    if fmt not in parsers:
        raise ConfigError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    path = Path(path)
    if path.is_dir():
        raise TranscriptError(f"{path} is a folder; give the transcript file")
    transcript = parsers[fmt](path)
    if not any(p.text for p in transcript.pieces):
        raise TranscriptError(f"{path} holds no spoken words")
    pieces = sorted((p for p in transcript.pieces if p.text), key=lambda p: (p.start, p.end))
    return Transcript(pieces, transcript.pieces_are_turns)
