"""`fusionwatch ingest video|audio|logs`: real recordings and streams into the contract topics."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from schemas.errors import ConfigError

app = typer.Typer()
ingest_app = typer.Typer(
    help="Feed real data in: video files and RTSP/HTTP camera streams, audio files and streams, log files "
         "(once or followed). Records follow the wire contract (docs/contract.md).",
    no_args_is_help=True,
)
app.add_typer(ingest_app, name="ingest")

_START_HELP = ("What wall-clock time media time zero is: 'now' (default: a recording replayed faster than real time "
               "is stamped so that it ends now — consumers refuse records from the future), 'metadata' (the container's "
               "creation_time, else the file's modification time) or an RFC 3339 time such as 2026-03-01T08:00:00Z. "
               "Event times are this plus the position in the recording.")
_BOOTSTRAP_HELP = "Kafka bootstrap HOST:PORT (default FW_KAFKA_BOOTSTRAP)."
_SPEED_HELP = "Replay speed for recordings: 0 = as fast as possible (default), 1 = real time, N = N x. Live streams pace themselves."
_RETRY_HELP = ("Live streams (rtsp://, tcp://, an http:// stream without a length, ...) reconnect when they fail or end, "
               "waiting 0.5 s, 1 s, 2 s, ... up to 30 s between tries; give up with an error after this many seconds "
               "without media (0 = never). Recordings end at their end.")


def _serve_metrics():
    """/metrics for a live input's connection state; None where the port is taken (another ingest
    on this host: give each its own FW_METRICS__PORT)."""
    from services.observability.server import PortInUse, serve_metrics
    from services.settings import get_settings

    try:
        return serve_metrics(get_settings(), "ingest")
    except PortInUse as e:
        logging.getLogger(__name__).warning("ingest metrics not served (%s); set FW_METRICS__PORT to a free port", e)
        return None


def _run(stats, records, bootstrap: str | None, speed: float, total_s: float | None, as_json: bool, label: str,
         tracker=None) -> None:
    """Send `records(stop)` to Kafka. With a follow-position tracker, each record sent is marked and
    the position is saved after the producer's final flush (and by the reader as it goes)."""
    import signal
    import threading
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from services.ingest.common import KafkaSink, Pacer
    from services.settings import get_settings

    stop = threading.Event()
    # SIGTERM (systemd, docker stop) ends the run like Ctrl-C: flushed, and the position saved
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    console = Console(stderr=True)
    sink = KafkaSink(get_settings(), bootstrap, stats)
    if tracker is not None:
        sink.track_delivery = True
        tracker.flush = sink.flush
    pacer = Pacer(speed, stop)
    wall0 = time.monotonic()
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task(label, total=total_s, info="")
            for kind, rec, t in records(stop):
                if not pacer.wait(t):
                    break
                sink.send(kind, rec, t)
                if tracker is not None:
                    tracker.mark_sent()
                if stats.records % 20 == 1:
                    span = (stats.last_time - stats.first_time) if stats.first_time is not None else 0.0
                    progress.update(task, completed=span if total_s else None,
                                    info=f"{stats.records:,} records ({stats.by_kind['frames']} frames, "
                                         f"{stats.by_kind['audio']} audio, {stats.by_kind['logs']} logs)")
            progress.update(task, completed=total_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            if tracker is not None:
                tracker.checkpoint()
        finally:
            sink.close()
            stats.wall_seconds = time.monotonic() - wall0
    if as_json:
        print(json.dumps(stats.to_json(), indent=2))
    else:
        extra = ""
        if stats.truncated_lines or stats.replaced_bytes_lines:
            extra = f"; {stats.truncated_lines} long lines cut, {stats.replaced_bytes_lines} lines with non-UTF-8 bytes repaired"
        console.print(f"produced {stats.records:,} records for {stats.asset} "
                      f"({stats.by_kind['frames']} frames, {stats.by_kind['audio']} audio chunks, "
                      f"{stats.by_kind['logs']} log lines, {stats.bytes / 1e6:.1f} MB) in {stats.wall_seconds:.1f} s{extra}")


@ingest_app.command("video")
def video(
    src: str = typer.Argument(..., help="A video file (MP4, MKV, ...) or a stream URL (rtsp://, http://, ...)."),
    asset: str = typer.Option(..., "--asset", "-a", help="Asset id the records are keyed by, e.g. L3-S2."),
    fps: float = typer.Option(4.0, "--fps", help="Frames per second to keep (each keeps its own timestamp)."),
    start_time: str = typer.Option("now", "--start-time", help=_START_HELP),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="Also ingest the recording's audio track, on the same clock."),
    chunk_s: float = typer.Option(0.5, "--chunk-s", help="Audio chunk length in seconds."),
    resample: int = typer.Option(None, "--resample", help="Resample audio to this rate (Hz) with torchaudio; default keeps it."),
    max_width: int = typer.Option(640, "--max-width", help="Scale wider frames down to this width (0 keeps the size)."),
    quality: int = typer.Option(85, "--quality", min=10, max=100, help="JPEG quality of the frames."),
    speed: float = typer.Option(0.0, "--speed", min=0, help=_SPEED_HELP),
    rtsp_transport: str = typer.Option("tcp", "--rtsp-transport", help="RTSP transport: tcp (robust) or udp."),
    timeout_s: float = typer.Option(10.0, "--timeout", help="Seconds to wait when opening or reading a stream."),
    retry_for: float = typer.Option(300.0, "--retry-for", min=0, help=_RETRY_HELP),
    bootstrap: str = typer.Option(None, "--bootstrap", "-b", help=_BOOTSTRAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the final statistics as JSON."),
) -> None:
    """Ingest a video file or camera stream: frames sampled to --fps as JPEG, plus its audio in chunks."""
    from services.ingest.media import MediaOptions

    options = MediaOptions(fps=fps, max_width=max_width, jpeg_quality=quality, audio=audio, chunk_s=chunk_s,
                           resample=resample, open_timeout_s=timeout_s, rtsp_transport=rtsp_transport)
    _run_media(src, asset, options, start_time, speed, retry_for, bootstrap, as_json)


def _run_media(src: str, asset: str, options, start_time: str, speed: float, retry_for: float, bootstrap: str | None,
               as_json: bool) -> None:
    """Open (or connect to) a media input, then send it; a live stream ends only by Ctrl-C / SIGTERM
    or by failing for longer than --retry-for."""
    from services.ingest.common import IngestStats, check_asset, is_url
    from services.ingest.live import RetryPolicy
    from services.ingest.media import open_media

    check_asset(asset)
    server = _serve_metrics() if is_url(src) else None
    try:
        feed = open_media(src, asset, options, start_time, speed, RetryPolicy(retry_for_s=retry_for))
    except BaseException:
        if server is not None:
            server.stop()
        raise
    stats = IngestStats(feed.label if feed.live else src, asset)
    try:
        _run(stats, feed.records, bootstrap, 0.0 if feed.live else speed, feed.total_s, as_json,
             f"{'streaming' if feed.live else 'ingesting'} {feed.label}")
    finally:
        feed.close()
        if server is not None:
            server.stop()


@ingest_app.command("audio")
def audio_cmd(
    src: str = typer.Argument(..., help="An audio file (WAV, FLAC, MP3, ...) or any PyAV-readable stream URL."),
    asset: str = typer.Option(..., "--asset", "-a", help="Asset id the records are keyed by, e.g. L3-S2."),
    chunk_s: float = typer.Option(0.5, "--chunk-s", help="Chunk length in seconds."),
    resample: int = typer.Option(None, "--resample", help="Resample to this rate (Hz) with torchaudio, e.g. 16000; default keeps it."),
    start_time: str = typer.Option("now", "--start-time", help=_START_HELP),
    speed: float = typer.Option(0.0, "--speed", min=0, help=_SPEED_HELP),
    timeout_s: float = typer.Option(10.0, "--timeout", help="Seconds to wait when opening or reading a stream."),
    retry_for: float = typer.Option(300.0, "--retry-for", min=0, help=_RETRY_HELP),
    bootstrap: str = typer.Option(None, "--bootstrap", "-b", help=_BOOTSTRAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the final statistics as JSON."),
) -> None:
    """Ingest an audio file or stream as fixed-length WAV chunks stamped with their start times."""
    from services.ingest.media import MediaOptions

    options = MediaOptions(video=False, chunk_s=chunk_s, resample=resample, open_timeout_s=timeout_s)
    _run_media(src, asset, options, start_time, speed, retry_for, bootstrap, as_json)


@ingest_app.command("logs")
def logs_cmd(
    path: Path = typer.Argument(..., dir_okay=False,
                                help="The log file: syslog (RFC 3164 / 5424), JSON lines (ECS, structlog, the contract's "
                                     "msg), logfmt or plain text with a leading timestamp; a file may mix them."),
    asset: str = typer.Option(..., "--asset", "-a", help="Asset id the records are keyed by, e.g. L3-S2."),
    follow: bool = typer.Option(False, "--follow", "-F",
                                help="Keep reading new lines like `tail -F` (survives rotation) until Ctrl-C / SIGTERM; "
                                     "the position is saved, so a restart resumes at the first line not yet sent."),
    from_start: bool = typer.Option(False, "--from-start",
                                    help="With --follow and no saved position: read the existing lines first."),
    position_file: Path = typer.Option(None, "--position-file",
                                       help="With --follow: where the read position is kept (default: "
                                            "<var_dir>/ingest/positions/<asset>-<file>-<hash>.json). Delete it to start over."),
    time_source: str = typer.Option("auto", "--time-source",
                                    help="Event time of a line: 'auto' (its own timestamp if it has one, else now), "
                                         "'line' (require one) or 'now' (time read; use for old files, since consumers "
                                         "reject times more than 24 h away)."),
    tz: str = typer.Option("local", "--timezone",
                           help="Zone of timestamps that carry none (RFC 3164 syslog, '2026-03-01 08:00:00'): 'local' "
                                "(this machine's, the default: syslog daemons write local time), 'UTC' or an IANA "
                                "name such as Europe/Berlin."),
    bootstrap: str = typer.Option(None, "--bootstrap", "-b", help=_BOOTSTRAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the final statistics as JSON."),
) -> None:
    """Ingest a log file line by line (time, level, app and message read from the line), once or following it."""
    from rich.console import Console

    from services.ingest.common import IngestStats, check_asset
    from services.ingest.logformats import parse_zone
    from services.ingest.logs import TIME_SOURCES, check_log_file, log_records
    from services.ingest.position import PositionStore, PositionTracker, default_position_file
    from services.settings import get_settings

    # everything local is checked before the broker is waited for
    check_asset(asset)
    check_log_file(path, follow)
    zone = parse_zone(tz)
    if time_source not in TIME_SOURCES:
        raise ConfigError(f"--time-source must be one of {', '.join(TIME_SOURCES)}")
    tracker = None
    if follow:
        store = PositionStore(position_file or default_position_file(get_settings().var_dir, path, asset), path)
        tracker = PositionTracker(store)
        where = f"resuming at byte {tracker.saved.offset}" if tracker.saved else \
            ("from its start" if from_start else "from its end")
        Console(stderr=True).print(f"following {path} {where}; position kept in {store.path}")
    elif position_file is not None:
        raise ConfigError("--position-file needs --follow (a whole file is read from its start every time)")
    stats = IngestStats(str(path), asset)
    _run(stats, lambda stop: log_records(path, asset, stats, follow=follow, from_start=from_start,
                                         time_source=time_source, stop=stop, zone=zone, tracker=tracker),
         bootstrap, 0.0, None, as_json, f"{'following' if follow else 'ingesting'} {path.name}", tracker=tracker)


@ingest_app.command("sources")
def sources_cmd(
    path: Path = typer.Argument(..., dir_okay=False, help="A sources.toml (docs/samples/sources.toml): each asset's "
                                                          "cameras, microphones and log files."),
    kind: list[str] = typer.Option(None, "--kind", "-k",
                                   help="Only these kinds: cameras, microphones, logs (repeat; default all) — e.g. one "
                                        "service per modality reading one shared file."),
    bootstrap: str = typer.Option(None, "--bootstrap", "-b", help=_BOOTSTRAP_HELP),
) -> None:
    """Ingest every source of a sources file side by side (what `fusionwatch up --sources` runs, without the rest
    of the stack): live streams reconnect, recordings end, log files are followed. Ctrl-C / SIGTERM stops them."""
    from rich.console import Console

    from services.lifecycle import install_stop_handlers
    from services.settings import get_settings
    from services.stack.sources import SOURCE_KINDS, check_sources, load_sources, run_all, source_runs

    kinds = tuple(kind or SOURCE_KINDS)
    unknown = sorted(set(kinds) - set(SOURCE_KINDS))
    if unknown:
        raise ConfigError(f"--kind {unknown[0]!r}: use {', '.join(SOURCE_KINDS)}")
    sources = load_sources(path)
    check_sources(sources)  # local inputs before the broker is waited for
    settings = get_settings()
    bootstrap = bootstrap or settings.kafka.bootstrap
    if not bootstrap:
        raise ConfigError("no Kafka broker configured: set FW_KAFKA_BOOTSTRAP=HOST:PORT or pass --bootstrap")
    runs = source_runs(sources, settings, bootstrap, kinds)
    if not runs:
        raise ConfigError(f"{path} lists no {' or '.join(kinds)}")
    Console(stderr=True).print(f"ingesting {len(runs)} sources: {', '.join(r.name for r in runs)}")
    server = _serve_metrics()
    try:
        run_all(runs, install_stop_handlers())
    finally:
        if server is not None:
            server.stop()


@ingest_app.command("call")
def call_cmd(
    audio: str = typer.Argument(..., help="The call's recording (WAV, FLAC, MP3, ...): mono, or stereo with one speaker "
                                          "per channel."),
    transcript: Path = typer.Option(..., "--transcript", "-t", dir_okay=False,
                                    help="The call's transcript, times in seconds from the start of the recording."),
    fmt: str = typer.Option(..., "--format", "-f",
                            help="whisper (OpenAI Whisper / WhisperX JSON), aws (AWS Transcribe JSON), google (Google "
                                 "Speech-to-Text JSON) or jsonl (one turn a line: speaker, start, end, text)."),
    call_id: str = typer.Option(None, "--call-id", help="The call id the records are keyed by (default: the "
                                                        "recording's file name without its extension)."),
    start: str = typer.Option("now", "--start",
                              help="Wall-clock time of the recording's first sample, RFC 3339 (e.g. "
                                   "2026-03-01T08:00:00Z); 'now' (default) stamps a replay so that the call ends now."),
    customer: list[str] = typer.Option(None, "--customer",
                                       help="A transcript speaker label that is the customer (spk_1, 2, SPEAKER_01, or "
                                            "a channel: ch_1); repeat for several. Everyone else is the agent."),
    agent: list[str] = typer.Option(None, "--agent", help="A speaker label that is the agent; everyone else is the "
                                                          "customer (or name both sides)."),
    customer_channel: int = typer.Option(None, "--customer-channel",
                                         help="Stereo recordings: the customer's channel, 0 or 1 (default: from a "
                                              "channel-labelled transcript, else 1). Channel 0 becomes the agent's."),
    chunk_s: float = typer.Option(0.5, "--chunk-s", help="Audio chunk length in seconds."),
    resample: int = typer.Option(None, "--resample", help="Resample the audio to this rate (Hz); default keeps it "
                                                          "(8 kHz telephony is the call-centre model's native rate)."),
    speed: float = typer.Option(0.0, "--speed", min=0, help=_SPEED_HELP),
    bootstrap: str = typer.Option(None, "--bootstrap", "-b", help=_BOOTSTRAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the final statistics as JSON."),
) -> None:
    """Ingest a recorded call with its transcript: audio chunks and one transcript line per speaker turn, keyed by
    the call id, on the recording's clock (docs/callcenter.md, 'Bringing your transcripts')."""
    from rich.console import Console

    from services.ingest.call import CallOptions, prepare_call
    from services.ingest.common import IngestStats

    # the whole transcript and the recording are checked before the broker is contacted
    call = prepare_call(audio, transcript, fmt, call_id, start, tuple(customer or ()), tuple(agent or ()),
                        CallOptions(chunk_s=chunk_s, resample=resample, customer_channel=customer_channel), speed)
    Console(stderr=True).print(call.describe())
    stats = IngestStats(audio, call.call_id)
    _run(stats, call.records, bootstrap, speed, call.total_s, as_json, f"ingesting call {call.call_id}")
