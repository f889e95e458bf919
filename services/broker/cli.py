"""`fusionwatch broker`: run the embedded Kafka-protocol broker on its own."""

from __future__ import annotations

import typer

app = typer.Typer()


@app.command()
def broker(
    host: str = typer.Option(None, help="Listen address (default FW_BROKER__HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="Listen port (default FW_BROKER__PORT, 19092)."),
    partitions: int = typer.Option(None, help="Partitions per topic (default FW_KAFKA__PARTITIONS, 8)."),
) -> None:
    """Run the embedded broker (Tansu, memory storage) and create the contract's topics.

    Stops cleanly on Ctrl-C / SIGTERM. Everything it holds is lost when it stops: for durable
    operation point FW_KAFKA_BOOTSTRAP at a real Kafka cluster instead.
    """
    from services.broker.supervisor import serve_broker
    from services.settings import get_settings

    settings = get_settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update={"broker": settings.broker.model_copy(update=overrides)})
    if partitions:
        settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"partitions": partitions})})
    serve_broker(settings)
