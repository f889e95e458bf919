"""Input hardening and security checks, one regression test per malformed kind and per promise.

Extends tests/test_envelope.py (which has one test per contract violation reason, decompression
bombs, oversized headers checked before decoding, a hypothesis run): here are the hostile inputs
it does not cover — path-traversal keys, far-off and malformed timestamps, JSON and WAV structures
built to exhaust the parser, header floods — plus the per-asset rate limit through a real monitor,
and the security promises of SECURITY.md (SASL_SSL/SCRAM + TLS settings reaching the Kafka
clients, no secrets in output, loopback by default, safetensors only, media paths never from
message fields, SQL through bound parameters only). API token checks live in tests/test_api.py
(test_writes_need_the_token, test_reads_need_the_token_off_loopback,
test_generated_token_when_none_is_configured).
"""

from __future__ import annotations

import ast
import io
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schemas.envelope import (
    REJECT_REASONS,
    Accepted,
    Kind,
    Rejected,
    decode,
    encode_audio,
    encode_frame,
    encode_log,
    format_time,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000.0


def log_rec(key: bytes = b"L1-S1", value: bytes = b"hello", **header_overrides: bytes):
    rec = encode_log("L1-S1", "/p", NOW, "hello")
    headers = [(k, header_overrides.get(k, v)) for k, v in rec.headers]
    return key, value, headers


def rejected(kind: Kind, key, value, headers) -> str:
    got = decode(kind, key, value, headers, now=NOW)
    assert isinstance(got, Rejected), got
    assert got.reason in REJECT_REASONS
    assert "\n" not in got.detail and "\r" not in got.detail  # safe in a log line and a Kafka header
    return got.reason


# ── keys that try to be paths ───────────────────────────────────────────────────────────────

@pytest.mark.parametrize("key", [b"../../etc/passwd", b"..", b".hidden", b"/abs/path", b"L1/../../x", b"L1\\..\\x",
                                 b"L1-S1\x00.jpg", b"L1 S1", "L1-Ｓ1".encode(), b"a" * 65, b"", b"-L1"])
def test_keys_that_try_path_traversal_are_rejected(key):
    k, v, h = log_rec(key=key, ce_asset=key)
    # a NUL is caught already as a header control character, an empty key as a missing ce_asset
    assert rejected(Kind.LOG, k, v, h) == ("bad_header" if b"\x00" in key else "missing_header" if not key
                                           else "bad_key")


def test_media_names_never_come_from_message_fields(tmp_path):
    """Summary files are named by a uuid5 of the event id; a stored path cannot leave the root."""
    from services.summarizer import media

    for hostile in ["../../etc/passwd", "/etc/shadow", "a/../../b", "..\\..\\win", "\x00"]:
        paths = media.summary_paths(tmp_path, hostile)
        for rel in (paths.video, paths.subtitles, paths.thumbnail):
            assert ".." not in rel and not rel.startswith("/")
            assert media.resolve(tmp_path, rel).is_relative_to(tmp_path.resolve())
    for escape in ["../x.mp4", "/etc/passwd", "summaries/../../x"]:
        with pytest.raises(ValueError):
            media.resolve(tmp_path, escape)


def test_no_message_field_reaches_a_file_path():
    """No services/ code builds a path from an envelope or payload field (asset, source, id, msg...)."""
    offenders = []
    for path in (ROOT / "services").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                for side in (node.left, node.right):
                    if isinstance(side, ast.Attribute) and side.attr in ("asset", "source", "id", "msg", "serial",
                                                                         "asset_id", "ce_source"):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"paths built from message fields: {offenders}"


# ── timestamps ──────────────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("stamp,reason", [
    (format_time(NOW - 10 * 86400), "time_out_of_range"),
    (format_time(NOW + 400 * 86400), "time_out_of_range"),
    ("1970-01-01T00:00:00Z", "time_out_of_range"),
    ("9999-12-31T23:59:59.999999Z", "time_out_of_range"),
    ("0001-01-01T00:00:00Z", "time_out_of_range"),
    ("2027-01-15T08:00:00", "bad_time"),  # no zone: ambiguous on a plant floor
    ("2027-13-45T99:99:99Z", "bad_time"),
    ("2027-01-15T08:00:60Z", "bad_time"),  # leap second: not representable, refused, not crashed
    ("NaN", "bad_time"),
    ("2027-01-15T08:00:00." + "9" * 5000 + "Z", "bad_time"),
    ("\u0662\u0660\u0662\u0667-01-15T08:00:00Z", "bad_time"),  # Arabic-Indic digits match \d
])
def test_timestamps_far_off_or_malformed(stamp, reason):
    k, v, h = log_rec(ce_time=stamp.encode())
    assert rejected(Kind.LOG, k, v, h) == reason


# ── logs ────────────────────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("value,ctype,reason", [
    (b"\xc3\x28 invalid continuation", b"text/plain; charset=utf-8", "not_utf8"),
    (b"\xed\xa0\x80 lone surrogate", b"text/plain", "not_utf8"),
    (b"\xef\xbb\xbf" + b"x" * (16 * 1024), b"text/plain", "log_too_large"),
    (b"[" * 8000 + b"]" * 8000, b"application/json", "bad_json"),  # nesting bomb under the size limit
    (b'{"msg": "ok", "level": {"nested": [1, 2, 3]}}', b"application/json", "bad_json"),
    (b'{"msg": "' + b"\\u0000" * 100 + b'"}', b"application/json", None),  # NULs inside JSON are data
    (b"   \n\t  ", b"text/plain", "empty_log"),
])
def test_hostile_log_lines(value, ctype, reason):
    k, _, h = log_rec(**{"content-type": ctype})
    got = decode(Kind.LOG, k, value, h, now=NOW)
    if reason is None:
        assert isinstance(got, Accepted)
    else:
        assert isinstance(got, Rejected) and got.reason == reason, got


def test_json_nesting_bomb_is_a_contract_reason_not_a_decoder_bug():
    k, _, h = log_rec(**{"content-type": b"application/json"})
    got = decode(Kind.LOG, k, b"[" * 8000 + b"]" * 8000, h, now=NOW)
    assert got.reason != "decode_error"


# ── headers ─────────────────────────────────────────────────────────────────────────────────

def test_header_flood_and_hostile_header_values():
    k, v, h = log_rec()
    flood = h + [(f"x-{i}", b"y" * 100) for i in range(20_000)]
    t0 = time.perf_counter()
    assert isinstance(decode(Kind.LOG, k, v, flood, now=NOW), Accepted)  # extra headers are allowed...
    assert time.perf_counter() - t0 < 5  # ...and cost linear time (generous bound: only catches blow-ups)
    for bad in (b"/p\x00", b"/p\r", b"/p\n", b"\xff\xfe"):
        assert rejected(Kind.LOG, *log_rec(ce_source=bad)) == "bad_header"
    assert rejected(Kind.LOG, k, v, h + [("ce_source", b"/other")]) == "duplicate_header"
    assert rejected(Kind.LOG, *log_rec(ce_id=b"i" * 257)) == "bad_header"


# ── images ──────────────────────────────────────────────────────────────────────────────────

def _jpeg(w=64, h=48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _patch_sof(jpeg: bytes, width: int, height: int) -> bytes:
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]


@pytest.mark.parametrize("width,height", [(65535, 65535), (60000, 8), (8, 60000), (0, 0), (4097, 10)])
def test_jpeg_header_claiming_absurd_dimensions_is_refused_before_decoding(width, height):
    rec = encode_frame("L1-S1", "/c", NOW, _patch_sof(_jpeg(), width, height))
    t0 = time.perf_counter()
    reason = rejected(Kind.FRAME, rec.key, rec.value, rec.headers)
    assert reason in ("image_too_large", "image_too_small", "corrupt_image", "decompression_bomb")
    assert time.perf_counter() - t0 < 2  # no attempt to allocate 65535² pixels


@pytest.mark.parametrize("cut", [2, 20, 200, -1])
def test_truncated_and_bit_flipped_jpegs_cost_one_record(cut):
    good = _jpeg(320, 240)
    value = good[:cut] if cut > 0 else bytes(b ^ 0x5A if i % 97 == 0 else b for i, b in enumerate(good))
    got = decode(Kind.FRAME, b"L1-S1", value, encode_frame("L1-S1", "/c", NOW, value).headers, now=NOW)
    assert isinstance(got, (Accepted, Rejected))  # flipped entropy data may still decode (noise)
    if isinstance(got, Rejected):
        assert got.reason in ("corrupt_image", "truncated_image")


def test_png_with_a_huge_compressed_text_chunk_is_bounded():
    """A zTXt chunk that inflates to 64 MiB inside a 70 kB PNG: refused or decoded, never inflated."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "PNG")
    png = buf.getvalue()
    bomb = chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * (64 << 20), 9))
    value = png[:33] + bomb + png[33:]
    assert len(value) < 1 << 20
    rec = encode_frame("L1-S1", "/c", NOW, value, content_type="image/png")
    got = decode(Kind.FRAME, rec.key, rec.value, rec.headers, now=NOW)
    assert isinstance(got, (Accepted, Rejected))


# ── audio ───────────────────────────────────────────────────────────────────────────────────

def _wav(tag=1, channels=1, rate=16000, bits=16, data=b"\x00\x00" * 1600, data_size=None, extra=b"") -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * max(bits, 8) // 8 & 0xFFFFFFFF,
                      channels * max(bits, 8) // 8 & 0xFFFF, bits)
    body = b"WAVE" + extra + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", len(data) if data_size is None else data_size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("value,reasons", [
    (_wav(rate=0), {"bad_sample_rate", "bad_audio_format"}),
    (_wav(rate=1), {"bad_sample_rate", "bad_audio_format"}),
    (_wav(rate=0xFFFFFFFF), {"bad_sample_rate", "bad_audio_format"}),
    (_wav(channels=0), {"bad_channels", "bad_audio_format"}),
    (_wav(channels=65535, data=b"\x00" * 65535 * 2), {"bad_channels", "bad_audio_format"}),
    (_wav(bits=0), {"bad_audio_format"}),
    (_wav(tag=0xFFFE), {"bad_audio_format", "corrupt_audio"}),  # extensible without its GUID part
    (_wav(data_size=0xFFFFFFFF), None),  # a data size that lies: read what is there
    (_wav(data=b""), {"corrupt_audio"}),
    (_wav(data=b"\x00"), {"corrupt_audio"}),  # half a sample
    (_wav()[:30], {"corrupt_audio"}),
    (b"RIFF" + b"\xff" * 4 + b"WAVE" + (b"JUNK" + struct.pack("<I", 0)) * 100_000, {"corrupt_audio"}),  # chunk walk
    (_wav(tag=3, bits=32, data=np.array([np.nan, np.inf] * 800, "<f4").tobytes()), {"corrupt_audio"}),
    # huge but finite: passed the NaN check and overflowed the model's statistics to NaN (issue 23)
    (_wav(tag=3, bits=32, data=np.full(1600, 3e38, "<f4").tobytes()), {"bad_audio_values"}),
    (_wav(tag=3, bits=32, data=np.r_[np.zeros(1599), -9.0].astype("<f4").tobytes()), {"bad_audio_values"}),
    (_wav(tag=3, bits=32, channels=2, data=np.full(3200, 3e38, "<f4").tobytes()), {"bad_audio_values"}),
])
def test_hostile_wav_files(value, reasons):
    rec = encode_audio("L1-S1", "/m", NOW, value)
    t0 = time.perf_counter()
    got = decode(Kind.AUDIO, rec.key, rec.value, rec.headers, now=NOW)
    assert time.perf_counter() - t0 < 5
    if reasons is None:
        assert isinstance(got, Accepted) and got.payload.duration_s == pytest.approx(0.1)
    else:
        assert isinstance(got, Rejected) and got.reason in reasons, got


def test_float_wav_with_headroom_is_accepted():
    """Samples a little over full scale (an unclipped mix) are data, not an attack."""
    value = _wav(tag=3, bits=32, data=(np.sin(np.arange(1600) / 5) * 7.5).astype("<f4").tobytes())
    got = decode(Kind.AUDIO, *(lambda r: (r.key, r.value, r.headers))(encode_audio("L1-S1", "/m", NOW, value)), now=NOW)
    assert isinstance(got, Accepted) and np.abs(got.payload.samples).max() == pytest.approx(7.5, rel=1e-3)


@pytest.mark.parametrize("rate", [16001, 44101, 15999, 4001, 191999, 96001])
def test_awkward_sample_rates_cost_bounded_work_and_memory(rate):
    """A rate coprime with 16 kHz made torchaudio build a (16000 x rate) kernel: 21 s and 4 GB for a
    1.6 KB chunk at 16001 Hz, over 9 GB at 44,101 Hz. Any rate now costs a bounded number of taps
    per output sample and a bounded working set (numpy's buffers are visible to tracemalloc)."""
    import tracemalloc

    from schemas.envelope import resample_plan

    plan = resample_plan(rate, 16000)
    assert plan.method in ("sinc", "polyphase")
    assert plan.kernel_entries <= 1 << 20
    assert plan.taps_per_output <= 2 * 16 * 12 + 2  # 16 zero crossings a side, widened at most 12x (192 kHz)
    n = rate // 2  # 0.5 s chunk
    data = (np.sin(np.arange(n) * 2 * np.pi * 440 / rate) * 0.5 * 32767).astype("<i2").tobytes()
    rec = encode_audio("L1-S1", "/m", NOW, _wav(rate=rate, data=data))
    tracemalloc.start()
    try:
        got = decode(Kind.AUDIO, rec.key, rec.value, rec.headers, now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(got, Accepted), got
    assert len(got.payload.samples) == -(-n * 16000 // rate)
    assert peak < 32 << 20, f"{peak / 1e6:.0f} MB peak for a {len(rec.value)}-byte chunk"
    # the tone survives: a 440 Hz sine, not noise or silence
    spectrum = np.abs(np.fft.rfft(got.payload.samples))
    assert abs(np.argmax(spectrum) * 16000 / len(got.payload.samples) - 440) < 5


def test_sinc_resampler_matches_the_polyphase_one_on_a_common_rate():
    """The bounded path and torchaudio agree where both apply (44.1 kHz): the model sees the same audio."""
    from schemas.envelope import _sinc_resample, resample

    t = np.arange(44100) / 44100
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    a, b = resample(x, 44100, 16000), _sinc_resample(x, 44100, 16000)
    assert len(a) == len(b) == 16000
    assert np.abs(a - b)[100:-100].max() < 1e-3


@pytest.mark.parametrize("ahead_s,reason", [(11, "time_in_future"), (23 * 3600, "time_in_future"), (9, None),
                                            (-3600, None)])
def test_records_stamped_ahead_of_the_consumer_clock(ahead_s, reason):
    k, v, h = log_rec(ce_time=format_time(NOW + ahead_s).encode())
    got = decode(Kind.LOG, k, v, h, now=NOW)
    assert (got.reason if isinstance(got, Rejected) else None) == reason


# ── floods: the per-asset rate limit ────────────────────────────────────────────────────────

def test_rate_limiter_unit_one_flooder_does_not_starve_the_others():
    from streamlogic.ratelimit import AssetRateLimiter

    rl = AssetRateLimiter(rate_per_s=10, burst_s=2.0)
    t = 1000.0
    flood_ok = sum(rl.allow("FLOOD", t + i / 10_000, t + 1) for i in range(10_000))  # 10k records in 1 s
    quiet_ok = sum(rl.allow(f"Q{i % 5}", t + 0.5 + i / 100, t + 1) for i in range(50))
    assert flood_ok <= 10 * 2 + 10 + 1  # burst + one second of rate
    assert quiet_ok == 50
    same_stamp = sum(rl.allow("STUCK", t, t + s) for s in range(100))  # a repeated timestamp gets no refill
    assert same_stamp == 20
    ahead = sum(rl.allow("AHEAD", t + 1000 + i, t + i / 1000) for i in range(1000))  # stamped ahead of real time
    assert ahead <= 20 + 10 + 1  # burst + one second of wall time at the rate
    many = AssetRateLimiter(rate_per_s=1, max_assets=100)
    for i in range(10_000):  # a flood of new keys keeps memory bounded
        many.allow(f"K{i}", t, t)
    assert len(many._buckets) <= 100


def test_rate_limiter_lets_a_backlog_through_at_the_plants_own_rate():
    """Catching up (after an outage or a restart): ten minutes of a 7-records/s asset read in a
    second of wall time is not a flood, and out-of-order event times across topics do not refill."""
    from streamlogic.ratelimit import AssetRateLimiter

    rl = AssetRateLimiter(rate_per_s=10, burst_s=2.0)
    now = 10_000.0
    stamps = [now - 600 + i / 7 + (0.3 if i % 3 == 0 else 0.0) for i in range(7 * 600)]
    assert all(rl.allow("L1-S1", ts, now + i / 5000) for i, ts in enumerate(stamps))


@pytest.mark.slow
def test_flooding_asset_is_rate_limited_and_the_others_still_get_their_events(broker, make_topics, unique_group,
                                                                            sqlite_url):
    from sqlalchemy import select

    from schemas.tables import Event
    from services import db
    from services.kafka import make_producer
    from services.monitor.service import Monitor
    from services.observability import metrics as m
    from services.settings import MonitorSettings, Settings
    from tests.support.scorers import BrightnessScorer
    from tests.support.streams import bright_fault_stream, produce

    ks, topics = make_topics(partitions=2)
    start = time.time() - 120
    stream = bright_fault_stream(["L1-S1", "L1-S2"], start, 30, {"L1-S2": (10, 18)})
    flood = [(Kind.LOG, encode_log("FLOOD-1", "/flood", start + i / 300, f"spam {i}")) for i in range(3000)]
    # interleave: the flood competes with the real assets for the same consumer
    mixed = sorted(stream + flood, key=lambda kr: dict(kr[1].headers)["ce_time"])
    produce(make_producer(ks, broker.bootstrap), topics, mixed)
    # 50 records per event-second with a 5 s burst (250): each real asset sends 7 records per
    # event-second (210 in all), the flooder 3000 in 10 event-seconds (at most 250 + 500 pass)
    settings = Settings(kafka=ks, monitor=MonitorSettings(per_asset_max_records_per_s=50))
    engine = db.make_engine(sqlite_url)
    limited_before = {a: m.RATE_LIMITED_RECORDS.labels(asset=a)._value.get() for a in ("FLOOD-1", "L1-S1", "L1-S2")}
    monitor = Monitor(settings, broker.bootstrap, engine, BrightnessScorer(), topics, group_id=unique_group())
    stop = threading.Event()
    t = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
    t.start()
    factory = db.session_factory(engine)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (monitor.stats.records < len(mixed) or not _closed(factory, select, Event)):
        time.sleep(0.3)
    stop.set()
    t.join(30)
    limited = {a: m.RATE_LIMITED_RECORDS.labels(asset=a)._value.get() - limited_before[a] for a in limited_before}
    assert limited["FLOOD-1"] >= 2000
    assert limited["L1-S1"] == 0 and limited["L1-S2"] == 0
    assert monitor.stats.records == len(mixed)
    assert monitor.stats.aligned >= len(stream)  # every real record made it into a window
    assert [e.asset_id for e in _closed(factory, select, Event)] == ["L1-S2"]
    engine.dispose()


def _closed(factory, select, Event):
    with factory() as s:
        return s.scalars(select(Event).where(Event.status == "closed")).all()


# ── security configuration ──────────────────────────────────────────────────────────────────

def _secure_settings(tmp_path):
    from services.settings import KafkaSettings

    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    return KafkaSettings(bootstrap="kafka-1:9093,kafka-2:9093", security_protocol="SASL_SSL",
                         sasl_mechanism="SCRAM-SHA-512", sasl_username="fusionwatch",
                         sasl_password="s3cr3t-Pa55", ssl_cafile=tmp_path / "ca.pem",
                         ssl_certfile=tmp_path / "client.pem", ssl_keyfile=tmp_path / "client.key")


def test_sasl_ssl_scram_and_tls_settings_reach_kafka_python(tmp_path):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    from services.kafka import security_config

    ks = _secure_settings(tmp_path)
    cfg = security_config(ks, ks.bootstrap)
    assert cfg["bootstrap_servers"] == ["kafka-1:9093", "kafka-2:9093"]
    assert cfg["security_protocol"] == "SASL_SSL"
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl_plain_username"] == "fusionwatch" and cfg["sasl_plain_password"] == "s3cr3t-Pa55"
    assert cfg["ssl_cafile"] == str(tmp_path / "ca.pem")
    assert cfg["ssl_certfile"] == str(tmp_path / "client.pem") and cfg["ssl_keyfile"] == str(tmp_path / "client.key")
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):  # every key is one the client knows
        unknown = set(cfg) - set(client.DEFAULT_CONFIG)
        assert not unknown, (client.__name__, unknown)


def test_same_settings_map_onto_confluent_kafka(tmp_path):
    """confluent-kafka (librdkafka) takes dotted names; the mapping is mechanical, and librdkafka
    validates every property when a client is built (it does not connect until used)."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    from services.kafka import security_config

    ks = _secure_settings(tmp_path)
    cfg = security_config(ks, ks.bootstrap)
    names = {"bootstrap_servers": "bootstrap.servers", "security_protocol": "security.protocol",
             "sasl_mechanism": "sasl.mechanism", "sasl_plain_username": "sasl.username",
             "sasl_plain_password": "sasl.password", "ssl_cafile": "ssl.ca.location",
             "ssl_certfile": "ssl.certificate.location", "ssl_keyfile": "ssl.key.location"}
    conf = {names[k]: ",".join(v) if isinstance(v, list) else v for k, v in cfg.items()}
    conf = {k: v for k, v in conf.items() if not k.startswith("ssl.")}  # the dummy PEMs would not parse
    conf["ssl.ca.location"] = "probe"  # librdkafka accepts the literal "probe" for the system store
    producer = confluent_kafka.Producer(conf)  # raises KafkaException on any unknown/invalid property
    assert producer is not None
    with pytest.raises(confluent_kafka.KafkaException):
        confluent_kafka.Producer(conf | {"sasl.mechanism": "SCRAM-SHA-999"})


def test_sasl_without_credentials_is_a_config_error():
    from services.settings import KafkaSettings

    with pytest.raises(ValueError, match="SASL needs"):
        KafkaSettings(security_protocol="SASL_SSL")


SECRETS = {"FW_KAFKA__SASL_PASSWORD": "kafka-Pw-9f3c1", "FW_API_TOKEN": "api-Tok-77e2a",
           # every password form libpq takes in a URL: the user part, ?password=, ?sslpassword=
           "FW_DATABASE_URL": "postgresql://fw:db-Pw-4c21d@127.0.0.1:1/nowhere?password=qp-Pw-8e1f0"
                              "&sslpassword=ssl-Pw-31c9a&sslmode=prefer"}
SECRET_VALUES = ("kafka-Pw-9f3c1", "api-Tok-77e2a", "db-Pw-4c21d", "qp-Pw-8e1f0", "ssl-Pw-31c9a")


def _fusionwatch(args: list[str], extra_env: dict[str, str], timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FW_")} | SECRETS | extra_env
    done = subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return done.stdout + done.stderr


def test_no_secrets_in_config_output():
    env = {"FW_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "FW_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
           "FW_KAFKA__SASL_USERNAME": "fw"}
    for args in (["config"], ["config", "--json"]):
        out = _fusionwatch(args, env)
        assert "sasl_password" in out or "SASL_PASSWORD" in out, out[-2000:]  # the setting is shown...
        for secret in SECRET_VALUES:
            assert secret not in out, f"{secret} printed by `fusionwatch {' '.join(args)}`"  # ...masked


@pytest.mark.slow
def test_no_secrets_in_monitor_start_up_logs(broker, tmp_path):
    """A monitor start with every secret set, at DEBUG, against an unreachable database: the error
    tells the user what to do without printing the password."""
    env = {"FW_KAFKA_BOOTSTRAP": broker.bootstrap, "FW_KAFKA__SASL_USERNAME": "fw",
           "FW_DATABASE__CONNECT_TIMEOUT_S": "2", "FW_VAR_DIR": str(tmp_path), "FW_LOG_LEVEL": "DEBUG",
           # the checkpoint is a local input, checked before the database is tried: give it a real one
           "FW_MODEL_DIR": str(ROOT / "models" / "pretrained" / "factory-standard")}
    out = _fusionwatch(["--log-level", "DEBUG", "monitor"], env)
    assert "did not answer" in out or "database" in out.lower(), out[-2000:]
    for secret in SECRET_VALUES:
        assert secret not in out, f"{secret} appears in the monitor's output:\n{out[-3000:]}"


@pytest.mark.parametrize("url,shown", [
    ("postgresql://fw:pw1@db/x", "postgresql://fw:***@db/x"),
    ("postgresql://fw@db/x?password=pw2&sslmode=require", "postgresql://fw@db/x?password=***&sslmode=require"),
    ("postgresql://db/x?sslpassword=pw3&PASSWORD=pw4", "postgresql://db/x?sslpassword=***&PASSWORD=***"),
    ("postgresql+psycopg://u:p%40ss@db:5432/x?passfile=/p", "postgresql+psycopg://u:***@db:5432/x?passfile=***"),
    ("sqlite:///./var/fusionwatch.db", "sqlite:///./var/fusionwatch.db"),
])
def test_database_urls_are_printed_without_any_password(url, shown):
    from services.db import redact, safe_url

    assert safe_url(url) == shown
    message = redact("driver said: pw1 pw2 pw3 pw4 p@ss", url)
    for secret in ("pw1", "pw2", "pw3", "pw4", "p@ss"):
        if secret in url or (secret == "p@ss" and "p%40ss" in url):
            assert secret not in message, message


def test_network_endpoints_bind_to_loopback_by_default():
    from services.settings import Settings

    s = Settings()
    assert s.metrics.host == "127.0.0.1"
    assert s.api.host == "127.0.0.1"
    assert s.broker.host == "127.0.0.1"


def test_metrics_server_really_listens_on_loopback_only():
    import socket

    from services.broker.embedded import free_port
    from services.observability.server import serve_metrics
    from services.settings import MetricsSettings, Settings

    server = serve_metrics(Settings(metrics=MetricsSettings(port=free_port())), "monitor", {})
    try:
        host = server.url.split("//", 1)[1].rsplit(":", 1)[0]
        assert host == "127.0.0.1"
        addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        try:  # the address the default route leaves from (a UDP connect sends nothing)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(("10.255.255.255", 1))
                addrs.add(probe.getsockname()[0])
        except OSError:
            pass
        addrs = {a for a in addrs if not a.startswith("127.")}
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        assert server.server_address[0] == "127.0.0.1"  # the socket itself, not only the printed URL
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # reachable where it should be
        if not addrs:
            pytest.skip("this machine has no non-loopback IPv4 address to try")
        for addr in addrs:  # not reachable on any other interface
            with pytest.raises(OSError):
                socket.create_connection((addr, port), timeout=1).close()
    finally:
        server.stop()


# ── code checks: checkpoints and SQL ────────────────────────────────────────────────────────

def _source_files():
    for folder in ("services", "models", "schemas"):
        yield from (ROOT / folder).rglob("*.py")


def test_checkpoints_are_only_safetensors():
    """Nothing unpickles: no torch.load, pickle/joblib/dill loads, or numpy allow_pickle=True."""
    offenders = []
    for path in _source_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("torch.load", "pickle.load", "pickle.loads", "joblib.load", "dill.load", "dill.loads",
                        "cPickle.load", "Unpickler"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and isinstance(kw.value, ast.Constant) and kw.value.value:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} allow_pickle=True")
    assert not offenders, offenders
    uses = [p for p in _source_files() if "safetensors" in p.read_text()]
    assert uses, "checkpoints are expected to be written with safetensors"


def test_sql_only_through_bound_parameters():
    """No SQL string built with f-strings, %, + or .format() and handed to execute/text/exec_driver_sql."""
    sinks = {"execute", "exec_driver_sql", "text", "executemany", "executescript"}
    offenders = []
    for path in _source_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in sinks:
                continue
            arg = node.args[0]
            built = isinstance(arg, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) for v in arg.values)
            built |= isinstance(arg, ast.BinOp) and isinstance(arg.op, (ast.Mod, ast.Add)) and \
                any(isinstance(s, (ast.Constant, ast.JoinedStr)) and isinstance(getattr(s, "value", ""), str)
                    for s in (arg.left, arg.right))
            built |= isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "format"
            if built:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"SQL built from strings (use bound parameters): {offenders}"
