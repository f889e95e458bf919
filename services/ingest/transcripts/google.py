"""Google Cloud Speech-to-Text JSON (v1 `LongRunningRecognizeResponse`, v2 `BatchRecognizeResults`).

`{"results": [{"alternatives": [{"transcript": ..., "confidence": 0.92, "words": [{"startTime": "1.500s",
"endTime": "1.800s", "word": "hello", "speakerTag"?: 1}]}], "channelTag"?: 1, "languageCode": "en-us"}]}`.
v2 writes `startOffset`/`endOffset` and `speakerLabel`; protobuf's `preserving_proto_field_name`
gives `start_time`/`speaker_tag`; durations are "1.500s" strings or {"seconds", "nanos"}.

Only the first alternative is read. With diarization, v1 repeats every word of the call, now
tagged, in its last result; earlier results carry the same words untagged. So when some words
have a speaker tag, only tagged words count (each once). `channelTag` counts from 1: channel 1
is ch_0, the audio file's first channel.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from services.ingest.transcripts import SpeechPiece, Transcript, channel_label, checked_piece, load_json, parse_with

_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _duration(value: Any) -> float:
    """Protobuf Duration as JSON ("1.500s"), as a dict ({"seconds": "1", "nanos": 500000000}) or a number."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _SECONDS.match(value)
        if m:
            return float(m.group(1))
    if isinstance(value, dict) and set(value) <= {"seconds", "nanos"}:
        return float(value.get("seconds", 0) or 0) + float(value.get("nanos", 0) or 0) / 1e9
    raise ValueError(f"{value!r} is not a duration such as \"1.500s\"")


class _Word(BaseModel):
    model_config = ConfigDict(extra="ignore")
    word: str
    # a word at 0 s: proto3 JSON leaves a zero duration out
    start: float = Field(0.0, validation_alias=AliasChoices("startTime", "start_time", "startOffset", "start_offset"))
    end: float = Field(0.0, validation_alias=AliasChoices("endTime", "end_time", "endOffset", "end_offset"))
    speaker: str | None = Field(None, validation_alias=AliasChoices("speakerTag", "speaker_tag", "speakerLabel",
                                                                    "speaker_label"))

    @field_validator("start", "end", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> float:
        return _duration(v)

    @field_validator("speaker", mode="before")
    @classmethod
    def _tag(cls, v: Any) -> str | None:
        # v1 speakerTag is a number from 1; 0 (or absent) means "not tagged"
        return None if v in (None, 0, "0", "") else str(v)


class _Alternative(BaseModel):
    model_config = ConfigDict(extra="ignore")
    words: list[_Word] = []


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")
    alternatives: list[_Alternative] = []
    channel: int | None = Field(None, validation_alias=AliasChoices("channelTag", "channel_tag"))


class _Google(BaseModel):
    model_config = ConfigDict(extra="ignore")
    results: list[_Result]


def parse(path: Path) -> Transcript:
    doc = parse_with(_Google, load_json(path, "Google Speech-to-Text"), path, "Google Speech-to-Text")
    words: list[tuple[_Word, int | None, str]] = []
    for i, result in enumerate(doc.results):
        if result.alternatives:
            words += [(w, result.channel, f"{path}: results.{i}, word {k}") for k, w in enumerate(result.alternatives[0].words)]
    if any(w.speaker for w, _, _ in words):
        seen: set[tuple] = set()
        tagged = []
        for w, channel, where in words:
            key = (w.start, w.end, w.word, channel)
            if w.speaker and key not in seen:
                seen.add(key)
                tagged.append((w, channel, where))
        words = tagged
    pieces: list[SpeechPiece] = []
    for w, channel, where in words:
        # a speaker tag says more than the channel (a channel can hold a transfer's two voices)
        speaker = w.speaker or (channel_label(channel - 1) if channel else None)
        pieces.append(checked_piece(w.start, w.end, w.word, speaker, where))
    return Transcript(pieces)
