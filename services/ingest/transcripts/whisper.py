"""OpenAI Whisper JSON: `whisper --output_format json`, the API's `verbose_json`, and WhisperX.

`{"text": ..., "segments": [{"start": 0.0, "end": 3.2, "text": " Hello.", "words"?: [{"word": " Hello",
"start": 0.0, "end": 0.4, "probability"?: 0.9, "speaker"?: "SPEAKER_00"}], "speaker"?: "SPEAKER_00"}],
"words"?: [...], "language"?: "en"}`. Whisper itself does not tell speakers apart: a plain Whisper
transcript has no speaker; WhisperX's diarization adds `speaker` to segments and words. With
speakers, words are used when present (exact times, per-word speakers), else segments; without
any, each segment is a turn as Whisper cut it (at pauses and sentence ends), since no speaker
change can tell turns apart.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from services.ingest.transcripts import SpeechPiece, Transcript, checked_piece, load_json, parse_with


class _Word(BaseModel):
    model_config = ConfigDict(extra="ignore")
    word: str
    # WhisperX leaves words it could not align (numbers, symbols) without times
    start: float | None = None
    end: float | None = None
    speaker: str | None = None


class _Segment(BaseModel):
    model_config = ConfigDict(extra="ignore")
    start: float
    end: float
    text: str
    words: list[_Word] | None = None
    speaker: str | None = None


class _Whisper(BaseModel):
    model_config = ConfigDict(extra="ignore")
    segments: list[_Segment]


def parse(path: Path) -> Transcript:
    doc = parse_with(_Whisper, load_json(path, "Whisper"), path, "Whisper")
    diarized = any(s.speaker or any(w.speaker for w in s.words or []) for s in doc.segments)
    pieces: list[SpeechPiece] = []
    for i, seg in enumerate(doc.segments):
        where = f"{path}: segment {i}"
        timed = [w for w in seg.words or [] if w.start is not None and w.end is not None]
        if not timed or not diarized:
            pieces.append(checked_piece(seg.start, seg.end, seg.text, seg.speaker, where))
            continue
        for k, w in enumerate(seg.words or []):
            if w.start is None or w.end is None:  # an unaligned word joins the one before it
                if pieces and pieces[-1].text:
                    last = pieces[-1]
                    pieces[-1] = SpeechPiece(last.start, last.end, f"{last.text} {w.word.strip()}", last.speaker)
                continue
            pieces.append(checked_piece(w.start, w.end, w.word, w.speaker or seg.speaker, f"{where}, word {k}"))
    return Transcript(pieces, pieces_are_turns=not diarized)
