"""`fusionwatch ingest call`: a recorded call and the transcript a call centre already has → contract
records on one clock: the audio in WAV chunks on `fw.audio`, each speaker turn as a transcript line
`{"msg", "speaker": "agent"|"customer"}` on `fw.logs`, both keyed by the call id.

Everything that can be wrong with the inputs (the transcript, the speaker mapping, the audio, a
transcript longer than the audio) is found by `prepare_call`, before the broker is contacted, so a
bad transcript produces nothing at all.

A stereo recording keeps its channels (the contract carries 1–8 per WAV chunk). Which channel is
whose is the call-centre convention, not a field: channel 0 the agent, channel 1 the customer
(docs/callcenter.md). A recorder that puts the customer on channel 0 (Amazon Connect does) has its
channels swapped here, sample for sample, so consumers can rely on the convention.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from schemas.envelope import ASSET_RE, Kind, encode_log, format_time
from schemas.errors import ConfigError
from services.ingest.common import RunIds, resolve_origin
from services.ingest.media import MediaOptions, Record, check_media_source, media_records, open_container
from services.ingest.transcripts import Transcript, TranscriptError, read_transcript
from services.ingest.transcripts.turns import SpeakerMap, Turn, TurnConfig, group_turns

_WAV_HEADER = 44  # schemas.envelope.wav_bytes writes a canonical 44-byte PCM header


@dataclass(frozen=True)
class CallOptions:
    chunk_s: float = 0.5
    resample: int | None = None  # None keeps the recording's rate (8 kHz telephony is native)
    # audio channel of the customer in a stereo recording; None: from a channel-labelled transcript, else 1
    customer_channel: int | None = None
    turns: TurnConfig = TurnConfig()
    # how far the transcript may run past the audio's end (ASR end times overshoot a little)
    max_overrun_s: float = 2.0


@dataclass
class PreparedCall:
    """A checked call, ready to produce: `records(stop)` yields (kind, record, event time) by time."""

    call_id: str
    audio: str
    transcript: str
    origin: float  # wall-clock time of the audio's first sample
    total_s: float | None
    channels: int
    swap_channels: bool
    speakers: SpeakerMap
    turns: list[Turn]
    media: MediaOptions

    def records(self, _stop: threading.Event | None = None) -> Iterator[Record]:
        ids = RunIds()
        container = open_container(self.audio, MediaOptions(video=False))
        try:
            audio = media_records(container, self.audio, self.call_id, self.origin, self.media, ids)
            if self.swap_channels:
                audio = (swap_stereo(rec) for rec in audio)
            yield from heapq.merge(audio, self._lines(ids), key=lambda r: r[2])
        finally:
            container.close()

    def _lines(self, ids: RunIds) -> Iterator[Record]:
        source = f"/ingest/transcript/{Path(self.transcript).name}"
        for turn in self.turns:
            t = self.origin + turn.start
            line = {"msg": turn.text} if turn.speaker is None else {"msg": turn.text, "speaker": turn.speaker}
            rid, seq = ids.next(Kind.LOG)
            yield Kind.LOG, encode_log(self.call_id, source, t, line, id=rid, sequence=seq), t

    def describe(self) -> str:
        said = {r: sum(t.speaker == r for t in self.turns) for r in ("agent", "customer")}
        stereo = ""
        if self.channels == 2:
            stereo = "; stereo: channels swapped so the agent is channel 0" if self.swap_channels else \
                "; stereo: agent on channel 0, customer on channel 1"
        return (f"call {self.call_id} from {format_time(self.origin)}: {len(self.turns)} turns "
                f"({said['agent']} agent, {said['customer']} customer); speakers: {self.speakers.how}{stereo}")


def default_call_id(audio: str) -> str:
    stem = Path(audio).stem
    if not ASSET_RE.match(stem):
        raise ConfigError(f"the audio's name {stem!r} is not a call id (1-64 letters, digits, '.', '_' or '-'); "
                          "give one with --call-id")
    return stem


def prepare_call(audio: str, transcript: Path, fmt: str, call_id: str | None = None, start: str = "now",
                 customer: tuple[str, ...] = (), agent: tuple[str, ...] = (), options: CallOptions = CallOptions(),
                 speed: float = 0.0) -> PreparedCall:
    """Read and check everything; raises ConfigError (TranscriptError for the transcript) on any fault."""
    call_id = call_id if call_id is not None else default_call_id(audio)
    if not ASSET_RE.match(call_id):
        raise ConfigError(f"--call-id {call_id!r} is not a call id: 1-64 letters, digits, '.', '_' or '-', starting "
                          "with a letter or digit (e.g. call-000123)")
    if options.customer_channel not in (None, 0, 1):
        raise ConfigError("--customer-channel is 0 or 1 (a call is mono or stereo)")
    media = MediaOptions(video=False, chunk_s=options.chunk_s, resample=options.resample)  # checks both
    parsed = read_transcript(transcript, fmt)
    speakers = SpeakerMap(tuple(customer), tuple(agent)).resolve(parsed.pieces)
    turns = group_turns(parsed, speakers, options.turns)
    check_media_source(audio)
    channels, total_s = _audio_shape(audio)
    _check_fits(turns, total_s, options, transcript)
    swap = channels == 2 and _customer_channel(parsed, speakers, options.customer_channel) == 0
    if start.strip() == "metadata":
        raise ConfigError("--start is 'now' or an RFC 3339 time such as 2026-03-01T08:00:00Z")
    origin = resolve_origin(start)
    if start.strip() == "now" and total_s and (speed == 0 or speed > 1):
        origin -= total_s  # a fast replay ends at the present: consumers refuse records from the future
    return PreparedCall(call_id, audio, str(transcript), origin, total_s, channels, swap, speakers, turns, media)


def _audio_shape(audio: str) -> tuple[int, float | None]:
    container = open_container(audio, MediaOptions(video=False))
    try:
        if not container.streams.audio:
            raise ConfigError(f"{audio} has no audio stream")
        channels = container.streams.audio[0].codec_context.layout.nb_channels
        total = container.duration / 1e6 if container.duration else None
    finally:
        container.close()
    if channels > 2:
        raise ConfigError(f"{audio} has {channels} channels; a call is mono or stereo (agent and customer)")
    return channels, total


def _check_fits(turns: list[Turn], total_s: float | None, options: CallOptions, transcript: Path) -> None:
    if total_s is None or not turns:
        return
    last = max(t.end for t in turns)
    if last > total_s + options.max_overrun_s:
        raise TranscriptError(f"{transcript} runs to {last:.1f} s but the audio is {total_s:.1f} s long: "
                              "is it the transcript of another call?")


def _customer_channel(transcript: Transcript, speakers: SpeakerMap, given: int | None) -> int:
    """The customer's channel: from a channel-labelled transcript's mapping, else --customer-channel (default 1)."""
    from_labels = {int(label[3:]) for label, role in speakers.roles.items() if role == "customer"
                   and label in ("ch_0", "ch_1")}
    if len(from_labels) == 1:
        channel = from_labels.pop()
        if given is not None and given != channel:
            raise ConfigError(f"--customer-channel {given} contradicts the transcript, whose customer is on ch_{channel}")
        return channel
    return 1 if given is None else given


def swap_stereo(record: Record) -> Record:
    """An audio record with its two channels exchanged (exact: PCM samples are moved, not re-encoded)."""
    kind, rec, t = record
    if kind is not Kind.AUDIO:
        return record
    header, data = rec.value[:_WAV_HEADER], rec.value[_WAV_HEADER:]
    if header[:4] != b"RIFF" or int.from_bytes(header[22:24], "little") != 2:
        raise ValueError("expected a canonical stereo PCM WAV chunk")
    pcm = np.frombuffer(data, "<i2").reshape(-1, 2)[:, ::-1]
    return kind, replace(rec, value=header + np.ascontiguousarray(pcm).tobytes()), t
