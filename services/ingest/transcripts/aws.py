"""AWS Transcribe JSON (the job's output file, `TranscriptFileUri`).

`{"jobName": ..., "results": {"transcripts": [...], "items": [{"start_time": "0.44", "end_time": "0.79",
"alternatives": [{"content": "Hello", "confidence": "0.99"}], "type": "pronunciation",
"speaker_label"?: "spk_0"}, {"alternatives": [{"content": ","}], "type": "punctuation"}],
"speaker_labels"?: {"speakers": 2, "segments": [{"speaker_label": "spk_0", "start_time": ..., "end_time": ...,
"items": [{"start_time": ..., "end_time": ..., "speaker_label": "spk_0"}]}]},
"channel_labels"?: {"number_of_channels": 2, "channels": [{"channel_label": "ch_0", "items": [...]}]}}}`.

Times are strings of seconds. Speaker diarization labels words `spk_N` (newer outputs on the item
itself, older ones only in `speaker_labels.segments`, matched by start time); channel
identification lists each channel's items under its `ch_N` label. Punctuation has no time and
joins the word before it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from services.ingest.transcripts import SpeechPiece, Transcript, TranscriptError, checked_piece, load_json, parse_with


class _Alternative(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    alternatives: list[_Alternative] = Field(min_length=1)
    start_time: str | None = None
    end_time: str | None = None
    speaker_label: str | None = None
    channel_label: str | None = None


class _SegmentItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    start_time: str
    speaker_label: str | None = None


class _SpeakerSegment(BaseModel):
    model_config = ConfigDict(extra="ignore")
    speaker_label: str
    items: list[_SegmentItem] = []


class _SpeakerLabels(BaseModel):
    model_config = ConfigDict(extra="ignore")
    segments: list[_SpeakerSegment]


class _Channel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    channel_label: str
    items: list[_Item]


class _ChannelLabels(BaseModel):
    model_config = ConfigDict(extra="ignore")
    channels: list[_Channel]


class _Results(BaseModel):
    model_config = ConfigDict(extra="ignore")
    items: list[_Item] = []
    speaker_labels: _SpeakerLabels | None = None
    channel_labels: _ChannelLabels | None = None


class _Aws(BaseModel):
    model_config = ConfigDict(extra="ignore")
    results: _Results


def parse(path: Path) -> Transcript:
    doc = parse_with(_Aws, load_json(path, "AWS Transcribe"), path, "AWS Transcribe")
    res = doc.results
    if res.channel_labels is not None:
        streams = [(c.items, c.channel_label, f"channel {c.channel_label}") for c in res.channel_labels.channels]
    else:
        streams = [(res.items, None, "results")]
    by_start = {}
    if res.speaker_labels is not None:  # older outputs: speakers only here, keyed by each word's start
        by_start = {i.start_time: s.speaker_label for s in res.speaker_labels.segments for i in s.items}
    pieces: list[SpeechPiece] = []
    for items, channel, what in streams:
        pieces += _words(items, channel, by_start, f"{path}: {what}")
    if not pieces:
        raise TranscriptError(f"{path} is an AWS Transcribe output without any timed words (results.items is empty)")
    return Transcript(pieces)


def _words(items: list[_Item], channel: str | None, by_start: dict[str, str], where: str) -> list[SpeechPiece]:
    out: list[SpeechPiece] = []
    for k, item in enumerate(items):
        text = item.alternatives[0].content
        if item.type == "punctuation":
            if out:
                last = out[-1]
                out[-1] = SpeechPiece(last.start, last.end, last.text + text, last.speaker)
            continue
        if item.start_time is None or item.end_time is None:
            raise TranscriptError(f"{where}, item {k} ({text!r}): a {item.type} item needs start_time and end_time")
        speaker = channel or item.channel_label or item.speaker_label or by_start.get(item.start_time)
        out.append(checked_piece(item.start_time, item.end_time, text, speaker, f"{where}, item {k}"))
    return out
