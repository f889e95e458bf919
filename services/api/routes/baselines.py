"""Each asset's own normal: where its baseline stands, and an operator's "new normal" after
maintenance or a deliberate change (services/baselines.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from schemas import api as shapes
from services import baselines
from services.api.context import can_read, can_write, ctx
from services.db import session_scope

router = APIRouter(prefix="/api", tags=["baselines"])
Asset = Annotated[str, Path(pattern=shapes.ASSET_PATTERN, description="asset id, e.g. L1-S2")]


@router.get("/baselines", response_model=list[shapes.BaselineOut], dependencies=[Depends(can_read)],
            summary="Each asset's baseline: learning (from its own first windows) or watching")
def list_baselines(request: Request) -> list[shapes.BaselineOut]:
    with ctx(request).sessions() as session:
        return baselines.baselines(session)


@router.get("/baseline-resets", response_model=list[shapes.BaselineResetOut], dependencies=[Depends(can_read)],
            summary="Who marked which asset's new normal, when and why (newest first)")
def list_resets(request: Request, asset: Annotated[str | None, Query(pattern=shapes.ASSET_PATTERN)] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[shapes.BaselineResetOut]:
    with ctx(request).sessions() as session:
        return baselines.resets(session, asset, limit)


@router.post("/assets/{asset}/new-normal", response_model=shapes.BaselineResetOut, status_code=202,
             dependencies=[Depends(can_write)],
             summary="Mark an asset's new normal: it learns its baseline again (applied by its monitor within ~10 s)")
def new_normal(request: Request, asset: Asset, body: shapes.NewNormalIn) -> shapes.BaselineResetOut:
    with session_scope(ctx(request).sessions) as session:
        return baselines.request_new_normal(session, asset, body.actor, body.reason)
