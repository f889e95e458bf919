"""The notification one event revision becomes: what receivers get, with links to the review page
and the narrated clip (served by services/api/routes/media.py once the summarizer has rendered it,
a few seconds after the event closes; until then the clip URL answers 404 "no summary yet")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.events import AnomalyCloudEvent, ClosedBy

TRANSITIONS = ("opened", "escalated", "closed")


@dataclass(frozen=True)
class Links:
    review: str  # the review page, opened at this event
    event: str  # GET /api/events/{id}: the event as JSON
    clip: str  # GET /api/events/{id}/clip: the narrated MP4
    thumbnail: str

    @classmethod
    def of(cls, base_url: str, event_id: str) -> "Links":
        base = base_url.rstrip("/")
        api = f"{base}/api/events/{event_id}"
        return cls(review=f"{base}/#event={event_id}", event=api, clip=f"{api}/clip", thumbnail=f"{api}/thumbnail")


@dataclass(frozen=True)
class Notification:
    event_id: str
    revision: int
    transition: str  # opened | escalated | closed | test
    asset: str
    kind: str
    severity: str
    previous_severity: str | None  # what the receiver last heard for an escalation
    status: str
    start_time: datetime
    end_time: datetime | None
    changed_at: datetime  # when the monitor committed this revision (the CloudEvent's time)
    peak_score: float
    threshold: float
    learning: bool
    closed_by: ClosedBy | None  # AnomalyData.closed_by (None while open)
    modality_shares: dict[str, float]
    links: Links

    @property
    def key(self) -> str:
        """Idempotency key: the same for every attempt and every replay of this revision."""
        return f"{self.event_id}:{self.revision}"

    @property
    def is_open(self) -> bool:
        return self.transition in ("opened", "escalated")

    def payload(self) -> dict[str, Any]:
        """The JSON body every channel sends. Stable per revision: a retry sends the same bytes."""
        return {
            "id": self.key,
            "type": f"io.fusionwatch.notification.{self.transition}.v1",
            "transition": self.transition,
            "event_id": self.event_id,
            "revision": self.revision,
            "asset": self.asset,
            "kind": self.kind,
            "severity": self.severity,
            "previous_severity": self.previous_severity,
            "status": self.status,
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "changed_at": _iso(self.changed_at),
            "peak_score": round(self.peak_score, 4),
            "threshold": round(self.threshold, 4),
            "learning": self.learning,
            "closed_by": self.closed_by,
            "modality_shares": {k: round(v, 4) for k, v in sorted(self.modality_shares.items())},
            "review_url": self.links.review,
            "event_url": self.links.event,
            "clip_url": self.links.clip,
            "thumbnail_url": self.links.thumbnail,
        }

    def body(self) -> bytes:
        return json.dumps(self.payload(), separators=(",", ":"), sort_keys=True).encode()

    def summary(self) -> str:
        """One line for people (an MQTT dashboard, a log)."""
        return (f"{self.asset} {self.kind} {self.severity} {self.transition}: peak {self.peak_score:.2f} / "
                f"threshold {self.threshold:.2f} — {self.links.review}")


def from_cloud_event(cloud: AnomalyCloudEvent, transition: str, previous_severity: str | None,
                     base_url: str) -> Notification:
    d = cloud.data
    return Notification(
        event_id=d.event_id, revision=d.revision, transition=transition, asset=d.asset, kind=d.kind,
        severity=d.severity, previous_severity=previous_severity, status=d.status, start_time=d.start_time,
        end_time=d.end_time, changed_at=cloud.time, peak_score=d.peak_score, threshold=d.threshold,
        learning=d.learning, closed_by=d.closed_by, modality_shares=dict(d.attribution.modality_shares),
        links=Links.of(base_url, d.event_id))


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None
