"""Fuzzing the wire-contract decoder (`schemas.envelope.decode`) with structured inputs.

Unlike the plain-bytes property in tests/test_envelope.py, these strategies start from *real*
records — a JPEG, a PNG, PCM-16 and float32 WAVs, JSON and text logs with valid CloudEvents
headers — and mutate them the way broken or hostile devices do: bit flips, truncation, splices,
lying size and dimension fields, dropped/duplicated/poisoned headers, hostile keys. That reaches
the media decoders and the WAV chunk walker, which random bytes almost never do.

Properties, for every input: `decode` returns Accepted or Rejected (never raises), the reason is
one of REJECT_REASONS and not `decode_error` (an unexpected exception would be a decoder bug), the
detail fits one header line, an accepted payload has the promised shape, and no single input takes
more than the hypothesis deadline (a hang shows up as a DeadlineExceeded failure).

Examples per modality: FW_FUZZ_EXAMPLES (default 300, so ~900 in the default run). A long run:

    FW_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz_envelope.py -q

The kept corpus (tests/fuzz_corpus/*.json: interesting inputs, one outcome each) is replayed by
`test_corpus_replays`; grow it with `python -m tests.test_fuzz_envelope --grow 5000`, which keeps
the first input found for every (modality, outcome) not yet in the corpus.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from schemas.envelope import (
    REJECT_REASONS,
    Accepted,
    AudioPayload,
    DecodeOptions,
    FramePayload,
    Kind,
    LogPayload,
    Rejected,
    decode,
    encode_audio,
    encode_frame,
    encode_log,
    wav_bytes,
)

NOW = 1_800_000_000.0
CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
EXAMPLES = int(os.environ.get("FW_FUZZ_EXAMPLES", "300"))
OPTIONS = DecodeOptions(frame_size=(80, 60))


def _image(fmt: str, w: int, h: int, progressive: bool = False) -> bytes:
    rng = np.random.default_rng(w * h)
    buf = io.BytesIO()
    img = Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8))
    img.save(buf, fmt, **({"progressive": True} if progressive else {}))
    return buf.getvalue()


def seeds() -> dict[Kind, list]:
    """Valid records to start from, per modality."""
    stereo = np.stack([np.sin(np.arange(4410) / 7), np.cos(np.arange(4410) / 5)], 1) * 0.3
    float_wav = bytearray(wav_bytes(stereo, 44100))
    # rewrite the PCM-16 stereo file as float32 (format tag 3): same layout, other branch of the parser
    f32 = stereo.astype("<f4").tobytes()
    float_wav = b"RIFF" + struct.pack("<I", 36 + len(f32)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 3, 2, 44100, 44100 * 8, 8, 32) + b"data" + struct.pack("<I", len(f32)) + f32
    return {
        Kind.FRAME: [encode_frame("L1-S1", "/l1/cam", NOW, _image("JPEG", 160, 120)),
                     encode_frame("L1-S1", "/l1/cam", NOW, _image("JPEG", 96, 64, progressive=True)),
                     encode_frame("L1-S1", "/l1/cam", NOW, _image("PNG", 64, 48), content_type="image/png")],
        Kind.AUDIO: [encode_audio("L1-S1", "/l1/mic", NOW, wav_bytes(np.zeros(1600, np.float32), 16000)),
                     encode_audio("L1-S1", "/l1/mic", NOW, bytes(float_wav))],
        Kind.LOG: [encode_log("L1-S1", "/l1/plc", NOW, {"msg": "spindle overload", "level": "WARN", "code": "E42",
                                                       "serial": "SN-1"}),
                   encode_log("L1-S1", "/l1/plc", NOW, "cycle 12 ok")],
    }


SEEDS = seeds()

# ── mutations ───────────────────────────────────────────────────────────────────────────────

_hostile_text = st.sampled_from([b"", b"\r\n", b"\x00", b"\xff\xfe", b"../../etc/passwd", b"1.0\r\nX-A: b",
                                 b"9999-12-31T23:59:59Z", b"image/gif", b"A" * 2048, "é".encode(), b"%s%n"])
_header_names = st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type",
                                 "ce_asset", "ce_sequence", "fw_error", "x-extra"])


@st.composite
def mutated_value(draw, value: bytes) -> bytes:
    data = bytearray(value)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "splice", "insert", "u16", "u32", "dup"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "splice":
            junk = draw(st.binary(min_size=1, max_size=64))
            data[i: i + len(junk)] = junk
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif op in ("u16", "u32"):  # lying size/dimension/rate fields, big- or little-endian
            n = 2 if op == "u16" else 4
            val = draw(st.sampled_from([0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            packed = val.to_bytes(4, draw(st.sampled_from(["big", "little"])))[-n:] if val < 1 << (8 * n) else \
                b"\xff" * n
            data[i: i + n] = packed
        elif op == "dup":
            j = draw(st.integers(i, min(len(data), i + 512)))
            data[j:j] = data[i:j]
    return bytes(data)


@st.composite
def mutated_headers(draw, headers: list) -> list:
    out = list(headers)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "dup", "poison", "add", "shuffle"]))
        if op == "drop" and out:
            out.pop(draw(st.integers(0, len(out) - 1)))
        elif op == "dup" and out:
            out.append(out[draw(st.integers(0, len(out) - 1))])
        elif op == "poison" and out:
            i = draw(st.integers(0, len(out) - 1))
            out[i] = (out[i][0], draw(st.one_of(_hostile_text, st.binary(max_size=80))))
        elif op == "add":
            out.append((draw(_header_names), draw(st.one_of(_hostile_text, st.binary(max_size=40)))))
        elif op == "shuffle":
            out = draw(st.permutations(out))
    return out


_keys = st.one_of(st.just(b"L1-S1"), st.just(b"L1-S1"), _hostile_text, st.binary(max_size=70), st.none())


@st.composite
def records(draw, kind: Kind):
    seed = draw(st.sampled_from(SEEDS[kind]))
    value = draw(mutated_value(seed.value))
    headers = draw(mutated_headers(seed.headers))
    key = draw(_keys) if draw(st.integers(0, 9)) == 0 else seed.key
    return key, value, headers


def check(kind: Kind, key, value, headers):
    got = decode(kind, key, value, headers, now=NOW, options=OPTIONS)
    assert isinstance(got, (Accepted, Rejected)), got
    if isinstance(got, Rejected):
        assert got.reason in REJECT_REASONS and got.reason != "decode_error", got
        assert "\n" not in got.detail and len(got.detail) < 1000
    elif kind is Kind.FRAME:
        assert isinstance(got.payload, FramePayload) and got.payload.image.shape == (60, 80, 3)
    elif kind is Kind.AUDIO:
        assert isinstance(got.payload, AudioPayload) and got.payload.samples.ndim == 1
        assert got.payload.samples.dtype == np.float32 and np.all(np.isfinite(got.payload.samples))
    else:
        assert isinstance(got.payload, LogPayload) and got.payload.msg
    return got


FUZZ = settings(max_examples=EXAMPLES, deadline=2000, suppress_health_check=list(HealthCheck), database=None,
                derandomize=not os.environ.get("FW_FUZZ_RANDOM"))


@FUZZ
@given(records(Kind.FRAME))
def test_fuzz_frames(rec):
    check(Kind.FRAME, *rec)


@FUZZ
@given(records(Kind.AUDIO))
def test_fuzz_audio(rec):
    check(Kind.AUDIO, *rec)


@FUZZ
@given(records(Kind.LOG))
def test_fuzz_logs(rec):
    check(Kind.LOG, *rec)


# ── the kept corpus ─────────────────────────────────────────────────────────────────────────

def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode()


def _unb64(s: str | None) -> bytes | None:
    return None if s is None else base64.b64decode(s)


def outcome(got) -> str:
    return "accepted" if isinstance(got, Accepted) else got.reason


def corpus_cases() -> list[Path]:
    return sorted(CORPUS.glob("*.json"))


@pytest.mark.parametrize("path", corpus_cases(), ids=lambda p: p.stem)
def test_corpus_replays(path):
    case = json.loads(path.read_text())
    kind = Kind(case["kind"])
    got = check(kind, _unb64(case["key"]), _unb64(case["value"]), [(n, _unb64(v)) for n, v in case["headers"]])
    assert outcome(got) == case["outcome"], (case.get("note"), got)


def test_corpus_is_kept():
    assert len(corpus_cases()) >= 20, "tests/fuzz_corpus/ lost its cases"


def save(kind: Kind, key, value, headers, note: str) -> Path:
    got = decode(kind, key, value, headers, now=NOW, options=OPTIONS)
    name = f"{kind.value}-{outcome(got)}-{abs(hash((key, value, tuple(headers)))) % 10**8:08d}.json"
    path = CORPUS / name
    path.write_text(json.dumps({"kind": kind.value, "outcome": outcome(got), "note": note, "key": _b64(key),
                                "value": _b64(value), "headers": [[n, _b64(v)] for n, v in headers]}, indent=1))
    return path


def grow(n: int) -> None:
    """Random mutations (hypothesis' own generators, drawn with `example()`), keeping every new outcome."""
    CORPUS.mkdir(exist_ok=True)
    have = {(p.name.split("-")[0], p.name.split("-")[1]) for p in corpus_cases()}
    random.seed(1)
    for i in range(n):
        kind = random.choice(list(Kind))
        key, value, headers = records(kind).example()
        got = check(kind, key, value, headers)
        if (kind.value, outcome(got)) not in have:
            have.add((kind.value, outcome(got)))
            print("kept", save(kind, key, value, headers, f"found by --grow after {i} inputs").name)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--grow"]:
        grow(int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
