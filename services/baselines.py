"""Each asset's baseline as SQL records it: where it stands (learning / watching) and the
operators' "new normal" requests, with who asked, when and why.

Where it sits: read and written by the review API (`/api/baselines`, `/api/assets/{asset}/new-normal`)
and by `fusionwatch baseline`; the monitor that owns an asset applies a pending request
(`services/monitor/service.py`) and commits the restarted baseline with the request marked applied.
The baseline itself lives in the monitor's committed per-asset state (`monitor_state.lifecycle`,
key "adaptation"; models/adaptation.py).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas import api as shapes
from schemas.tables import BaselineReset, MonitorState


def request_new_normal(session: Session, asset: str, actor: str, reason: str) -> shapes.BaselineResetOut:
    row = BaselineReset(asset_id=asset, requested_by=actor, reason=reason)
    session.add(row)
    session.flush()
    return _reset_out(row)


def resets(session: Session, asset: str | None = None, limit: int = 100) -> list[shapes.BaselineResetOut]:
    q = select(BaselineReset).order_by(BaselineReset.id.desc()).limit(limit)
    if asset:
        q = q.where(BaselineReset.asset_id == asset)
    return [_reset_out(r) for r in session.scalars(q)]


def baselines(session: Session) -> list[shapes.BaselineOut]:
    """Every asset a monitor has committed state for, or an operator has reset, with its phase."""
    out: dict[str, shapes.BaselineOut] = {}
    for st in session.scalars(select(MonitorState)):
        adaptation = (st.lifecycle or {}).get("adaptation") or {}
        phase = adaptation.get("phase", "watching" if adaptation else "unknown")
        out[st.asset_id] = shapes.BaselineOut(asset=st.asset_id, phase=phase, windows=int(adaptation.get("seen", 0) or 0),
                                              updated_at=st.updated_at)
    for r in session.scalars(select(BaselineReset).order_by(BaselineReset.id)):  # the latest per asset wins
        b = out.setdefault(r.asset_id, shapes.BaselineOut(asset=r.asset_id, phase="unknown"))
        b.last_reset = _reset_out(r)
        if r.applied_at is None:
            b.phase, b.windows = "pending", 0
    return [out[a] for a in sorted(out)]


def _reset_out(r: BaselineReset) -> shapes.BaselineResetOut:
    return shapes.BaselineResetOut(id=r.id, asset=r.asset_id, requested_at=r.requested_at, requested_by=r.requested_by,
                                   reason=r.reason, applied_at=r.applied_at, applied_by=r.applied_by)
