"""`fusionwatch ingest call`: one 20 s call, transcribed by each vendor (hand-written samples in
tests/data/transcripts/ with the structure each documents), read into the same speaker turns, mapped
to agent/customer, and produced with its stereo audio to the real embedded broker and read back; a
malformed transcript ends in one sentence and produces nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from schemas.envelope import Accepted, DecodeOptions, Kind, decode, format_time, parse_wav, wav_bytes
from schemas.errors import ConfigError
from services.ingest.transcripts import SpeechPiece, Transcript, TranscriptError, read_transcript
from services.ingest.transcripts.turns import SpeakerMap, TurnConfig, group_turns

DATA = Path(__file__).resolve().parent / "data" / "transcripts"
ROOT = Path(__file__).resolve().parent.parent
RATE = 8000
# (file, --format, --customer): the same call, as each vendor writes it
SAMPLES = [
    ("whisperx.json", "whisper", ()),
    ("aws.json", "aws", ()),
    ("aws_channels.json", "aws", ("ch_0",)),  # Amazon Connect: the customer on the left channel
    ("google.json", "google", ()),
    ("call.jsonl", "jsonl", ()),
]


def _truth() -> list[dict]:
    return [json.loads(line) for line in (DATA / "call.jsonl").read_text().splitlines()]


def _turns(name: str, fmt: str, customer=()):
    t = read_transcript(DATA / name, fmt)
    return group_turns(t, SpeakerMap(customer).resolve(t.pieces))


@pytest.mark.parametrize("name,fmt,customer", SAMPLES)
def test_every_format_reads_as_the_same_speaker_turns(name, fmt, customer):
    turns = _turns(name, fmt, customer)
    truth = _truth()
    assert [t.speaker for t in turns] == [u["speaker"] for u in truth]
    assert [t.text for t in turns] == [u["text"] for u in truth]  # punctuation back on its word (AWS)
    assert [t.start for t in turns] == pytest.approx([u["start"] for u in truth], abs=1e-6)
    assert [t.end for t in turns] == pytest.approx([u["end"] for u in truth], abs=0.05)  # word-level: last word's end


def test_plain_whisper_keeps_its_segments_as_turns_without_speakers():
    turns = _turns("whisper.json", "whisper")
    assert [t.text for t in turns] == [u["text"] for u in _truth()]
    assert {t.speaker for t in turns} == {None}


def test_google_diarized_words_are_counted_once():
    t = read_transcript(DATA / "google.json", "google")
    # v1 repeats every word, tagged, in its last result: only the tagged copy counts
    assert len(t.pieces) == sum(len(u["text"].split()) for u in _truth())
    assert {p.speaker for p in t.pieces} == {"1", "2"}


def _pieces(*spec) -> Transcript:
    return Transcript([SpeechPiece(s, e, w, who) for s, e, w, who in spec])


def test_turns_end_on_a_long_pause_on_an_interruption_and_at_the_length_limit():
    t = _pieces((0.0, 0.4, "hello", "A"), (0.5, 0.9, "there", "A"),  # one turn
                (3.0, 3.4, "still", "A"),  # 2.1 s pause: a new turn
                (3.6, 3.9, "yes", "B"),  # B speaks after A's last word ...
                (4.0, 4.3, "and", "A"),  # ... so A's next word opens a new turn
                (4.1, 4.2, "mm", "B"))  # B's words during A's speech do not split A
    speakers = SpeakerMap().resolve(t.pieces)
    turns = group_turns(t, speakers)
    assert [(x.speaker, x.text) for x in turns] == [("agent", "hello there"), ("agent", "still"), ("customer", "yes"),
                                                    ("agent", "and"), ("customer", "mm")]
    long = _pieces(*[(i * 0.5, i * 0.5 + 0.4, f"w{i}", "A") for i in range(40)])
    parts = group_turns(long, SpeakerMap().resolve(long.pieces), TurnConfig(max_turn_s=5.0))
    assert len(parts) == 4 and all(p.end - p.start <= 5.0 for p in parts)
    assert " ".join(p.text for p in parts) == " ".join(f"w{i}" for i in range(40))


def test_speaker_mapping_rules():
    two = _pieces((0, 1, "a", "spk_0"), (1, 2, "b", "spk_1")).pieces
    three = _pieces((0, 1, "a", "spk_0"), (1, 2, "b", "spk_1"), (2, 3, "c", "spk_2")).pieces
    assert SpeakerMap().resolve(two).roles == {"spk_0": "agent", "spk_1": "customer"}  # first to speak: the agent
    assert SpeakerMap(customer=("spk_0",)).resolve(two).roles == {"spk_0": "customer", "spk_1": "agent"}
    assert SpeakerMap(agent=("spk_1",)).resolve(two).roles == {"spk_0": "customer", "spk_1": "agent"}
    # a supervisor joins: named on the agent side, everyone else the customer
    assert SpeakerMap(customer=("spk_1",)).resolve(three).roles == {"spk_0": "agent", "spk_1": "customer",
                                                                    "spk_2": "agent"}
    channels = _pieces((0, 1, "a", "ch_1"), (1, 2, "b", "ch_0")).pieces
    assert SpeakerMap().resolve(channels).roles == {"ch_1": "customer", "ch_0": "agent"}  # the call-folder convention
    with pytest.raises(ConfigError, match="3 speakers"):
        SpeakerMap().resolve(three)
    with pytest.raises(ConfigError, match="no speaker 'spk_7'"):
        SpeakerMap(customer=("spk_7",)).resolve(two)
    with pytest.raises(ConfigError, match="neither"):
        SpeakerMap(customer=("spk_1",), agent=("spk_0",)).resolve(three)
    with pytest.raises(ConfigError, match="both"):
        SpeakerMap(customer=("spk_1",), agent=("spk_1",)).resolve(two)


BROKEN = [
    ("whisper", "{\"segments\": [", "is not Whisper JSON"),
    ("whisper", json.dumps({"segments": [{"start": 1.0, "text": "hi"}]}), "segments.0.end: Field required"),
    ("whisper", json.dumps({"segments": [{"start": 3.0, "end": 1.0, "text": "hi"}]}), "not a span"),
    ("aws", json.dumps({"results": {"items": [{"type": "pronunciation", "alternatives": [{"content": "hi"}]}]}}),
     "needs start_time and end_time"),
    ("aws", json.dumps({"segments": []}), "results: Field required"),
    ("google", json.dumps({"results": [{"alternatives": [{"words": [{"word": "hi", "startTime": "soon"}]}]}]}),
     "not a duration"),
    ("jsonl", '{"speaker": "agent", "start": 0, "end": 1, "text": "hi"}\n{"speaker": "agent", "start": 2}\n',
     ":2: a turn needs speaker, start, end and text"),
    ("jsonl", "speaker,start,end,text\n", ":1 is not a JSON object"),
    ("jsonl", '{"speaker": "agent", "start": -4, "end": 1, "text": "hi"}\n', "not a span"),
]


@pytest.mark.parametrize("fmt,text,message", BROKEN)
def test_malformed_transcripts_are_refused_in_one_sentence(tmp_path, fmt, text, message):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(TranscriptError, match=message.replace(".", r"\.")) as e:
        read_transcript(path, fmt)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_a_transcript_read_as_another_vendor_is_refused():
    with pytest.raises(TranscriptError, match="is not in the Google Speech-to-Text format"):
        read_transcript(DATA / "aws.json", "google")
    with pytest.raises(TranscriptError, match="is not in the AWS Transcribe format|no timed words"):
        read_transcript(DATA / "google.json", "aws")


# ── through the broker ───────────────────────────────────────────────────────────────────────

def _call_wav(path: Path, customer_channel: int, seconds: float = 20.0) -> Path:
    """A stereo 8 kHz call: the agent a 700 Hz voice, the customer a 300 Hz one, each on its own
    channel and only while the transcript says they speak."""
    t = np.arange(int(seconds * RATE)) / RATE
    out = np.zeros((len(t), 2), np.float32)
    for u in _truth():
        tone = 700 if u["speaker"] == "agent" else 300
        ch = (1 - customer_channel) if u["speaker"] == "agent" else customer_channel
        on = (t >= u["start"]) & (t < u["end"])
        out[on, ch] = 0.3 * np.sin(2 * np.pi * tone * t[on])
    path.write_bytes(wav_bytes(out, RATE))
    return path


def _read_back(broker, ks, topics, expected):
    from tests.test_simulator import read_topics

    got = read_topics(broker.bootstrap, ks, topics, expected, timeout_s=30)
    kind_of = {topics.frames: Kind.FRAME, topics.audio: Kind.AUDIO, topics.logs: Kind.LOG}
    out = {Kind.AUDIO: [], Kind.LOG: []}
    for m in got:
        kind = kind_of[m.topic]
        res = decode(kind, m.key, m.value, m.headers, now=time.time(), options=DecodeOptions(sample_rate=RATE))
        assert isinstance(res, Accepted), res
        out[kind].append((res.envelope.time, res, m.value))
    for v in out.values():
        v.sort(key=lambda x: x[0])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name,fmt,customer", SAMPLES)
def test_call_and_transcript_through_the_broker(broker, make_topics, monkeypatch, tmp_path, name, fmt, customer):
    from typer.testing import CliRunner

    from services.cli import app
    from services.settings import get_settings

    ks, topics = make_topics(partitions=2)
    monkeypatch.setenv("FW_KAFKA__TOPIC_PREFIX", ks.topic_prefix)
    monkeypatch.setenv("FW_KAFKA__PARTITIONS", str(ks.partitions))
    get_settings.cache_clear()
    customer_channel = 0 if customer == ("ch_0",) else 1
    wav = _call_wav(tmp_path / "call-0001.wav", customer_channel)
    origin = round(time.time() - 3600, 3)
    args = ["ingest", "call", str(wav), "--transcript", str(DATA / name), "--format", fmt, "--start",
            format_time(origin), "--bootstrap", broker.bootstrap, "--json"]
    for c in customer:
        args += ["--customer", c]
    r = CliRunner().invoke(app, args)
    get_settings.cache_clear()
    assert r.exit_code == 0, (r.output, r.exception)
    got = _read_back(broker, ks, topics, 40 + 5)
    lines, audio = got[Kind.LOG], got[Kind.AUDIO]
    truth = _truth()
    assert len(lines) == 5 and len(audio) == 40
    for (t, res, _), u in zip(lines, truth):
        assert res.envelope.asset == "call-0001"
        assert res.payload.speaker == u["speaker"] and res.payload.msg == u["text"]
        assert t == pytest.approx(origin + u["start"], abs=1e-5)  # one clock: the audio's first sample
    assert audio[0][0] == pytest.approx(origin, abs=1e-5)
    assert {res.envelope.source for _, res, _ in lines} == {f"/ingest/transcript/{name}"}
    # stereo kept; channel 0 is the agent's whichever channel the recorder gave them
    samples = np.concatenate([parse_wav(value)[0] for _, _, value in audio])
    assert samples.shape == (20 * RATE, 2)
    for u in truth:
        seg = samples[int(u["start"] * RATE) + 80: int(u["end"] * RATE) - 80]
        mine, other = (0, 1) if u["speaker"] == "agent" else (1, 0)
        assert np.abs(seg[:, mine]).max() > 0.25 and np.abs(seg[:, other]).max() == 0.0, u["text"]
    before = _call_wav(tmp_path / "ref.wav", customer_channel)
    raw = parse_wav(before.read_bytes(), replace_limits())[0]
    # the recording itself, channels in the convention's order (within the PCM step of decoding and re-encoding)
    assert np.abs(samples - (raw if customer_channel == 1 else raw[:, ::-1])).max() <= 2 / 32768


def replace_limits():
    from dataclasses import replace

    from schemas.envelope import ContractLimits

    return replace(ContractLimits(), max_audio_s=3600.0)


@pytest.mark.slow
def test_malformed_transcript_exits_with_one_sentence_and_produces_nothing(broker, make_topics, tmp_path):
    """The real command in its own process: exit code 2, one line on stderr, no record on any topic."""
    from tests.test_simulator import read_topics

    ks, topics = make_topics(partitions=1)
    wav = _call_wav(tmp_path / "call-0002.wav", 1)
    bad = tmp_path / "aws.json"
    doc = json.loads((DATA / "aws.json").read_text())
    k = next(i for i, item in enumerate(doc["results"]["items"]) if i >= 40 and item["type"] == "pronunciation")
    del doc["results"]["items"][k]["end_time"]  # one word without its end, deep in the call
    bad.write_text(json.dumps(doc))
    env = {"FW_KAFKA__TOPIC_PREFIX": ks.topic_prefix, "FW_KAFKA__PARTITIONS": "1", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "FW_VAR_DIR": str(tmp_path / "var")}
    r = subprocess.run([sys.executable, "-m", "services.cli", "ingest", "call", str(wav), "--transcript", str(bad),
                        "--format", "aws", "--bootstrap", broker.bootstrap], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    message = " ".join(r.stderr.split())
    assert message.startswith("error:") and f"item {k} " in message and "needs start_time and end_time" in message
    assert "Traceback" not in r.stderr
    assert read_topics(broker.bootstrap, ks, topics, 1, timeout_s=3) == []


def test_prepare_call_checks_the_recording_against_the_transcript(tmp_path):
    from services.ingest.call import CallOptions, prepare_call

    wav = _call_wav(tmp_path / "call-0003.wav", 1)
    assert not prepare_call(str(wav), DATA / "aws.json", "aws").swap_channels
    assert prepare_call(str(wav), DATA / "aws.json", "aws", options=CallOptions(customer_channel=0)).swap_channels
    call = prepare_call(str(wav), DATA / "aws_channels.json", "aws", customer=("ch_0",))
    assert call.swap_channels and call.call_id == "call-0003" and "ch_0 → customer" in call.describe()
    with pytest.raises(ConfigError, match="contradicts the transcript"):
        prepare_call(str(wav), DATA / "aws_channels.json", "aws", customer=("ch_0",),
                     options=CallOptions(customer_channel=1))
    short = tmp_path / "short.wav"
    short.write_bytes(wav_bytes(np.zeros((10 * RATE, 2), np.float32), RATE))
    with pytest.raises(TranscriptError, match="runs to 19.2 s but the audio is 10.0 s long"):
        prepare_call(str(short), DATA / "call.jsonl", "jsonl", call_id="call-0003")
    with pytest.raises(ConfigError, match="not a call id"):
        prepare_call(str(wav), DATA / "call.jsonl", "jsonl", call_id="no spaces")
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_call(str(tmp_path / "missing.wav"), DATA / "call.jsonl", "jsonl")
