"""Statistics, thresholds and their history, recalibration on demand, the read-cookie session,
and the health probes of the API process."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from schemas import api as shapes
from services.api import queries, writes
from services.api.auth import READ_COOKIE
from services.api.context import ApiError, can_read, can_write, ctx
from services.db import session_scope

router = APIRouter(prefix="/api", tags=["statistics and thresholds"])
Asset = Annotated[str, Path(pattern=shapes.ASSET_PATTERN, description="asset id, e.g. L1-S2")]


@router.get("/stats", response_model=shapes.StatsOut, dependencies=[Depends(can_read)],
            summary="Events per asset and UTC day, and the false-alarm rate from verdicts")
def stats(request: Request, q: Annotated[shapes.TimeRange, Query()]) -> shapes.StatsOut:
    with ctx(request).sessions() as session:
        return queries.stats(session, q)


@router.get("/thresholds", response_model=list[shapes.ThresholdOut], dependencies=[Depends(can_read)],
            summary="The anomaly-score threshold in force per asset")
def thresholds(request: Request) -> list[shapes.ThresholdOut]:
    with ctx(request).sessions() as session:
        return queries.thresholds(session)


@router.get("/threshold-changes", response_model=list[shapes.ThresholdChangeOut], dependencies=[Depends(can_read)],
            summary="Who or what changed which threshold, and why (newest first)")
def threshold_changes(
    request: Request,
    asset: Annotated[str | None, Query(pattern=shapes.ASSET_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[shapes.ThresholdChangeOut]:
    with ctx(request).sessions() as session:
        return queries.threshold_changes(session, asset, limit)


@router.put("/thresholds/{asset}", response_model=shapes.ThresholdChangeOut, dependencies=[Depends(can_write)],
            summary="Set an asset's threshold by hand (recorded with actor and reason)")
def set_threshold(request: Request, asset: Asset, body: shapes.ThresholdIn) -> shapes.ThresholdChangeOut:
    c = ctx(request)
    with session_scope(c.sessions) as session:
        before = {t.asset: t.threshold for t in queries.thresholds(session)}.get(asset)
        _check_bounds(session, c.settings, asset, body.threshold, before)
        change = writes.set_threshold(session, asset, body.threshold, body.actor, body.reason, old=before)
        return queries.change_out(change)


def _check_bounds(session, settings, asset: str, new: float, current: float | None) -> None:
    """A manual threshold stays within [min_factor, max_factor] x the asset's calibrated threshold (the
    one before its first recorded change, else the model's on its events): an asset cannot be
    blinded (1e9) or flooded (1e-9) by one request."""
    from services.api.recalibration import calibrated_threshold

    if current is None:
        raise ApiError(409, f"asset {asset} has no calibrated threshold yet (no event scored for it); a manual "
                            "threshold is bounded relative to it — set it once the monitor has scored the asset")
    calibrated = calibrated_threshold(session, asset, current)
    lo, hi = calibrated * settings.api.threshold_min_factor, calibrated * settings.api.threshold_max_factor
    if not lo <= new <= hi:
        raise ApiError(422, f"threshold {new:g} for {asset} is outside [{lo:.4g}, {hi:.4g}] "
                            f"({settings.api.threshold_min_factor:g}x to {settings.api.threshold_max_factor:g}x its "
                            f"calibrated threshold {calibrated:.4g}; FW_API__THRESHOLD_MIN_FACTOR / _MAX_FACTOR)")


@router.post("/recalibrate", response_model=shapes.RecalibrationOut, dependencies=[Depends(can_write)],
             summary="Raise per-asset thresholds now from false-alarm verdicts (same as `fusionwatch recalibrate`)")
def recalibrate(request: Request, body: shapes.RecalibrateIn) -> shapes.RecalibrationOut:
    from services.api.recalibration import recalibrate as run

    c = ctx(request)
    with session_scope(c.sessions) as session:
        changes = run(session, c.settings, actor="api", dry_run=body.dry_run)
        return shapes.RecalibrationOut(dry_run=body.dry_run, changes=[queries.change_out(ch) for ch in changes])


@router.post("/session", status_code=204, dependencies=[Depends(can_write)],
             summary="Trade the bearer token for a read-only cookie (lets <video> and <img> load media)")
def session_cookie(request: Request) -> Response:
    c = ctx(request)
    response = Response(status_code=204)
    response.set_cookie(READ_COOKIE, c.auth.read_cookie, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https", max_age=12 * 3600)
    return response


health = APIRouter(tags=["health"])


@health.get("/healthz", summary="Alive")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@health.get("/readyz", summary="Ready: the database answers", responses={503: {"model": shapes.ErrorOut}})
def readyz(request: Request) -> JSONResponse:
    try:
        with ctx(request).engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # any driver error means not ready; the reason goes to the probe
        return JSONResponse({"error": {"status": 503, "message": f"database not reachable: {type(e).__name__}"}},
                            status_code=503)
    return JSONResponse({"status": "ready"})
