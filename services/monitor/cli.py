"""`fusionwatch monitor`: one member of the monitor consumer group."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


@app.command()
def monitor(
    checkpoint: Path = typer.Option(None, help="Model checkpoint directory (default: FW_MODEL_DIR or var/model). "
                                                "Train one with `fusionwatch train`."),
    group: str = typer.Option(None, help="Consumer group id (default FW_MONITOR__GROUP_ID, fw-monitor). "
                                         "Start more processes with the same group to share the partitions."),
    device: str = typer.Option(None, help="auto, cpu or cuda (default FW_MONITOR__DEVICE, auto: CUDA + bf16 when present)."),
) -> None:
    """Score the input topics and record anomaly events in SQL, exactly once.

    Consumes fw.frames, fw.audio and fw.logs as one member of a consumer group, aligns each asset's
    streams into event-time windows, scores them with the fusion model in batches, and writes events
    together with the consumed offsets in one transaction. Rejected records go to fw.dlq with a reason;
    event changes are published to fw.events. Needs FW_KAFKA_BOOTSTRAP (or run `fusionwatch up`).
    Stops cleanly on Ctrl-C / SIGTERM.
    """
    from services.monitor.runner import check_checkpoint, run_monitor
    from services.settings import get_settings

    settings = get_settings()
    checkpoint = checkpoint or settings.checkpoint_dir
    check_checkpoint(checkpoint)  # a local input: checked before any broker or database is waited for
    run_monitor(settings, checkpoint=checkpoint, group=group, device=device)
