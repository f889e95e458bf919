"""Shift boundaries: which shift a digest covers.

Shifts are configured as start times of day in the plant's time zone (`scheduler.shifts`, e.g.
06:00, 14:00, 22:00); each shift runs to the next start. A digest fires at each boundary and
covers the shift that just ended. Computed in the plant's zone, so a daylight-saving night shift
is an hour shorter or longer, as the people working it experience.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from schemas.errors import ConfigError


@dataclass(frozen=True)
class Shift:
    start: datetime  # aware
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M}–{self.end:%H:%M} {self.start.tzname() or ''}".strip()


def zone(name: str):
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except Exception:
        raise ConfigError(f"scheduler.timezone {name!r} is not a known IANA time zone (e.g. Europe/Berlin, UTC)") from None


def parse_shifts(values: list[str]) -> list[time]:
    """'HH:MM' or 'HH:MM:SS' strings -> sorted, distinct times of day."""
    out = []
    for value in values:
        try:
            parts = [int(p) for p in value.strip().split(":")]
            out.append(time(*parts))
        except (ValueError, TypeError):
            raise ConfigError(f"scheduler.shifts: {value!r} is not a time of day like 06:00 or 22:00:00") from None
    if not out:
        raise ConfigError("scheduler.shifts is empty; give at least one shift start, e.g. [\"06:00\"]")
    return sorted(set(out))


def shift_ending_at(end: datetime, starts: list[time], tz: str) -> Shift:
    """The shift that ends at boundary `end` (which should be one of the configured starts)."""
    z = zone(tz)
    local_end = end.astimezone(z)
    candidates = []
    for days in (0, 1, 2):
        d = (local_end - timedelta(days=days)).date()
        for t in starts:
            candidate = datetime.combine(d, t, tzinfo=z)
            if candidate < local_end - timedelta(seconds=0.5):
                candidates.append(candidate)
    return Shift(max(candidates), local_end)


def last_completed_shift(now: datetime, starts: list[time], tz: str) -> Shift:
    """The most recent shift that has ended by `now`."""
    z = zone(tz)
    local = now.astimezone(z)
    boundaries = [datetime.combine((local - timedelta(days=days)).date(), t, tzinfo=z)
                  for days in (0, 1, 2) for t in starts]
    end = max(b for b in boundaries if b <= local)
    return shift_ending_at(end, starts, tz)
