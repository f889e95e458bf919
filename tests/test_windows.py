"""The align hop: event-time windows, watermarks, lateness, idleness, offsets to commit."""

from __future__ import annotations

import numpy as np

from schemas.envelope import AudioPayload, Envelope, Kind, LogPayload
from streamlogic.windows import Position, WindowAligner


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def env(kind: Kind, t: float, asset: str = "A1") -> Envelope:
    return Envelope(kind, f"id-{t}", "/src", asset, t, "x")


def feed(al: WindowAligner, kind: Kind, t: float, offset: int, asset: str = "A1", topic: str | None = None):
    payload = LogPayload(f"line {t}") if kind is Kind.LOG else np.zeros(4, np.float32)
    return al.add(env(kind, t, asset), payload, Position(topic or kind.value, 0, offset))


def test_windows_close_by_min_watermark_over_modalities():
    clock = Clock()
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=1.0, idle_timeout_s=5.0, clock=clock)
    for i in range(10):  # frames run 10 s ahead: must not close windows alone
        feed(al, Kind.FRAME, 100.0 + i, i)
    feed(al, Kind.AUDIO, 100.2, 0)
    feed(al, Kind.LOG, 100.5, 0)
    assert al.ready() == []  # audio/logs still at ~100 s
    for i in range(1, 6):
        feed(al, Kind.AUDIO, 100.2 + i, i)
        feed(al, Kind.LOG, 100.5 + i, i)
    wins = al.ready()
    # watermark = min(109, 105.2, 105.5) - 1 = 104.2 -> windows ending <= 104.2
    assert [(w.inputs.start, w.inputs.end) for w in wins] == [(99.0, 101.0), (100.0, 102.0), (101.0, 103.0), (102.0, 104.0)]
    w = wins[1]
    assert [t for t, _ in w.inputs.frames] == [100.0, 101.0]
    assert [t for t, _ in w.inputs.audio] == [100.2, 101.2]
    assert w.evidence["frames"][0].first == 0 and w.evidence["frames"][0].last == 1


def test_late_records_are_refused_and_partial_ones_kept():
    clock = Clock()
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=0.0, idle_timeout_s=5.0, clock=clock, new_asset_grace_s=0)
    for i in range(8):
        for k in (Kind.FRAME, Kind.AUDIO, Kind.LOG):
            feed(al, k, 10.0 + i, i)
    emitted = al.ready()
    assert emitted[-1].inputs.end == 17.0  # watermark 17
    assert feed(al, Kind.FRAME, 12.5, 99) is False  # only in windows already emitted
    assert feed(al, Kind.FRAME, 16.5, 100) is True  # still belongs to [16, 18)


def test_idle_modality_is_masked_after_timeout():
    clock = Clock()
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=0.0, idle_timeout_s=1.0, clock=clock)
    for i in range(3):
        for k in (Kind.FRAME, Kind.AUDIO, Kind.LOG):
            feed(al, k, 50.0 + i, i)
    clock.t = 0.5
    for i in range(3, 8):  # audio and logs stop; frames continue
        feed(al, Kind.FRAME, 50.0 + i, i)
    assert max(w.inputs.end for w in al.ready()) <= 53.0  # held by audio/logs at 52
    clock.t = 2.0  # audio/logs idle now
    for i in range(8, 10):
        feed(al, Kind.FRAME, 50.0 + i, i)
    wins = al.ready()
    assert wins and wins[-1].inputs.end == 59.0
    assert wins[-1].inputs.audio == [] and wins[-1].inputs.frames


def test_low_water_is_the_commit_position():
    clock = Clock()
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=0.0, idle_timeout_s=5.0, clock=clock, new_asset_grace_s=0)
    for i in range(6):
        for k in (Kind.FRAME, Kind.AUDIO, Kind.LOG):
            feed(al, k, 20.0 + i, 100 + i)
    al.ready()  # windows up to end 25 emitted; next window starts at 24
    assert al.low_water()[("frames", 0)] == 104  # record at t=24 still needed


def test_restore_continues_without_reemitting():
    clock = Clock()
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=0.0, idle_timeout_s=5.0, clock=clock)
    al.restore("A1", 0, next_start=24.0, expected=["frames", "audio", "logs"])
    assert feed(al, Kind.FRAME, 23.5, 1) is False  # belongs only to emitted windows
    for i in range(4, 8):
        for k in (Kind.FRAME, Kind.AUDIO, Kind.LOG):
            feed(al, k, 20.0 + i, i)
    starts = [w.inputs.start for w in al.ready()]
    assert starts[0] == 24.0


def test_a_silence_is_skipped_not_filled_with_empty_windows():
    clock = Clock()
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=0.0, idle_timeout_s=5.0, clock=clock, new_asset_grace_s=0)
    for t in (10.0, 11.0, 3600.0, 3601.0, 3602.0, 3603.0):  # an hour of silence in between
        for k in (Kind.FRAME, Kind.AUDIO, Kind.LOG):
            feed(al, k, t, int(t))
    wins = al.ready()
    assert len(wins) < 10
    assert all(w.inputs.frames for w in wins)  # no empty window was emitted
    assert wins[-1].inputs.end == 3603.0


def test_an_older_record_before_the_first_window_moves_the_grid_back_instead_of_being_late():
    """Joining a live stream: the first record seen may be a frame newer than an audio chunk still
    on its way (audio is sent when its chunk ends). Until the asset's first window is emitted, the
    older record extends the grid backwards; afterwards the grid is fixed and older records are late."""
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=2.0, idle_timeout_s=5.0, clock=Clock())
    assert feed(al, Kind.FRAME, 10.2, 0)
    assert feed(al, Kind.AUDIO, 8.6, 0)  # 1.6 s older than the first frame: accepted, not late
    assert al.snapshot("A1")[0] == 7.0  # the first window that contains 8.6
    feed(al, Kind.LOG, 8.7, 0)
    for i, k in enumerate((Kind.FRAME, Kind.AUDIO, Kind.LOG)):
        feed(al, k, 14.0, i + 1)
    wins = al.ready()
    assert wins and wins[0].inputs.start == 7.0 and wins[0].inputs.audio  # windows emitted: the grid is fixed
    assert not feed(al, Kind.AUDIO, 5.0, 9)


def test_a_backlog_read_one_topic_before_another_moves_the_provisional_grid_back():
    """A consumer catching up a backlog reads one topic before another: an asset's log lines may
    arrive before its first frame, which is older than any of them. Until the asset's first window
    is emitted, a modality's first record moves the grid back however old (it used to move only
    within the allowed lateness, and `fusionwatch bench pipeline` saw ~20 valid records per
    backlog drain dead-lettered as late). A record of a modality already seen still is late when
    it is older than the first record by more than the allowed lateness (a delayed line behind
    its stream's newer ones)."""
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=2.0, idle_timeout_s=5.0, clock=Clock())
    assert feed(al, Kind.LOG, 110.2, 0)
    assert feed(al, Kind.FRAME, 10.3, 0)  # 100 s older than the first record seen: on time
    assert feed(al, Kind.AUDIO, 10.5, 0)
    assert al.snapshot("A1")[0] == 9.0  # the first window that contains 10.3
    assert not feed(al, Kind.LOG, 5.0, 1)  # logs were seen, from 110.2 on: this one is late
    assert feed(al, Kind.FRAME, 9.4, 1)  # the grid stays, but window [9, 11) holds it: kept
    for i, k in enumerate((Kind.FRAME, Kind.AUDIO, Kind.LOG)):
        feed(al, k, 114.0, i + 2)
    wins = al.ready()
    assert wins[0].inputs.start == 9.0 and wins[0].inputs.frames and wins[0].inputs.audio
    assert [w.inputs.start for w in wins] == [9.0, 10.0, 109.0, 110.0]  # the silence between is skipped
    assert not feed(al, Kind.AUDIO, 5.0, 9)  # windows emitted: the grid is fixed


def test_a_stream_that_starts_or_comes_back_mid_window_marks_that_window_partial():
    """A window that holds only the tail of a modality's stream (a camera that just started, or came
    back after an outage) is a view the model never trained on: the monitor does not judge it."""
    clock = Clock()
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=0.0, idle_timeout_s=30.0, clock=clock, new_asset_grace_s=0)
    for i, t in enumerate(np.arange(10.6, 30.0, 0.25)):
        for k in (Kind.FRAME, Kind.AUDIO, Kind.LOG):
            if k is not Kind.FRAME or not 15.6 <= t < 20.7:  # the camera is out from 15.6 to 20.7
                feed(al, k, float(t), i)
    wins = {w.inputs.start: w for w in al.ready(flush=True)}
    # more than half a hop of a window without a stream that then starts: 10.6 and 20.7
    assert wins[9.0].partial == wins[10.0].partial == ("frames", "audio")  # log lines are sparse by nature
    assert wins[19.0].partial == wins[20.0].partial == ("frames",)
    assert all(w.partial == () for start, w in wins.items() if start not in (9.0, 10.0, 19.0, 20.0))
    assert 16.0 in wins and not wins[16.0].inputs.frames  # the outage itself: windows without frames


def _audio(t: float, channels: dict[str, float] | None, n: int = 400) -> AudioPayload:
    """A 50 ms chunk at 8 kHz: its mix, and each named channel a constant that says whose it is."""
    named = {name: np.full(n, v, np.float32) for name, v in channels.items()} if channels is not None else None
    mix = np.mean(list(named.values()), axis=0) if named else np.zeros(n, np.float32)
    return AudioPayload(mix.astype(np.float32), 8000, 8000, 2 if named else 1, named)


def test_a_stereo_call_fills_the_window_channels_per_speaker():
    clock = Clock()
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=0.0, idle_timeout_s=30.0, clock=clock, new_asset_grace_s=0)
    times = np.arange(10.0, 16.0, 0.5)
    for i, t in enumerate(times):  # mono for [13, 14): a source that switched, then stereo again
        stereo = {"agent": i / 8, "customer": -i / 8} if not 13.0 <= t < 14.0 else None
        al.add(env(Kind.AUDIO, float(t), "call-1"), _audio(float(t), stereo), Position("audio", 0, i))
    wins = {w.inputs.start: w.inputs for w in al.ready(flush=True)}
    w = wins[10.0]
    assert w.sample_rate == 8000 and [t for t, _ in w.audio] == [10.0, 10.5, 11.0, 11.5]
    assert set(w.channels) == {"agent", "customer"}
    assert [(t, 8 * x[0]) for t, x in w.channels["agent"]] == [(10.0, 0), (10.5, 1), (11.0, 2), (11.5, 3)]
    assert [(t, -8 * x[0]) for t, x in w.channels["customer"]] == [(10.0, 0), (10.5, 1), (11.0, 2), (11.5, 3)]
    # a window with a mono chunk in it is scored on its mix (which covers the whole window), not on
    # channels with a hole in them
    assert wins[12.0].audio and wins[12.0].channels == {} and wins[13.0].channels == {}
    assert set(wins[14.0].channels) == {"agent", "customer"} and len(wins[14.0].channels["agent"]) == 4


def test_mono_audio_leaves_the_window_channels_empty():
    clock = Clock()
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=0.0, idle_timeout_s=30.0, clock=clock, new_asset_grace_s=0)
    for i, t in enumerate(np.arange(10.0, 14.0, 0.5)):
        al.add(env(Kind.AUDIO, float(t)), _audio(float(t), None), Position("audio", 0, i))
    wins = al.ready(flush=True)
    assert wins and all(w.inputs.audio and w.inputs.channels == {} for w in wins)


def test_an_asset_that_sends_nothing_for_a_while_has_stopped_once_per_silence():
    """`stopped`: an asset silent for `stop_after_s` is reported once; a record starts it again; an
    asset whose partition is behind (a backlog, a paused partition: `hold`) never stops."""
    clock = Clock()
    al = WindowAligner(window_s=2.0, hop_s=1.0, lateness_s=0.0, idle_timeout_s=1.0, clock=clock,
                       new_asset_grace_s=0, stop_after_s=30.0)
    for asset in ("A1", "A2"):
        for k in (Kind.FRAME, Kind.AUDIO, Kind.LOG):
            feed(al, k, 10.0, 0, asset=asset)
    assert al.stopped() == []
    clock.t = 20.0
    feed(al, Kind.FRAME, 30.0, 1, asset="A2")  # A2 still sends frames
    clock.t = 29.9
    assert al.stopped() == []
    clock.t = 30.0
    assert al.stopped() == ["A1"]
    assert al.stopped() == []  # once per silence
    clock.t = 50.0
    assert al.stopped() == ["A2"]
    feed(al, Kind.FRAME, 60.0, 2, asset="A1")  # A1 is back
    clock.t = 79.0
    al.hold({0: [Kind.FRAME]})  # ... and its partition has records left to read: not quiet
    clock.t = 100.0
    assert al.stopped() == []
    clock.t = 109.0
    assert al.stopped() == ["A1"]


def test_an_aligner_without_a_stop_time_never_stops_an_asset():
    clock = Clock()
    al = WindowAligner(clock=clock)  # offline datasets: a recording's end is not a station stopping
    feed(al, Kind.FRAME, 10.0, 0)
    clock.t = 1e9
    assert al.stopped() == []
