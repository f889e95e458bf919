"""`fusionwatch up`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


@app.command()
def up(
    profile: str = typer.Option(None, help="factory (default) or callcenter."),
    assets: int = typer.Option(4, min=1, help="Simulated assets (stations, or concurrent calls)."),
    faults: str = typer.Option(None, help="Fault schedule: a preset (none, demo, all) or a JSON/JSONL file "
                                            "(factory profile; default demo — calls carry their own labels)."),
    speed: float = typer.Option(1.0, min=0, help="Simulation speed: 1 = real time, N = N× faster."),
    duration: float = typer.Option(None, help="Stop after this many seconds (default: run until Ctrl-C)."),
    api: bool = typer.Option(True, help="Serve the review page and API."),
    train_first: bool = typer.Option(False, "--train-first",
                                     help="With no model in var/model: train the quick recipe (~2 min) instead of "
                                          "copying the shipped standard-recipe checkpoint (factory profile)."),
    clock: str = typer.Option(None, "--clock", metavar="HH:MM",
                              help="Start the simulated plant's clock at the most recent HH:MM UTC instead of now, "
                                   "e.g. 22:30 for the night shift or 13:55 for a shift handover (records are stamped "
                                   "from then on, in real time)."),
    sources: Path = typer.Option(None, "--sources", dir_okay=False,
                                 help="A pilot on real sources: a TOML file of each asset's cameras, microphones and "
                                      "log files (docs/samples/sources.toml), ingested instead of the simulated plant "
                                      "(factory profile)."),
) -> None:
    """Run everything on one box: broker, database, simulated plant, monitor, summarizer, scheduler, API.

    Uses the embedded Kafka-protocol broker unless FW_KAFKA_BOOTSTRAP is set, SQLite under ./var unless
    FW_DATABASE_URL is set, and the model in ./var/model (on a first start: the shipped checkpoint for the
    factory, a model trained in minutes for the call centre). Anomaly
    events print as they open and close; narrated clips appear on the review page. Ctrl-C stops it cleanly.
    """
    from services.profiles import get_profile
    from services.settings import get_settings
    from services.stack.up import up as run_up

    settings = get_settings()
    if profile:
        settings = settings.model_copy(update={"profile": profile})
    if faults is None:  # the call simulator has no fault schedule and refuses one
        faults = get_profile(settings.profile).default_faults
    pilot = None
    if sources is not None:
        from schemas.errors import ConfigError
        from services.stack.sources import load_sources

        if settings.profile != "factory":
            raise ConfigError("--sources is for the factory profile (cameras, microphones and machine logs)")
        pilot = load_sources(sources)
    run_up(settings, duration_s=duration, assets=assets, faults=faults, speed=speed, with_api=api,
           train_first=train_first, sim_start=_clock(clock) if clock else None, sources=pilot)


def _clock(text: str) -> float:
    """The most recent moment (UTC) whose clock reads HH:MM."""
    import time

    from schemas.errors import ConfigError

    try:
        hh, mm = (int(v) for v in text.split(":"))
        if not (0 <= hh < 24 and 0 <= mm < 60):
            raise ValueError
    except ValueError:
        raise ConfigError(f"--clock must be HH:MM in UTC (e.g. 22:30), not {text!r}") from None
    now = time.time()
    t = now - now % 86400 + hh * 3600 + mm * 60
    return t if t <= now else t - 86400
