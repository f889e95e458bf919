"""sources.toml: the cameras, microphones and log files of each asset, for `fusionwatch up --sources`.

A pilot on real sources runs the same one-box stack as the demo, with one ingest per source in
place of the simulator. The file is typed (unknown keys are refused by name) and every source's
local side is checked before anything starts: a recording or log file exists and is readable, a
stream URL has a scheme we read and a host. Network streams then connect in their own part of
`up` and reconnect on their own (services/ingest/live.py); a source that fails for good stops
`up` with its one sentence. docs/samples/sources.toml is an example; docs/production.md, "A
pilot on real sources", the walkthrough.

A `${NAME}` in a URL is read from the environment, so camera passwords stay out of the file.
Relative paths are read from the file's own folder.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.envelope import ASSET_RE
from schemas.errors import ConfigError
from services.settings import Settings

log = logging.getLogger(__name__)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraSource(_Strict):
    url: str = Field(description="stream URL (rtsp://, http(s)://, srt://, udp://, tcp://) or a recording's path")
    fps: float = Field(4.0, gt=0, le=60, description="frames per second kept")
    audio: bool = Field(False, description="also take the camera's own sound track (else give a microphone)")
    max_width: int = Field(640, ge=0, description="wider frames are scaled down; 0 keeps the size")
    quality: int = Field(85, ge=10, le=100, description="JPEG quality")
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    timeout_s: float = Field(10.0, gt=0, description="seconds to wait when opening or reading the stream")


class MicrophoneSource(_Strict):
    url: str = Field(description="stream URL or a recording's path (WAV, FLAC, MP3, ...)")
    chunk_s: float = Field(0.5, ge=0.05, le=10)
    resample: int | None = Field(None, ge=4000, le=192000, description="output rate in Hz; default keeps the source's")
    timeout_s: float = Field(10.0, gt=0)


class LogSource(_Strict):
    path: Path = Field(description="a log file, followed like tail -F (rotation survives, the position is kept)")
    timezone: str = Field("local", description="zone of timestamps without one: local, UTC or an IANA name")
    time_source: Literal["auto", "line", "now"] = "auto"
    from_start: bool = Field(False, description="with no saved position: read the lines already in the file first")


class AssetSources(_Strict):
    cameras: list[CameraSource] = []
    microphones: list[MicrophoneSource] = []
    logs: list[LogSource] = []


class SourcesFile(_Strict):
    retry_for_s: float = Field(0.0, ge=0, description="network sources: give up after this long without media "
                                                      "(0 = never: a camera may be down for maintenance)")
    replay_speed: float = Field(1.0, gt=0, description="recordings are replayed at this pace (1 = real time) and "
                                                       "stamped from now on")
    assets: dict[str, AssetSources] = Field(min_length=1)

    @field_validator("assets")
    @classmethod
    def _asset_ids(cls, v: dict[str, AssetSources]) -> dict[str, AssetSources]:
        for asset, sources in v.items():
            if not ASSET_RE.match(asset):
                raise ValueError(f"{asset!r} is not an asset id: 1-64 letters, digits, '.', '_' or '-' (e.g. L3-S2)")
            if not (sources.cameras or sources.microphones or sources.logs):
                raise ValueError(f"asset {asset} lists no camera, microphone or log")
        return v

    def count(self) -> int:
        return sum(len(a.cameras) + len(a.microphones) + len(a.logs) for a in self.assets.values())


def load_sources(path: Path) -> SourcesFile:
    """Read and check a sources file: one sentence for what is wrong, with where it is."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--sources {path} does not exist; start from docs/samples/sources.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML ({e})") from None
    try:
        sources = SourcesFile.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise ConfigError(f"{path}: {where}: {first['msg']} (docs/samples/sources.toml shows every key)") from None
    return _resolved(sources, path.parent)


def _resolved(sources: SourcesFile, base: Path) -> SourcesFile:
    """URLs with ${NAME} filled in from the environment, relative paths from the file's folder."""

    def url(value: str) -> str:
        def var(m: re.Match) -> str:
            if m.group(1) not in os.environ:
                raise ConfigError(f"a source URL uses ${{{m.group(1)}}}, which is not set in the environment")
            return os.environ[m.group(1)]

        value = _VAR.sub(var, value)
        return value if "://" in value or Path(value).is_absolute() else str(base / value)

    for a in sources.assets.values():
        for cam in a.cameras:
            cam.url = url(cam.url)
        for mic in a.microphones:
            mic.url = url(mic.url)
        for lg in a.logs:
            lg.path = lg.path if lg.path.is_absolute() else base / lg.path
    return sources


def check_sources(sources: SourcesFile) -> None:
    """Everything local, before the broker starts: files exist and are readable, URLs are URLs."""
    from services.ingest.logformats import parse_zone
    from services.ingest.logs import check_log_file
    from services.ingest.media import check_media_source

    for asset, a in sources.assets.items():
        for s in [*a.cameras, *a.microphones]:
            try:
                check_media_source(s.url)
            except ConfigError as e:
                raise ConfigError(f"asset {asset}: {e}") from None
        for lg in a.logs:
            try:
                check_log_file(lg.path, follow=True)
                parse_zone(lg.timezone)
            except ConfigError as e:
                raise ConfigError(f"asset {asset}: {e}") from None


@dataclass(frozen=True)
class SourceRun:
    """One source as a part of `up`: a name for the logs and a body that runs until `stop`."""

    name: str
    target: Callable[[threading.Event], None]


SOURCE_KINDS = ("cameras", "microphones", "logs")


def source_runs(sources: SourcesFile, settings: Settings, bootstrap: str,
                kinds: tuple[str, ...] = SOURCE_KINDS) -> list[SourceRun]:
    """One run per source of the given kinds (an ingest service per modality takes one kind)."""
    from services.ingest.live import RetryPolicy
    from services.ingest.media import MediaOptions

    retry = RetryPolicy(retry_for_s=sources.retry_for_s)
    runs: list[SourceRun] = []
    for asset, full in sources.assets.items():
        a = AssetSources(**{k: getattr(full, k) if k in kinds else [] for k in SOURCE_KINDS})
        for i, cam in enumerate(a.cameras):
            opts = MediaOptions(fps=cam.fps, max_width=cam.max_width, jpeg_quality=cam.quality, audio=cam.audio,
                                open_timeout_s=cam.timeout_s, rtsp_transport=cam.rtsp_transport)
            runs.append(SourceRun(f"{asset}-camera{i}", _media_body(asset, cam.url, opts, retry, sources.replay_speed,
                                                                   settings, bootstrap)))
        for i, mic in enumerate(a.microphones):
            opts = MediaOptions(video=False, chunk_s=mic.chunk_s, resample=mic.resample, open_timeout_s=mic.timeout_s)
            runs.append(SourceRun(f"{asset}-microphone{i}", _media_body(asset, mic.url, opts, retry,
                                                                       sources.replay_speed, settings, bootstrap)))
        for i, lg in enumerate(a.logs):
            runs.append(SourceRun(f"{asset}-log{i}", _log_body(asset, lg, settings, bootstrap)))
    return runs


def _media_body(asset: str, url: str, options, retry, speed: float, settings: Settings, bootstrap: str):
    def run(stop: threading.Event) -> None:
        from services.ingest.common import IngestStats, KafkaSink, Pacer
        from services.ingest.media import open_media

        feed = open_media(url, asset, options, "now", speed, retry, stop)
        stats = IngestStats(feed.label, asset)
        sink = KafkaSink(settings, bootstrap, stats)
        pacer = Pacer(0.0 if feed.live else speed, stop)
        try:
            for kind, rec, t in feed.records(stop):
                if not pacer.wait(t):
                    break
                sink.send(kind, rec, t)
        finally:
            feed.close()
            sink.close()
        log.info("%s (%s): %d records (%d frames, %d audio chunks)%s", feed.label, asset, stats.records,
                 stats.by_kind["frames"], stats.by_kind["audio"], "" if stop.is_set() else "; the recording ended")

    return run


def _log_body(asset: str, spec: LogSource, settings: Settings, bootstrap: str):
    def run(stop: threading.Event) -> None:
        from services.ingest.common import IngestStats, KafkaSink
        from services.ingest.logformats import parse_zone
        from services.ingest.logs import log_records
        from services.ingest.position import PositionStore, PositionTracker, default_position_file

        stats = IngestStats(str(spec.path), asset)
        tracker = PositionTracker(PositionStore(default_position_file(settings.var_dir, spec.path, asset), spec.path))
        sink = KafkaSink(settings, bootstrap, stats)
        sink.track_delivery = True
        tracker.flush = sink.flush  # the position is saved only after Kafka acknowledged its lines
        try:
            for kind, rec, t in log_records(spec.path, asset, stats, follow=True, from_start=spec.from_start,
                                            time_source=spec.time_source, stop=stop, zone=parse_zone(spec.timezone),
                                            tracker=tracker):
                sink.send(kind, rec, t)
                tracker.mark_sent()
        finally:
            try:
                tracker.checkpoint()
            finally:
                sink.close()

    return run


def run_all(runs: list[SourceRun], stop: threading.Event) -> None:
    """Run sources side by side until `stop` or until every one has ended (recordings end); the
    first that fails for good stops the others, and its error is raised."""
    errors: list[BaseException] = []

    def body(run: SourceRun) -> None:
        try:
            run.target(stop)
        except BaseException as e:  # noqa: BLE001 - raised below, after the others stopped
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=body, args=(r,), name=f"fw-{r.name}", daemon=True) for r in runs]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) and not stop.wait(0.5):
        pass
    stop.set()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]
