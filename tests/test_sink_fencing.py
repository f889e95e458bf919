"""The sink's two fences, against real SQLite and PostgreSQL (no broker needed).

- across processes: an offset row only advances from the value this process last read or wrote;
- within a process: a batch cut before its partition was claimed again (a reload after a fence,
  a new assignment) or released is refused, even though the token it would check is fresh.
  The second was found by the zombie fault scenario: a stale batch moved offsets and stream states
  back, and the next owner dead-lettered the records in between as late.
"""

from __future__ import annotations

import pytest

from services import db
from services.monitor.sink import AssetSnapshot, CommitBatch, Fenced, SqlSink

TP = ("t.frames", 0)


def _batch(sink: SqlSink, next_offset: int, window_start: float) -> CommitBatch:
    return CommitBatch(offsets={TP: (next_offset, next_offset - 1)},
                       assets={"A1": AssetSnapshot(0, window_start, ["frames"], {"open": None})},
                       epochs=sink.epochs([TP]))


def test_a_batch_cut_before_a_reclaim_is_refused_even_with_a_fresh_token(db_url, unique_group):
    engine, group = db.make_engine(db_url), unique_group()
    sink = SqlSink(engine, group)
    sink.claim([TP])
    sink.commit(_batch(sink, 10, 5.0))
    stale = _batch(sink, 8, 4.0)  # cut before the reload below (e.g. queued behind a fenced batch)
    other = SqlSink(engine, group)  # another member moves the partition on
    other.claim([TP])
    other.commit(_batch(other, 20, 12.0))
    with pytest.raises(Fenced) as lost:
        sink.commit(_batch(sink, 12, 6.0))
    assert not lost.value.stale  # the cross-process fence: the row moved on
    offsets, states = sink.claim([TP])  # reload: the token is now 20 again
    assert offsets[TP][:2] == (20, 19) and states[0].last_window_start == 12.0
    with pytest.raises(Fenced) as refused:
        sink.commit(stale)  # would pass the token check (20) and move the offset back to 8
    assert refused.value.stale
    assert sink.claim([TP])[0][TP][:2] == (20, 19)
    sink.commit(_batch(sink, 25, 14.0))  # a batch cut after the claim goes through
    sink.release([TP])
    with pytest.raises(Fenced):
        sink.commit(_batch(sink, 30, 16.0))  # released: no longer ours
    engine.dispose()


def test_claim_reads_offsets_and_states_of_the_same_commit(db_url, unique_group, monkeypatch):
    """A commit landing between the offset read and the state read is detected and re-read."""
    engine, group = db.make_engine(db_url), unique_group()
    owner, reader = SqlSink(engine, group), SqlSink(engine, group)
    owner.claim([TP])
    owner.commit(_batch(owner, 10, 5.0))
    read_states = reader._read_states
    raced = []

    def states_after_a_commit(parts):
        if not raced:  # the other member commits right between the two reads
            raced.append(owner.commit(_batch(owner, 20, 12.0)))
        return read_states(parts)

    monkeypatch.setattr(reader, "_read_states", states_after_a_commit)
    offsets, states = reader.claim([TP])
    assert raced and offsets[TP][:2] == (20, 19) and states[0].last_window_start == 12.0
    engine.dispose()


def test_offsets_remember_the_log_they_count(db_url, unique_group):
    """The topic id goes into SQL with the offsets: after a re-created topic (an embedded broker
    restarted empty), any process can tell that the stored offsets belong to the old log."""
    engine, group = db.make_engine(db_url), unique_group()
    sink = SqlSink(engine, group)
    sink.claim([TP])
    batch = _batch(sink, 10, 5.0)
    batch.log_ids = {TP: "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}
    sink.commit(batch)
    sink.commit(_batch(sink, 12, 6.0))  # a batch without an id keeps the stored one
    assert SqlSink(engine, group).claim([TP])[0][TP] == (12, 11, "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    engine.dispose()
