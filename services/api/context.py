"""What every route needs, built once per application: settings, the session factory, the auth
policy, and the FastAPI dependencies that enforce read and write access."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.api.auth import Auth
from services.settings import Settings


@dataclass
class ApiContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    auth: Auth
    media_root: Path
    live_poll_s: float = 1.0


class ApiError(Exception):
    """An error answered as `{"error": {"status": ..., "message": ...}}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


def can_read(request: Request) -> None:
    ctx(request).auth.require_read(request)


def can_write(request: Request) -> None:
    ctx(request).auth.require_write(request)
