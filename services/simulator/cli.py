"""`fusionwatch simulate`: produce a simulated factory or call centre to the Kafka topics."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer()


@app.command()
def simulate(
    profile: str = typer.Option("factory", "--profile", "-p",
                                help="What to simulate: 'factory' (stations with camera, microphone and PLC logs) or "
                                     "'callcenter' (calls as speech audio plus transcript lines)."),
    assets: int = typer.Option(4, "--assets", "-n", min=1,
                               help="Factory: number of stations (named L1-S1, L1-S2, ... four per line). "
                                    "Call centre: number of concurrent lines."),
    duration: float = typer.Option(60.0, "--duration", "-d", min=0,
                                   help="Seconds of event time to simulate; 0 runs until Ctrl-C."),
    speed: float = typer.Option(1.0, "--speed", "-s", min=0,
                                help="Replay speed: 1 = real time, 10 = ten times faster, 0 = as fast as possible."),
    faults: str = typer.Option("none", "--faults", "-f",
                               help="Fault schedule (factory only): a preset — 'none', 'all' (every fault kind at least "
                                    "once), 'demo' (a few early faults) — or a JSON / JSON-lines file of "
                                    "{asset, kind, start, end} (epoch s, RFC 3339, or offsets in s from the start)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed and start time give identical records."),
    ground_truth: Path = typer.Option(None, "--ground-truth", "-g", dir_okay=False,
                                      help="Write ground truth here as JSON lines: injected faults (factory) or calls "
                                           "with per-utterance sentiment and frustration (call centre)."),
    bootstrap: str = typer.Option(None, "--bootstrap", "-b",
                                  help="Kafka bootstrap HOST:PORT (default FW_KAFKA_BOOTSTRAP)."),
    start_time: str = typer.Option(None, "--start-time",
                                   help="RFC 3339 event time of the first record (default: now; with --speed 0, "
                                        "now minus the duration, so a fast replay ends at the present)."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Generate everything but produce nothing: measures generation throughput."),
    as_json: bool = typer.Option(False, "--json", help="Print the final statistics as JSON."),
) -> None:
    """Simulate a plant (or call centre) and produce it to the fw.frames / fw.audio / fw.logs topics.

    Examples:

      fusionwatch simulate --assets 16 --duration 600 --faults all --ground-truth gt.jsonl

      fusionwatch simulate --profile callcenter --assets 4 --duration 300 --speed 0

      fusionwatch simulate --assets 16 --duration 60 --speed 0 --dry-run   # throughput only
    """
    import signal
    import threading

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from schemas.envelope import parse_time
    from schemas.errors import ConfigError
    from services.settings import get_settings
    from services.simulator.run import run_simulation

    t0 = None
    if start_time:
        try:
            t0 = parse_time(start_time)
        except ValueError as e:
            raise ConfigError(f"--start-time: {e}") from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C: flush what was produced, then stop
    console = Console(stderr=True)
    bounded = duration > 0
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            task = progress.add_task(f"simulating {profile}", total=duration if bounded else None, info="")

            def on_progress(stats) -> None:
                progress.update(task, completed=stats.sim_seconds,
                                info=f"{stats.sim_seconds:,.0f} s simulated, {stats.records:,} records, "
                                     f"{stats.realtime_factor:,.1f}x real time")

            stats = run_simulation(get_settings(), bootstrap, profile, assets, duration if bounded else None, speed,
                                   faults, seed, ground_truth, stop, start_time=t0, on_progress=on_progress,
                                   dry_run=dry_run)
    finally:
        signal.signal(signal.SIGINT, previous)
    if as_json:
        print(json.dumps(stats.to_json(), indent=2))
        return
    console.print(
        f"{'generated' if dry_run else 'produced'} {stats.records:,} records ({stats.bytes / 1e6:,.1f} MB: "
        f"{stats.by_kind['frames']:,} frames, {stats.by_kind['audio']:,} audio chunks, {stats.by_kind['logs']:,} log lines) "
        f"for {stats.sim_seconds:,.0f} s x {stats.assets} assets in {stats.wall_seconds:,.1f} s wall: "
        f"[bold]{stats.asset_seconds_per_wall_s:,.1f} asset-seconds per second[/] ({stats.realtime_factor:,.1f}x real time; "
        f"{stats.asset_seconds_per_cpu_s:,.1f} asset-seconds per CPU-second)"
        + (f"; {stats.ground_truth_rows} ground-truth rows in {ground_truth}" if ground_truth else "")
        + (" — stopped early" if stats.stopped_early else ""))
