"""`fusionwatch ingest video|audio|logs`: real recordings and streams into the contract topics."""

from __future__ import annotations

import json
from pathlib import Path

import typer

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


def _run(stats, records, bootstrap: str | None, speed: float, total_s: float | None, as_json: bool, label: str) -> None:
    import signal
    import threading
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from services.ingest.common import KafkaSink, Pacer
    from services.settings import get_settings

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    console = Console(stderr=True)
    sink = KafkaSink(get_settings(), bootstrap, stats)
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
                if stats.records % 20 == 1:
                    span = (stats.last_time - stats.first_time) if stats.first_time is not None else 0.0
                    progress.update(task, completed=span if total_s else None,
                                    info=f"{stats.records:,} records ({stats.by_kind['frames']} frames, "
                                         f"{stats.by_kind['audio']} audio, {stats.by_kind['logs']} logs)")
            progress.update(task, completed=total_s)
    finally:
        signal.signal(signal.SIGINT, previous)
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
    bootstrap: str = typer.Option(None, "--bootstrap", "-b", help=_BOOTSTRAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the final statistics as JSON."),
) -> None:
    """Ingest a video file or camera stream: frames sampled to --fps as JPEG, plus its audio in chunks."""
    from services.ingest.common import IngestStats, check_asset, resolve_origin
    from services.ingest.media import MediaOptions, media_records, open_container

    check_asset(asset)
    options = MediaOptions(fps=fps, max_width=max_width, jpeg_quality=quality, audio=audio, chunk_s=chunk_s,
                           resample=resample, open_timeout_s=timeout_s, rtsp_transport=rtsp_transport)
    container = open_container(src, options)
    total = container.duration / 1e6 if container.duration else None
    origin = resolve_origin(start_time, container.metadata.get("creation_time"), src)
    if start_time.strip() == "now" and total and (speed == 0 or speed > 1):
        origin -= total  # a fast replay ends at the present, never ahead of the consumers' clock
    stats = IngestStats(src, asset)
    try:
        _run(stats, lambda stop: media_records(container, src, asset, origin, options), bootstrap, speed, total, as_json,
             f"ingesting {Path(src).name if '://' not in src else src}")
    finally:
        container.close()


@ingest_app.command("audio")
def audio_cmd(
    src: str = typer.Argument(..., help="An audio file (WAV, FLAC, MP3, ...) or any PyAV-readable stream URL."),
    asset: str = typer.Option(..., "--asset", "-a", help="Asset id the records are keyed by, e.g. L3-S2."),
    chunk_s: float = typer.Option(0.5, "--chunk-s", help="Chunk length in seconds."),
    resample: int = typer.Option(None, "--resample", help="Resample to this rate (Hz) with torchaudio, e.g. 16000; default keeps it."),
    start_time: str = typer.Option("now", "--start-time", help=_START_HELP),
    speed: float = typer.Option(0.0, "--speed", min=0, help=_SPEED_HELP),
    timeout_s: float = typer.Option(10.0, "--timeout", help="Seconds to wait when opening or reading a stream."),
    bootstrap: str = typer.Option(None, "--bootstrap", "-b", help=_BOOTSTRAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the final statistics as JSON."),
) -> None:
    """Ingest an audio file or stream as fixed-length WAV chunks stamped with their start times."""
    from services.ingest.common import IngestStats, check_asset, resolve_origin
    from services.ingest.media import MediaOptions, media_records, open_container

    check_asset(asset)
    options = MediaOptions(video=False, chunk_s=chunk_s, resample=resample, open_timeout_s=timeout_s)
    container = open_container(src, options)
    total = container.duration / 1e6 if container.duration else None
    origin = resolve_origin(start_time, container.metadata.get("creation_time"), src)
    if start_time.strip() == "now" and total and (speed == 0 or speed > 1):
        origin -= total  # a fast replay ends at the present, never ahead of the consumers' clock
    stats = IngestStats(src, asset)
    try:
        _run(stats, lambda stop: media_records(container, src, asset, origin, options), bootstrap, speed, total, as_json,
             f"ingesting {Path(src).name if '://' not in src else src}")
    finally:
        container.close()


@ingest_app.command("logs")
def logs_cmd(
    path: Path = typer.Argument(..., dir_okay=False, help="The log file (plain text or JSON lines)."),
    asset: str = typer.Option(..., "--asset", "-a", help="Asset id the records are keyed by, e.g. L3-S2."),
    follow: bool = typer.Option(False, "--follow", "-F",
                                help="Keep reading new lines like `tail -F` (survives rotation) until Ctrl-C."),
    from_start: bool = typer.Option(False, "--from-start", help="With --follow: read the existing lines first."),
    time_source: str = typer.Option("auto", "--time-source",
                                    help="Event time of a line: 'auto' (its own timestamp if it has one, else now), "
                                         "'line' (require one) or 'now' (time read; use for old files, since consumers "
                                         "reject times more than 24 h away)."),
    bootstrap: str = typer.Option(None, "--bootstrap", "-b", help=_BOOTSTRAP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the final statistics as JSON."),
) -> None:
    """Ingest a log file line by line (JSON lines keep level/code/serial/speaker), once or following it."""
    from services.ingest.common import IngestStats, check_asset
    from services.ingest.logs import log_records

    check_asset(asset)
    stats = IngestStats(str(path), asset)
    _run(stats, lambda stop: log_records(path, asset, stats, follow=follow, from_start=from_start,
                                         time_source=time_source, stop=stop),
         bootstrap, 0.0, None, as_json, f"{'following' if follow else 'ingesting'} {path.name}")
