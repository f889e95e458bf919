"""Wire contract v1: CloudEvents 1.0 over Kafka, binary content mode (see docs/contract.md).

Metadata travels in record headers, the raw payload (JPEG/PNG, WAV, text/JSON) is the record
value. This module encodes records for producers and decodes + validates them for consumers.
Decoding is also the single place media is decoded: a frame is decoded once, already small
(JPEG draft mode), and audio once, to mono float32 at the model's rate (plus each channel, named,
when the consumer asks: a call's agent and customer), so nothing downstream touches the bytes again.

`decode` never raises on bad input: it returns `Rejected(reason, detail)`; `reason` is a short,
bounded code (safe as a metric label), `detail` the human sentence that goes into `fw_error`.
"""

from __future__ import annotations

import io
import json
import re
import struct
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Final, Iterable, Union

import numpy as np

SPECVERSION: Final = "1.0"
ASSET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type", "ce_asset")


class Kind(str, Enum):
    FRAME = "frames"
    AUDIO = "audio"
    LOG = "logs"

    @property
    def ce_type(self) -> str:
        return {"frames": "io.fusionwatch.frame.v1", "audio": "io.fusionwatch.audio.v1", "logs": "io.fusionwatch.log.v1"}[self.value]

    @property
    def content_types(self) -> tuple[str, ...]:
        return {
            "frames": ("image/jpeg", "image/png"),
            "audio": ("audio/wav", "audio/x-wav", "audio/wave"),
            "logs": ("text/plain; charset=utf-8", "text/plain", "application/json"),
        }[self.value]


EVENT_CE_TYPE: Final = "io.fusionwatch.anomaly.v1"

# Every `Rejected.reason` decode can return (bounded: safe as a metric label; consumers may
# pre-create their counters from it). docs/contract.md explains each one to producers.
REJECT_REASONS = (
    "empty_value", "value_too_large", "duplicate_header", "bad_header", "missing_header", "bad_specversion",
    "bad_type", "bad_content_type", "bad_key", "key_mismatch", "bad_time", "time_out_of_range", "time_in_future",
    "corrupt_image", "truncated_image", "image_too_large", "image_too_small", "decompression_bomb",
    "corrupt_audio", "bad_audio_values", "bad_audio_format", "bad_sample_rate", "bad_channels", "audio_too_long",
    "log_too_large", "not_utf8", "empty_log", "bad_json", "decode_error",
)


@dataclass(frozen=True)
class ContractLimits:
    max_value_bytes: int = 1 << 20
    max_frame_px: int = 4096  # per side
    max_audio_s: float = 10.0
    max_audio_channels: int = 8
    min_sample_rate: int = 4000
    max_sample_rate: int = 192_000
    max_log_bytes: int = 16 * 1024
    max_clock_skew_s: float = 24 * 3600.0
    # how far ahead of the consumer's clock a record may be stamped (producer clock skew). Legit
    # records are stamped at capture, so they are never ahead by more than the clocks disagree; one
    # stamped hours ahead would hold its asset's windows open (time_in_future)
    max_future_skew_s: float = 10.0
    # float WAV samples are nominally in [-1, 1]; a little headroom is normal (an unclipped mix),
    # values far outside are a broken or hostile device and overflow the features (3e38 squared is inf)
    max_float_sample: float = 8.0
    # Decoded pixels per encoded byte above which a large image is treated as a decompression
    # bomb. Camera frames compress 5-30:1 (JPEG) or 1.5-3:1 (PNG); a flat 4000x4000 PNG is ~1000:1.
    max_pixels_per_byte: float = 200.0
    bomb_min_pixels: int = 1 << 20  # small images are cheap to decode whatever their ratio


@dataclass(frozen=True)
class DecodeOptions:
    """What the consumer wants media decoded to (the model's input sizes)."""

    frame_size: tuple[int, int] = (80, 60)  # (width, height); JPEG draft decodes near it in the DCT domain
    sample_rate: int = 16_000
    decode_media: bool = True  # False: validate headers and sizes only (e.g. a router)
    jpeg_fast_path: bool = True  # False: Pillow decodes every JPEG (for comparisons; the pixels are the same)
    # keep a multi-channel audio record's channels apart as well as their mix, channel i named
    # channel_names[i] (a call's ("agent", "customer")). Empty: the mix only, and no per-channel
    # arrays are made. A record whose channel count differs from the names carries its mix only:
    # which of its channels is whose is unknown.
    channel_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.channel_names)) != len(self.channel_names):
            raise ValueError(f"channel_names must differ: {self.channel_names}")


# ── decoded payloads ────────────────────────────────────────────────────────────────────────

@dataclass(frozen=True)
class FramePayload:
    image: np.ndarray  # (H, W, 3) uint8 at DecodeOptions.frame_size
    width: int  # original size
    height: int


@dataclass(frozen=True)
class AudioPayload:
    samples: np.ndarray  # (N,) float32 mono at DecodeOptions.sample_rate, in [-1, 1]
    sample_rate: int  # == DecodeOptions.sample_rate
    original_rate: int
    channels: int
    # DecodeOptions.channel_names[i] -> channel i, each like `samples` (resampled alike, the same
    # length); None unless asked for and the record has that many channels
    named_channels: dict[str, np.ndarray] | None = None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class LogPayload:
    msg: str
    level: str | None = None
    code: str | None = None
    serial: str | None = None
    speaker: str | None = None


Payload = Union[FramePayload, AudioPayload, LogPayload]


@dataclass(frozen=True)
class Envelope:
    kind: Kind
    id: str
    source: str
    asset: str
    time: float  # event time, epoch seconds (UTC)
    content_type: str
    sequence: str | None = None


@dataclass(frozen=True)
class Accepted:
    envelope: Envelope
    payload: Payload | None  # None when DecodeOptions.decode_media is False for media

    ok = True


@dataclass(frozen=True)
class Rejected:
    reason: str  # bounded code, e.g. "missing_header", "corrupt_image"
    detail: str  # one sentence for the fw_error header and logs

    ok = False


@dataclass(frozen=True)
class WireRecord:
    """What goes to Kafka: key, value, headers."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


# ── time ────────────────────────────────────────────────────────────────────────────────────

def format_time(t: float) -> str:
    """RFC 3339, UTC, microseconds: 2026-11-26T05:24:14.123456Z."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """RFC 3339 with an explicit offset (Z or ±hh:mm) -> epoch seconds. Raises ValueError."""
    if not re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$", text):
        raise ValueError(f"ce_time {text[:40]!r} is not RFC 3339 with a zone offset")
    frac = re.search(r"\.(\d+)", text)
    if frac and len(frac.group(1)) > 6:  # Python keeps microseconds; trim nanoseconds
        text = text.replace(frac.group(0), "." + frac.group(1)[:6])
    return datetime.fromisoformat(text.replace("z", "Z").replace("t", "T")).timestamp()


# ── encoding (producers) ────────────────────────────────────────────────────────────────────

def encode(kind: Kind, asset: str, source: str, time: float, value: bytes, content_type: str,
           id: str | None = None, sequence: int | str | None = None) -> WireRecord:
    headers = [
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", (id or str(uuid.uuid4())).encode()),
        ("ce_source", source.encode()),
        ("ce_type", kind.ce_type.encode()),
        ("ce_time", format_time(time).encode()),
        ("content-type", content_type.encode()),
        ("ce_asset", asset.encode()),
    ]
    if sequence is not None:
        headers.append(("ce_sequence", str(sequence).encode()))
    return WireRecord(asset.encode(), value, headers)


def encode_frame(asset: str, source: str, time: float, image_bytes: bytes, content_type: str = "image/jpeg",
                 **kw: Any) -> WireRecord:
    return encode(Kind.FRAME, asset, source, time, image_bytes, content_type, **kw)


def encode_audio(asset: str, source: str, time: float, wav_bytes: bytes, **kw: Any) -> WireRecord:
    return encode(Kind.AUDIO, asset, source, time, wav_bytes, "audio/wav", **kw)


def encode_log(asset: str, source: str, time: float, line: str | dict[str, Any], **kw: Any) -> WireRecord:
    if isinstance(line, dict):
        return encode(Kind.LOG, asset, source, time, json.dumps(line, ensure_ascii=False).encode(), "application/json", **kw)
    return encode(Kind.LOG, asset, source, time, line.encode(), "text/plain; charset=utf-8", **kw)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """PCM 16-bit WAV from float samples in [-1, 1], shape (N,) or (N, channels)."""
    samples = np.asarray(samples, dtype=np.float32)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, channels,
                         sample_rate, sample_rate * channels * 2, channels * 2, 16, b"data", len(pcm))
    return header + pcm


# ── decoding + validation (consumers) ──────────────────────────────────────────────────────

class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail


def decode(kind: Kind, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]] | None,
           now: float, limits: ContractLimits = ContractLimits(), options: DecodeOptions = DecodeOptions()) -> Accepted | Rejected:
    """Validate one record against the contract and decode its payload. Never raises."""
    try:
        env = _envelope(kind, key, value, headers, now, limits)
        value = value or b""  # _envelope rejects a record without a value
        payload: Payload | None
        if kind is Kind.LOG:
            payload = _decode_log(value, env.content_type, limits)
        elif not options.decode_media:
            payload = None
        elif kind is Kind.FRAME:
            payload = _decode_frame(value, env.content_type, limits, options)
        else:
            payload = _decode_audio(value, limits, options)
        return Accepted(env, payload)
    except _Reject as r:
        return Rejected(r.reason, r.detail)
    except Exception as e:  # a decoder bug must cost one record, never the partition
        return Rejected("decode_error", f"unexpected {type(e).__name__} while decoding: {str(e)[:200]}")


def _header_map(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, raw in headers or ():
        if name in out:
            raise _Reject("duplicate_header", f"header {name!r} appears more than once")
        try:
            text = (raw or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject("bad_header", f"header {name!r} is not UTF-8") from None
        if any(c in text for c in "\r\n\x00"):
            raise _Reject("bad_header", f"header {name!r} contains control characters")
        out[name] = text
    return out


def _envelope(kind: Kind, key: bytes | None, value: bytes | None, headers, now: float, limits: ContractLimits) -> Envelope:
    if value is None:
        raise _Reject("empty_value", "record value is empty (tombstone); a payload is required")
    if len(value) > limits.max_value_bytes:
        raise _Reject("value_too_large", f"value is {len(value)} bytes, over the {limits.max_value_bytes}-byte limit")
    h = _header_map(headers)
    missing = [n for n in REQUIRED_HEADERS if not h.get(n)]
    if missing:
        raise _Reject("missing_header", f"required header(s) missing: {', '.join(missing)}")
    if h["ce_specversion"] != SPECVERSION:
        raise _Reject("bad_specversion", f"ce_specversion is {h['ce_specversion'][:20]!r}, expected '1.0'")
    if h["ce_type"] != kind.ce_type:
        raise _Reject("bad_type", f"ce_type {h['ce_type'][:60]!r} does not belong on the {kind.value} topic ({kind.ce_type})")
    content_type = h["content-type"].strip().lower()
    if content_type not in kind.content_types:
        raise _Reject("bad_content_type", f"content-type {content_type[:60]!r} is not one of {', '.join(kind.content_types)}")
    try:
        key_text = (key or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject("bad_key", "record key is not UTF-8") from None
    if not ASSET_RE.match(key_text):
        raise _Reject("bad_key", f"record key {key_text[:70]!r} is not an asset id (^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$)")
    if h["ce_asset"] != key_text:
        raise _Reject("key_mismatch", f"ce_asset {h['ce_asset'][:70]!r} differs from the record key {key_text!r}")
    if len(h["ce_id"]) > 256 or len(h["ce_source"]) > 1024:
        raise _Reject("bad_header", "ce_id or ce_source is unreasonably long")
    try:
        t = parse_time(h["ce_time"])
    except (ValueError, OverflowError) as e:
        raise _Reject("bad_time", str(e)) from None
    if abs(t - now) > limits.max_clock_skew_s:
        raise _Reject("time_out_of_range", f"ce_time {h['ce_time']} is {(t - now) / 3600:+.1f} h from the consumer clock "
                                            f"(limit ±{limits.max_clock_skew_s / 3600:.0f} h)")
    if t - now > limits.max_future_skew_s:
        raise _Reject("time_in_future", f"ce_time {h['ce_time']} is {t - now:.1f} s ahead of the consumer clock "
                                         f"(limit {limits.max_future_skew_s:g} s); sync the source's clock (NTP)")
    return Envelope(kind, h["ce_id"], h["ce_source"], key_text, t, content_type, h.get("ce_sequence"))


def _decode_frame(value: bytes, content_type: str, limits: ContractLimits, options: DecodeOptions) -> FramePayload:
    fmt = "JPEG" if content_type == "image/jpeg" else "PNG"
    target = options.frame_size
    fast = _jpeg_size(value) if fmt == "JPEG" and options.jpeg_fast_path else None
    img = None
    if fast is None:  # PNG, or a JPEG the fast path cannot read: Pillow reads it and names the fault
        img = _open_image(value, fmt, limits)
        width, height = img.size
    else:
        width, height = fast
    if width > limits.max_frame_px or height > limits.max_frame_px or width < 8 or height < 8:
        raise _Reject("image_too_large" if max(width, height) > limits.max_frame_px else "image_too_small",
                      f"image is {width}x{height}, outside 8..{limits.max_frame_px} px per side")
    pixels = width * height
    if pixels >= limits.bomb_min_pixels and pixels / len(value) > limits.max_pixels_per_byte and fmt == "PNG":
        # JPEG is decoded at 1/8 scale in the DCT domain (cheap whatever its size); PNG must inflate fully.
        raise _Reject("decompression_bomb", f"{width}x{height} PNG in {len(value)} bytes "
                                            f"({pixels / len(value):.0f} pixels per byte) looks like a decompression bomb")
    arr = _decode_jpeg_scaled(value, fast, target) if fast else None
    if arr is None:
        arr = _decode_with_pillow(img or _open_image(value, fmt, limits), fmt, target)
    elif arr.shape[1::-1] != target:
        from PIL import Image

        arr = np.asarray(Image.fromarray(arr).resize(target, Image.Resampling.BILINEAR), dtype=np.uint8)
    return FramePayload(arr, width, height)


# The fast path for JPEG: simplejpeg (libjpeg-turbo called without Pillow's per-image Python; 30 %
# less CPU per frame, the same pixels — the same library, DCT scaling and upsampling). It is strict:
# data libjpeg only warns about (a flipped bit, a cut tail) makes it give up, and Pillow, which is
# lenient and names the fault, decides instead — so what is accepted or rejected does not change.
try:
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - an optional speed-up
    _simplejpeg = None
HAS_JPEG_FAST_PATH = _simplejpeg is not None


def _jpeg_size(value: bytes) -> tuple[int, int] | None:
    if _simplejpeg is None:
        return None
    try:
        height, width, colorspace, _ = _simplejpeg.decode_jpeg_header(value)
    except ValueError:
        return None
    # CMYK/YCCK: simplejpeg converts to RGB itself, a unit off Pillow's conversion here and there
    return (width, height) if colorspace in ("YCbCr", "Gray") else None


def _decode_jpeg_scaled(value: bytes, size: tuple[int, int], target: tuple[int, int]) -> np.ndarray | None:
    """(H, W, 3) uint8 at Pillow's draft scale: the largest of 1/8, 1/4, 1/2 that stays at or above
    `target` (libjpeg-turbo also has 3/8, 5/8…, which simplejpeg would pick, with other pixels)."""
    (width, height), (tw, th) = size, target
    fit = min(width // tw, height // th)
    s = next(s for s in (8, 4, 2, 1) if s <= max(fit, 1))
    try:
        return _simplejpeg.decode_jpeg(value, colorspace="RGB", min_width=-(-width // s), min_height=-(-height // s))
    except ValueError:
        return None


def _open_image(value: bytes, fmt: str, limits: ContractLimits):
    from PIL import Image

    try:
        return Image.open(io.BytesIO(value), formats=[fmt])  # reads the header only
    except Image.DecompressionBombError as e:  # Pillow's own pixel-count guard, also header-only
        raise _Reject("image_too_large", f"{str(e)[:160]} (limit {limits.max_frame_px} px per side)") from None
    except Exception:
        raise _Reject("corrupt_image", f"value is not a readable {fmt} image") from None


def _decode_with_pillow(img, fmt: str, target: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    try:
        if fmt == "JPEG":
            img.draft("RGB", target)  # DCT-domain downscale by 1/2, 1/4 or 1/8 (never below target)
        img = img.convert("RGB")
        if img.size != target:
            img = img.resize(target, Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)
    except Exception as e:
        if "truncated" in str(e):  # Pillow: "image file is truncated (N bytes not processed)"
            raise _Reject("truncated_image", f"{fmt} image data ends early (truncated in transit or by the producer)") from None
        raise _Reject("corrupt_image", f"{fmt} image data is corrupt") from None


def _decode_audio(value: bytes, limits: ContractLimits, options: DecodeOptions) -> AudioPayload:
    samples, rate, channels = parse_wav(value, limits)
    # checked before anything is computed from the samples: a mean or a resampling filter of 3e38
    # overflows to inf, and NaN/inf would poison every feature and statistic downstream
    if not np.all(np.isfinite(samples)):
        raise _Reject("corrupt_audio", "audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(samples)))
    if peak > limits.max_float_sample:
        raise _Reject("bad_audio_values", f"float samples reach {peak:.3g}, outside ±{limits.max_float_sample:g} "
                                          "(float WAV is expected in [-1, 1])")
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    if rate != options.sample_rate:
        mono = resample(mono, rate, options.sample_rate)
    named = None
    if options.channel_names and len(options.channel_names) == channels > 1:
        # one transposed copy; each channel is a contiguous row of it, resampled on its own
        tracks = np.ascontiguousarray(samples.T)
        named = {name: resample(tracks[i], rate, options.sample_rate).astype(np.float32, copy=False)
                 for i, name in enumerate(options.channel_names)}
    return AudioPayload(np.ascontiguousarray(mono, dtype=np.float32), options.sample_rate, rate, channels, named)


# ── resampling ──────────────────────────────────────────────────────────────────────────────
# torchaudio's resampler builds a kernel of (target/g) x (rate/g) phases, g = gcd(rate, target):
# tiny for 48 kHz or 44.1 kHz, but for a rate coprime with the target (16001 Hz) it is 16000 x 16001
# floats — seconds of CPU and gigabytes per record. Such rates go to a windowed-sinc interpolator
# with a fixed number of taps per output sample instead: O(n) work and memory for any rate.
MAX_POLYPHASE_KERNEL = 1 << 20  # entries of torchaudio's kernel (4 MB); 44.1 kHz -> 16 kHz needs ~7,000
SINC_HALF_TAPS = 16  # zero crossings on each side of the interpolation kernel
SINC_BLOCK_ENTRIES = 1 << 17  # (output samples x taps) computed per block: bounds the temporary arrays (~5 MB)


@dataclass(frozen=True)
class ResamplePlan:
    method: str  # "none", "polyphase" (torchaudio) or "sinc"
    kernel_entries: int  # filter coefficients held at once
    taps_per_output: int  # multiply-adds per output sample


def resample_plan(rate: int, target: int) -> ResamplePlan:
    """How `resample` converts `rate` to `target`, and what it costs per output sample."""
    import math

    if rate == target:
        return ResamplePlan("none", 0, 0)
    g = math.gcd(rate, target)
    up, down = target // g, rate // g
    width = math.ceil(6 * down / min(up, down) / 0.99)  # torchaudio's default lowpass_filter_width=6, rolloff .99
    entries = up * (down + 2 * width)
    if entries <= MAX_POLYPHASE_KERNEL:
        return ResamplePlan("polyphase", entries, down + 2 * width)
    half = _sinc_half_width(rate, target)
    return ResamplePlan("sinc", _sinc_rows(half) * 2 * half, 2 * half)


def _sinc_half_width(rate: int, target: int) -> int:
    import math

    cutoff = min(1.0, target / rate)  # low-pass at the lower Nyquist
    return math.ceil(SINC_HALF_TAPS / cutoff)


def _sinc_rows(half: int) -> int:
    return max(64, SINC_BLOCK_ENTRIES // (2 * half))


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 `x` at `rate` -> `target` Hz; output length ceil(len * target / rate)."""
    plan = resample_plan(rate, target)
    if plan.method == "none":
        return x
    if plan.method == "polyphase":
        import torch
        import torchaudio.functional as AF

        return AF.resample(torch.from_numpy(np.ascontiguousarray(x)), rate, target).numpy()
    return _sinc_resample(np.asarray(x, dtype=np.float32), rate, target)


def _sinc_resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    n_out = -(-len(x) * target // rate)
    cutoff = min(1.0, target / rate) * 0.99
    half = _sinc_half_width(rate, target)
    offsets = np.arange(-half + 1, half + 1)
    padded = np.concatenate([np.zeros(half, np.float32), x, np.zeros(half + 1, np.float32)])
    out = np.empty(n_out, np.float32)
    rows = _sinc_rows(half)
    for lo in range(0, n_out, rows):
        k = np.arange(lo, min(lo + rows, n_out))
        pos = k * (rate / target)  # where output sample k sits on the input's sample grid
        base = np.floor(pos).astype(np.int64)
        d = (pos - base)[:, None] - offsets[None, :]  # distance to each tap, in input samples
        window = 0.5 * (1 + np.cos(np.pi * np.clip(d / (half + 1), -1, 1)))  # Hann over the kernel span
        h = (cutoff * np.sinc(cutoff * d) * window).astype(np.float32)
        out[lo: lo + len(k)] = np.einsum("ij,ij->i", padded[base[:, None] + offsets[None, :] + half], h)
    return out


def parse_wav(value: bytes, limits: ContractLimits = ContractLimits()) -> tuple[np.ndarray, int, int]:
    """RIFF/WAVE with PCM 16-bit or IEEE float32 -> ((N, channels) float32, rate, channels).

    Hand-written on purpose: the stdlib `wave` module reads PCM only, and this must check every
    field before trusting it (sizes, rates and channel counts come from unaudited devices).
    """
    if len(value) < 12 or value[:4] != b"RIFF" or value[8:12] != b"WAVE":
        raise _Reject("corrupt_audio", "value is not a RIFF/WAVE file")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(value):
        chunk_id, size = struct.unpack_from("<4sI", value, pos)
        body = value[pos + 8: pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise _Reject("corrupt_audio", "WAV fmt chunk is truncated")
            fmt = struct.unpack_from("<HHIIHH", body)
            if fmt[0] == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: real tag in the GUID
                fmt = (struct.unpack_from("<H", body, 24)[0],) + fmt[1:]
        elif chunk_id == b"data":
            data = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise _Reject("corrupt_audio", "WAV has no fmt or data chunk")
    tag, channels, rate, _, block_align, bits = fmt
    if not 1 <= channels <= limits.max_audio_channels:
        raise _Reject("bad_channels", f"{channels} channels (allowed 1..{limits.max_audio_channels})")
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise _Reject("bad_sample_rate", f"sample rate {rate} Hz (allowed {limits.min_sample_rate}..{limits.max_sample_rate})")
    dtype: np.dtype
    if (tag, bits) == (1, 16):
        dtype = np.dtype("<i2")
    elif (tag, bits) == (3, 32):
        dtype = np.dtype("<f4")
    else:
        raise _Reject("bad_audio_format", f"WAV format tag {tag} with {bits} bits; use PCM 16-bit or float32")
    frame_bytes = dtype.itemsize * channels
    n = len(data) // frame_bytes
    if n == 0:
        raise _Reject("corrupt_audio", "WAV data chunk is empty or truncated")
    if n / rate > limits.max_audio_s:
        raise _Reject("audio_too_long", f"chunk is {n / rate:.1f} s, over the {limits.max_audio_s:.0f} s limit")
    samples = np.frombuffer(data, dtype=dtype, count=n * channels).reshape(n, channels).astype(np.float32)
    if dtype.kind == "i":
        samples /= 32768.0
    return samples, rate, channels


def _decode_log(value: bytes, content_type: str, limits: ContractLimits) -> LogPayload:
    if len(value) > limits.max_log_bytes:
        raise _Reject("log_too_large", f"log record is {len(value)} bytes, over the {limits.max_log_bytes}-byte limit")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject("not_utf8", "log record is not valid UTF-8") from None
    if content_type != "application/json":
        msg = text.strip()
        if not msg:
            raise _Reject("empty_log", "log line is empty")
        return LogPayload(msg)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Reject("bad_json", f"log JSON does not parse: {e.msg} at {e.pos}") from None
    except RecursionError:  # "[[[[…" nested past the parser's stack: hostile, not a decoder bug
        raise _Reject("bad_json", "log JSON is nested too deeply") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("msg"), str) or not obj["msg"].strip():
        raise _Reject("bad_json", "log JSON must be an object with a non-empty string 'msg'")
    extras = {}
    for name in ("level", "code", "serial", "speaker"):
        v = obj.get(name)
        if v is not None and (not isinstance(v, str) or len(v) > 128):
            raise _Reject("bad_json", f"log JSON field {name!r} must be a short string")
        extras[name] = v
    return LogPayload(obj["msg"].strip(), **extras)
