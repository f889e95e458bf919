"""The registry of profiles: how the same contract, model and services are read (base.py)."""

from __future__ import annotations

from services.profiles.base import Profile
from services.profiles.callcenter import CallCentreProfile
from services.profiles.factory import FactoryProfile

PROFILES: dict[str, Profile] = {p.name: p for p in (FactoryProfile(), CallCentreProfile())}


def get_profile(name: str | None = None) -> Profile:
    """The named profile; None: FW_PROFILE (settings), else factory."""
    from schemas.errors import ConfigError

    if name is None:
        from services.settings import get_settings

        name = get_settings().profile
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; use one of {', '.join(PROFILES)}") from None
