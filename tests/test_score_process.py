"""The scoring process (services/monitor/score_process.py): the shipped model in a child process
gives the in-process scorer's scores and stream state exactly, prepared ahead or not; a child
that dies or cannot load its model stops the caller with a clear error."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from services.monitor.score_process import ScoringProcess, ScoringProcessError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "pretrained" / "factory-standard"


@pytest.fixture(scope="module")
def windows():
    from models.scorer import AnomalyScorer
    from services.bench.decode import _plant_records
    from streamlogic.windows import offline_windows

    options = AnomalyScorer.load(SHIPPED, device="cpu").decode_options
    wins = list(offline_windows(_plant_records(4, 9, seed=11), options=options))
    return sorted(wins, key=lambda w: (w.start, w.asset))


def test_the_scoring_process_scores_as_the_scorer_in_process(windows):
    import torch

    from models.scorer import AnomalyScorer

    here = AnomalyScorer.load(SHIPPED, device="cpu")
    there = ScoringProcess(SHIPPED, "cpu", threads=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the child: a reduction split over threads adds in another order
    try:
        assert (there.version, there.decode_options) == (here.version, here.decode_options)
        batches = [windows[i:i + 6] for i in range(0, len(windows), 6)]
        assert len(batches) >= 5
        for k, batch in enumerate(batches):
            if k == 2:  # the score stage's restore and "new normal" orders reach the child's state
                asset = batch[0].asset
                state = here.stream_state(asset)
                for s in (here, there):
                    s.forget_stream(asset)
                    s.restore_stream(asset, state)
                    s.rebaseline(asset)
            want = here.score(batch)
            got = there.score(list(batch))  # a new list of the same windows, as the score stage makes
            assert got == want  # WindowScore equality: every field, every float bit for bit
            for w in batch:
                assert there.stream_state(w.asset) == here.stream_state(w.asset)
                assert there.adaptation(w.asset) == here.adaptation(w.asset)
                assert there.baseline_phase(w.asset) == here.baseline_phase(w.asset)
            if k + 1 < len(batches):
                # the next batch prepared ahead (every other time), or windows that are then not
                # scored (scored already: their frames are in both frame memos, which keep a
                # frame's evidence as computed in its first batch)
                there.prepare_ahead(batches[k + 1] if k % 2 == 0 else batch[:2])
        assert there.stream_state("never-seen") == here.stream_state("never-seen")
        assert there.model_cpu_s > 0
    finally:
        torch.set_num_threads(threads)
        there.close()
    assert there._proc.poll() == 0  # told to stop, it stopped


def test_a_dead_scoring_process_stops_the_caller_with_a_clear_error(windows):
    there = ScoringProcess(SHIPPED, "cpu")
    os.kill(there.pid, signal.SIGKILL)
    with pytest.raises(ScoringProcessError, match=r"exited with code -9.*offsets in SQL"):
        there.score(windows[:2])
    there.close()


def test_a_checkpoint_the_child_cannot_load_is_reported(tmp_path):
    with pytest.raises(ScoringProcessError, match="the scoring process failed"):
        ScoringProcess(tmp_path, "cpu")
