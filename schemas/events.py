"""The anomaly event on `fw.events`: CloudEvents 1.0 *structured* mode (the whole CloudEvent is
the JSON record value, content-type `application/cloudevents+json`), produced by the monitor via
the outbox when an event opens, updates and closes. The summarizer and any downstream system
(MES, ticketing) consume it. `id` is stable per (event, revision), so an at-least-once relay
can be de-duplicated by consumers.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas.envelope import EVENT_CE_TYPE, SPECVERSION

EVENT_NAMESPACE = uuid.UUID("6f1c2a52-94d4-4a4e-9a8c-3f0d1de5b0a1")

Modality = Literal["frames", "audio", "logs"]
Severity = Literal["low", "medium", "high", "critical"]
Change = Literal["opened", "updated", "closed"]
# why a closed event closed: its windows fell under the threshold, or its asset stopped sending
ClosedBy = Literal["scores", "stream_stopped"]


def event_id(asset: str, start_time: datetime) -> str:
    """Natural key -> stable id: a replay of the same input yields the same id."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{asset}|{start_time.isoformat()}"))


class EvidenceRange(BaseModel):
    """Offsets of one modality's records inside the event window (inclusive), per partition."""

    topic: str
    partition: int
    first: int
    last: int


class Attribution(BaseModel):
    """Why the model flagged it, as plain data a narrator and a reviewer can use."""

    modality_shares: dict[str, float] = Field(default_factory=dict)  # sums to 1 over present modalities
    cross_modal_share: float = 0.0  # part of the score from cross-modal inconsistency
    top_frames: list[str] = Field(default_factory=list)  # RFC 3339 capture times of the most anomalous frames
    frame_region: list[float] | None = None  # [x0, y0, x1, y1] in 0..1 where the visual evidence is
    audio_band_hz: list[float] | None = None  # [low, high] of the most anomalous band
    top_log_lines: list[str] = Field(default_factory=list)
    log_codes: list[str] = Field(default_factory=list)


class AnomalyData(BaseModel):
    event_id: str
    change: Change
    revision: int
    asset: str
    kind: str = "anomaly"  # anomaly | escalation | a predicted fault kind
    severity: Severity
    status: str
    start_time: datetime
    end_time: datetime | None = None
    peak_score: float
    mean_score: float
    threshold: float
    model_version: str
    windows: int
    attribution: Attribution = Field(default_factory=Attribution)
    scores: list[tuple[str, float]] = Field(default_factory=list)  # (window end RFC 3339, score) per window
    serials: list[str] = Field(default_factory=list)
    log_lines: list[str] = Field(default_factory=list)
    evidence: dict[str, list[EvidenceRange]] = Field(default_factory=dict)
    # opened while the asset's baseline was still being learned, by the guard threshold (`threshold`)
    learning: bool = False
    # why a closed event closed: its windows fell under the threshold ("scores"), or its asset sent
    # nothing more (`monitor.stream_stopped_s`: a station switched off, a call ended), so the event
    # ends at its last window over the threshold without any sign that the fault went away
    closed_by: ClosedBy | None = None


class AnomalyCloudEvent(BaseModel):
    specversion: Literal["1.0"] = SPECVERSION
    id: str
    source: str = "/fusionwatch/monitor"
    type: Literal["io.fusionwatch.anomaly.v1"] = EVENT_CE_TYPE
    time: datetime
    subject: str  # the asset
    datacontenttype: Literal["application/json"] = "application/json"
    data: AnomalyData

    @classmethod
    def wrap(cls, data: AnomalyData, time: datetime) -> "AnomalyCloudEvent":
        return cls(id=f"{data.event_id}:{data.revision}", time=time, subject=data.asset, data=data)
