"""Plain JSONL: one turn a line, `{"speaker": "agent", "start": 5.9, "end": 9.7, "text": "..."}`, times
in seconds from the start of the audio — the call-folder format's transcript.jsonl (other fields,
such as labels, are ignored here). Each line already is a turn and is sent as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from services.ingest.transcripts import SpeechPiece, Transcript, TranscriptError, checked_piece, first_error


class _Turn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    speaker: str | None = None
    start: float
    end: float
    text: str


def parse(path: Path) -> Transcript:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TranscriptError(f"{path} does not exist") from None
    except UnicodeDecodeError:
        raise TranscriptError(f"{path} is not UTF-8 text, so it is no JSONL transcript") from None
    pieces: list[SpeechPiece] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            turn = _Turn.model_validate(json.loads(line))
        except json.JSONDecodeError as e:
            raise TranscriptError(f"{where} is not a JSON object ({e.msg}); a JSONL transcript has one turn a line: "
                                  '{"speaker": ..., "start": s, "end": s, "text": ...}') from None
        except ValidationError as e:
            raise TranscriptError(f"{where}: a turn needs speaker, start, end and text ({first_error(e)})") from None
        pieces.append(checked_piece(turn.start, turn.end, turn.text, turn.speaker or None, where))
    return Transcript(pieces, pieces_are_turns=True)
