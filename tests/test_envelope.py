"""Wire contract v1: round trips, one precise reason per violation, never an exception, and a
record produced by another client (confluent-kafka / librdkafka) accepted off a real broker."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from schemas.envelope import (
    REJECT_REASONS,
    Accepted,
    ContractLimits,
    DecodeOptions,
    Kind,
    Rejected,
    decode,
    encode_audio,
    encode_frame,
    encode_log,
    format_time,
    parse_time,
    wav_bytes,
)

NOW = 1_800_000_000.0


def jpeg(w: int = 320, h: int = 240, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def wav_raw(tag: int, channels: int, rate: int, bits: int, data: bytes) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny (invalid) body: never to be decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def dec(kind: Kind, rec, **kw):
    return decode(kind, rec.key, rec.value, rec.headers, now=kw.pop("now", NOW), **kw)


def with_header(rec, name: str, value: bytes | None):
    headers = [(n, v) for n, v in rec.headers if n != name]
    if value is not None:
        headers.append((name, value))
    return rec.key, rec.value, headers


# ── round trips ─────────────────────────────────────────────────────────────────────────────

def test_time_round_trip_and_zones():
    t = 1_795_671_550.123456
    assert parse_time(format_time(t)) == pytest.approx(t, abs=1e-6)
    assert parse_time("2026-11-26T05:39:10.123456789Z") == pytest.approx(parse_time("2026-11-26T05:39:10.123456Z"))
    assert parse_time("2026-11-26T07:39:10+02:00") == parse_time("2026-11-26T05:39:10Z")
    with pytest.raises(ValueError):
        parse_time("2026-11-26T05:39:10")  # no zone: ambiguous, refused


def test_frame_round_trip_jpeg_and_png_decoded_small():
    for value, ctype in ((jpeg(), "image/jpeg"), (png(Image.new("RGB", (64, 48), (10, 200, 30))), "image/png")):
        rec = encode_frame("L1-S1", "/line1/cam1", NOW, value, content_type=ctype, sequence=7)
        got = dec(Kind.FRAME, rec)
        assert isinstance(got, Accepted), got
        assert got.envelope.asset == "L1-S1" and got.envelope.source == "/line1/cam1" and got.envelope.sequence == "7"
        assert got.envelope.time == pytest.approx(NOW, abs=1e-6)
        assert got.payload.image.shape == (60, 80, 3) and got.payload.image.dtype == np.uint8
    assert got.payload.image[30, 40].tolist() == [10, 200, 30]


@pytest.mark.parametrize("size, mode", [((320, 240), "RGB"), ((1280, 720), "RGB"), ((100, 75), "RGB"),
                                        ((320, 240), "L"), ((160, 120), "CMYK")])
def test_fast_jpeg_path_gives_pillows_pixels(size, mode):
    """The simplejpeg path (libjpeg-turbo straight) and the Pillow path decode to the same pixels,
    at the model's size and at a camera's full size; what simplejpeg cannot convert (CMYK) goes to
    Pillow."""

    pytest.importorskip("simplejpeg")
    img = Image.fromarray(np.clip(np.random.default_rng(1).normal(128, 50, (size[1], size[0], 3)), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.convert(mode).save(buf, "JPEG", quality=90)
    rec = encode_frame("L1-S1", "/line1/cam1", NOW, buf.getvalue())
    for frame_size in ((80, 60), size):
        fast = dec(Kind.FRAME, rec, options=DecodeOptions(frame_size=frame_size))
        slow = dec(Kind.FRAME, rec, options=DecodeOptions(frame_size=frame_size, jpeg_fast_path=False))
        assert isinstance(fast, Accepted) and isinstance(slow, Accepted)
        assert fast.payload.image.shape == (frame_size[1], frame_size[0], 3)
        np.testing.assert_array_equal(fast.payload.image, slow.payload.image)
        assert (fast.payload.width, fast.payload.height) == size


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_damaged_jpeg_is_judged_by_pillow_on_both_paths(damage):
    """simplejpeg gives up on data libjpeg only warns about; Pillow then decides, so a damaged
    frame is accepted or rejected (with the same reason) whether or not the fast path is there."""

    pytest.importorskip("simplejpeg")
    value = bytearray(jpeg())
    if damage == "cut":
        value = value[: len(value) * 3 // 4]
    else:
        value[len(value) // 2] ^= 0x10
    rec = encode_frame("L1-S1", "/line1/cam1", NOW, bytes(value))
    fast = dec(Kind.FRAME, rec)
    slow = dec(Kind.FRAME, rec, options=DecodeOptions(jpeg_fast_path=False))
    assert type(fast) is type(slow)
    if isinstance(slow, Rejected):
        assert fast.reason == slow.reason
    else:
        np.testing.assert_array_equal(fast.payload.image, slow.payload.image)


def test_audio_round_trip_pcm_float_stereo_resampled():
    t = np.arange(22050) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], axis=1)
    for value in (wav_bytes(tone, 44100), wav_bytes(stereo, 44100),
                  wav_raw(3, 1, 44100, 32, tone.astype("<f4").tobytes())):
        got = dec(Kind.AUDIO, encode_audio("L1-S1", "/line1/mic1", NOW, value))
        assert isinstance(got, Accepted), got
        p = got.payload
        assert p.sample_rate == 16000 and p.original_rate == 44100 and p.duration_s == pytest.approx(0.5, abs=1e-3)
        spectrum = np.abs(np.fft.rfft(p.samples))
        assert np.fft.rfftfreq(len(p.samples), 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=3)
        assert np.abs(p.samples).max() == pytest.approx(0.5, abs=0.02)


def _two_voices(n: int, rate: int) -> np.ndarray:
    """(n, 2): a 300 Hz tone left, 1 kHz right, at different levels; nothing in common."""
    t = np.arange(n) / rate
    return np.stack([0.6 * np.sin(2 * np.pi * 300 * t), -0.25 * np.sin(2 * np.pi * 1000 * t)], axis=1)


def _pcm16(x: np.ndarray) -> np.ndarray:
    """What a 16-bit PCM WAV written by wav_bytes carries of float samples x."""
    return (np.clip(x.astype(np.float32), -1, 1) * np.float32(32767)).astype(np.int16).astype(np.float32) / 32768


def test_stereo_channels_are_kept_apart_when_asked():
    from schemas.envelope import resample

    x = _two_voices(4000, 8000)
    pcm = _pcm16(x)
    rec = encode_audio("call-000001", "/pbx/line1", NOW, wav_bytes(x, 8000))
    kept = dec(Kind.AUDIO, rec, options=DecodeOptions(sample_rate=8000, channel_names=("agent", "customer")))
    assert isinstance(kept, Accepted), kept
    p = kept.payload
    assert p.channels == 2 and set(p.named_channels) == {"agent", "customer"}
    # at the model's rate each channel is the record's own channel, sample for sample
    np.testing.assert_array_equal(p.named_channels["agent"], pcm[:, 0])
    np.testing.assert_array_equal(p.named_channels["customer"], pcm[:, 1])
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in p.named_channels.values())
    # the mix is what a decoder that keeps no channels gives
    mix = dec(Kind.AUDIO, rec, options=DecodeOptions(sample_rate=8000)).payload
    assert mix.named_channels is None
    np.testing.assert_array_equal(p.samples, mix.samples)
    # the other way round: channel 0 is the customer
    swapped = dec(Kind.AUDIO, rec, options=DecodeOptions(sample_rate=8000, channel_names=("customer", "agent"))).payload
    np.testing.assert_array_equal(swapped.named_channels["customer"], p.named_channels["agent"])

    # resampled like the mix: 48 kHz -> 8 kHz, each channel on its own, the same length as the mix
    wide = _two_voices(24000, 48000)
    got = dec(Kind.AUDIO, encode_audio("call-000001", "/pbx/line1", NOW, wav_bytes(wide, 48000)),
              options=DecodeOptions(sample_rate=8000, channel_names=("agent", "customer"))).payload
    wide_pcm = _pcm16(wide)
    for i, name in enumerate(("agent", "customer")):
        track = got.named_channels[name]
        assert track.shape == got.samples.shape == (4000,)
        np.testing.assert_allclose(track, resample(np.ascontiguousarray(wide_pcm[:, i]), 48000, 8000), atol=1e-6)
        spectrum = np.abs(np.fft.rfft(track))
        assert np.fft.rfftfreq(len(track), 1 / 8000)[spectrum.argmax()] == pytest.approx((300, 1000)[i], abs=3)
    np.testing.assert_allclose(got.samples, (got.named_channels["agent"] + got.named_channels["customer"]) / 2, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_record_whose_channels_do_not_match_the_names_carries_its_mix_only(channels):
    x = np.tile(_two_voices(800, 8000)[:, :1], (1, channels))
    got = dec(Kind.AUDIO, encode_audio("call-000001", "/pbx", NOW, wav_bytes(x, 8000)),
              options=DecodeOptions(sample_rate=8000, channel_names=("agent", "customer")))
    assert isinstance(got, Accepted) and got.payload.channels == channels
    assert got.payload.named_channels is None and got.payload.samples.shape == (800,)


def test_channel_names_must_differ():
    with pytest.raises(ValueError, match="differ"):
        DecodeOptions(channel_names=("agent", "agent"))


def test_log_round_trip_text_and_json():
    got = dec(Kind.LOG, encode_log("L1-S1", "/line1/plc", NOW, "  motor temp 41.2 C  "))
    assert isinstance(got, Accepted) and got.payload.msg == "motor temp 41.2 C"
    line = {"msg": "cycle 12 complete", "level": "INFO", "code": "C100", "serial": "SN-1", "speaker": None}
    got = dec(Kind.LOG, encode_log("L1-S1", "/line1/plc", NOW, line))
    assert isinstance(got, Accepted) and got.envelope.content_type == "application/json"
    assert (got.payload.msg, got.payload.level, got.payload.code, got.payload.serial) == ("cycle 12 complete", "INFO", "C100", "SN-1")


def test_decode_media_off_validates_headers_only():
    rec = encode_frame("L1-S1", "/c", NOW, b"not even an image")
    got = decode(Kind.FRAME, rec.key, rec.value, rec.headers, NOW, options=DecodeOptions(decode_media=False))
    assert isinstance(got, Accepted) and got.payload is None


# ── violations: each its own reason ─────────────────────────────────────────────────────────

def _violations() -> dict[str, tuple[Kind, tuple]]:
    frame = encode_frame("L1-S1", "/c", NOW, jpeg())
    good_jpeg = jpeg()
    audio = encode_audio("L1-S1", "/m", NOW, wav_bytes(np.zeros(800), 16000))
    log = encode_log("L1-S1", "/p", NOW, "hello")
    pcm = np.zeros(1600, "<i2").tobytes()
    return {
        "missing_header": (Kind.FRAME, with_header(frame, "ce_time", None)),
        "bad_content_type": (Kind.FRAME, with_header(frame, "content-type", b"image/gif")),
        "corrupt_image": (Kind.FRAME, (frame.key, b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, frame.headers)),
        "truncated_image": (Kind.FRAME, (frame.key, good_jpeg[: len(good_jpeg) * 2 // 3], frame.headers)),
        "image_too_large": (Kind.FRAME, (frame.key, crafted_png(50_000, 50_000),
                                         with_header(frame, "content-type", b"image/png")[2])),
        "decompression_bomb": (Kind.FRAME, (frame.key, png(Image.new("L", (2048, 2048))),
                                            with_header(frame, "content-type", b"image/png")[2])),
        "not_utf8": (Kind.LOG, (log.key, b"temp \xff\xfe high", log.headers)),
        "key_mismatch": (Kind.LOG, (b"L1-S2", log.value, log.headers)),
        "time_out_of_range": (Kind.LOG, with_header(log, "ce_time", format_time(NOW + 3 * 86400).encode())),
        "corrupt_audio": (Kind.AUDIO, (audio.key, b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", audio.headers)),
        "bad_sample_rate": (Kind.AUDIO, (audio.key, wav_raw(1, 1, 2_000_000, 16, pcm), audio.headers)),
        "bad_channels": (Kind.AUDIO, (audio.key, wav_raw(1, 64, 16000, 16, pcm * 64), audio.headers)),
        "log_too_large": (Kind.LOG, (log.key, b"x" * (16 * 1024 + 1), log.headers)),
        "bad_header": (Kind.LOG, with_header(log, "ce_source", b"/p\r\nX-Injected: 1")),
        "bad_type": (Kind.AUDIO, (frame.key, frame.value, frame.headers)),  # a frame on the audio topic
        "bad_key": (Kind.LOG, (b"bad key!", log.value, with_header(log, "ce_asset", b"bad key!")[2])),
        "audio_too_long": (Kind.AUDIO, (audio.key, wav_bytes(np.zeros(11 * 8000), 8000), audio.headers)),
        "value_too_large": (Kind.FRAME, (frame.key, b"\xff" * ((1 << 20) + 1), frame.headers)),
        "bad_json": (Kind.LOG, (log.key, b'{"level": "INFO"}', with_header(log, "content-type", b"application/json")[2])),
        "bad_time": (Kind.LOG, with_header(log, "ce_time", b"yesterday")),
        "bad_specversion": (Kind.LOG, with_header(log, "ce_specversion", b"0.3")),
        "duplicate_header": (Kind.LOG, (log.key, log.value, log.headers + [("ce_id", b"again")])),
        "bad_audio_format": (Kind.AUDIO, (audio.key, wav_raw(1, 1, 16000, 8, bytes(1600)), audio.headers)),
    }


@pytest.mark.parametrize("expected", list(_violations()))
def test_each_violation_rejected_with_its_own_reason(expected):
    kind, (key, value, headers) = _violations()[expected]
    got = decode(kind, key, value, headers, now=NOW)
    assert isinstance(got, Rejected), got
    assert got.reason == expected, got
    assert got.reason in REJECT_REASONS
    assert got.detail and "\n" not in got.detail and len(got.detail) < 300  # fits an fw_error header


def test_oversized_image_is_refused_before_any_decode(monkeypatch):
    from PIL import ImageFile

    def no_decode(self):
        raise AssertionError("pixel data must not be decoded for an oversized image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    big = io.BytesIO()
    Image.new("RGB", (5000, 8)).save(big, "JPEG")  # the per-side limit is 4096
    rec = encode_frame("L1-S1", "/c", NOW, big.getvalue())
    got = dec(Kind.FRAME, rec)
    assert isinstance(got, Rejected) and got.reason == "image_too_large" and "5000x8" in got.detail
    got = dec(Kind.FRAME, encode_frame("L1-S1", "/c", NOW, crafted_png(50_000, 50_000), content_type="image/png"))
    assert got.reason == "image_too_large"


def test_limits_are_configurable():
    rec = encode_log("L1-S1", "/p", NOW, "x" * 100)
    assert dec(Kind.LOG, rec, limits=ContractLimits(max_log_bytes=50)).reason == "log_too_large"
    late = encode_log("L1-S1", "/p", NOW - 7200, "old")
    assert isinstance(dec(Kind.LOG, late), Accepted)
    assert dec(Kind.LOG, late, limits=ContractLimits(max_clock_skew_s=3600)).reason == "time_out_of_range"


_header_names = st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type",
                                 "ce_asset", "ce_sequence", "x"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(list(Kind)), key=st.one_of(st.none(), st.binary(max_size=70)),
       value=st.one_of(st.none(), st.binary(max_size=4096)),
       headers=st.lists(st.tuples(_header_names, st.binary(max_size=64)), max_size=10),
       mutate=st.booleans())
def test_decode_never_raises(kind, key, value, headers, mutate):
    if mutate and value:
        # start from a valid record and corrupt its value, to reach the media decoders
        good = {Kind.FRAME: encode_frame("A1", "/s", NOW, jpeg(32, 24)),
                Kind.AUDIO: encode_audio("A1", "/s", NOW, wav_bytes(np.zeros(160), 16000)),
                Kind.LOG: encode_log("A1", "/s", NOW, {"msg": "x"})}[kind]
        key, headers = good.key, good.headers
        value = good.value[: len(value) % (len(good.value) + 1)] + value[:64]
    got = decode(kind, key, value, headers, now=NOW)
    assert isinstance(got, (Accepted, Rejected))
    if isinstance(got, Rejected):
        assert got.reason in REJECT_REASONS


# ── another client's record, through a real broker ─────────────────────────────────────────

def test_record_from_confluent_kafka_is_accepted(broker, make_topics):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    from kafka import TopicPartition

    from services.kafka import make_consumer

    ks, topics = make_topics(partitions=2)
    t = time.time()
    frame = jpeg(64, 48)
    # written by hand from docs/contract.md, not with our encoder
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"gw-42-000001"), ("ce_source", b"/line3/cam2"),
               ("ce_type", b"io.fusionwatch.frame.v1"), ("ce_time", format_time(t).encode()),
               ("content-type", b"image/jpeg"), ("ce_asset", b"L3-S2"), ("ce_sequence", b"1")]
    p = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(topics.frames, key=b"L3-S2", value=frame, headers=headers)
    p.produce(topics.logs, key=b"L3-S2", value=b'{"msg": "E-STOP reset", "level": "INFO", "code": "S901"}',
              headers=[(n, v) for n, v in headers if n not in ("ce_type", "content-type")]
              + [("ce_type", b"io.fusionwatch.log.v1"), ("content-type", b"application/json")])
    assert p.flush(10) == 0
    consumer = make_consumer(ks, broker.bootstrap, None)
    tps = [TopicPartition(tp, n) for tp in (topics.frames, topics.logs) for n in range(2)]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < deadline:
        for records in consumer.poll(300).values():
            got.extend(records)
    consumer.close()
    assert len(got) == 2
    for r in got:
        kind = Kind.FRAME if r.topic == topics.frames else Kind.LOG
        result = decode(kind, r.key, r.value, r.headers, now=time.time())
        assert isinstance(result, Accepted), result
        assert result.envelope.asset == "L3-S2" and result.envelope.source == "/line3/cam2"
        if kind is Kind.FRAME:
            assert result.payload.width == 64
        else:
            assert result.payload.code == "S901"
