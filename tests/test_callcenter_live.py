"""A live stereo call keeps its channels: the simulator's stereo audio records → the embedded
broker → the monitor (profile callcenter) → the call model's scorer gets each window's agent and
customer audio apart, sample for sample what the records carried, each channel the speaker the
settings name for it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from schemas.envelope import Accepted, Kind, decode, parse_wav


def _call_scorer():
    """A real scorer of a call-centre model (untrained: what reaches it is tested, not its scores)
    that keeps every window it is given."""
    from models.fusion import FusionModel
    from models.scorer import AnomalyScorer
    from services.training.callcenter import CALL_RECIPES

    class Recording(AnomalyScorer):
        def __init__(self, *args):
            super().__init__(*args)
            self.seen: list = []

        def score(self, windows):
            self.seen.extend(windows)
            return super().score(windows)

    return Recording(FusionModel(CALL_RECIPES["tiny"].model_config()), None, "untrained-call-model", "cpu")


def test_the_monitor_names_a_call_models_channels_from_its_settings(sqlite_url, kafka_settings):
    from services import db
    from services.monitor.service import Monitor
    from services.settings import MonitorSettings, Settings

    engine = db.make_engine(sqlite_url)
    scorer = _call_scorer()
    assert scorer.decode_options.channel_names == ("agent", "customer")  # the call folders' default
    swapped = Settings(kafka=kafka_settings, profile="callcenter", monitor=MonitorSettings(call_channels=["customer", "agent"]))
    assert Monitor(swapped, "127.0.0.1:1", engine, scorer).intake.decode_options.channel_names == ("customer", "agent")
    engine.dispose()


def test_a_factory_model_decodes_audio_to_its_mix_only():
    from models.fusion import FusionConfig, FusionModel
    from models.scorer import AnomalyScorer

    scorer = AnomalyScorer(FusionModel(FusionConfig.tiny()), None, "factory", "cpu")
    assert scorer.decode_options.channel_names == ()


@pytest.mark.slow
def test_a_live_stereo_call_reaches_the_scorer_with_both_channels(broker, make_topics, unique_group, sqlite_url):
    from services import db
    from services.kafka import make_producer
    from services.monitor.service import Monitor
    from services.settings import Settings
    from services.simulator.callcenter import CallCenter
    from tests.support.streams import produce
    from tests.test_monitor import run_until

    duration = 30.0
    start = time.time() - duration - 30
    centre = CallCenter(2, seed=7, start_time=start, sample_rate=8000)  # the model's rate: nothing resampled
    records = list(centre.records(duration))
    # what each audio record carries, per call and chunk start: (N, 2) agent, customer
    sent: dict[tuple[str, float], np.ndarray] = {}
    for kind, rec in records:
        if kind is Kind.AUDIO:
            res = decode(kind, rec.key, rec.value, rec.headers, now=time.time())
            assert isinstance(res, Accepted), res
            samples, rate, channels = parse_wav(rec.value)
            assert channels == 2 and rate == 8000
            sent[(res.envelope.asset, round(res.envelope.time, 6))] = samples

    ks, topics = make_topics(partitions=2)
    produce(make_producer(ks, broker.bootstrap), topics, records)
    engine = db.make_engine(sqlite_url)
    scorer = _call_scorer()
    monitor = Monitor(Settings(kafka=ks, profile="callcenter"), broker.bootstrap, engine, scorer, topics,
                      group_id=unique_group())
    state = {"windows": -1, "since": time.monotonic()}

    def settled() -> bool:
        if monitor.stats.windows != state["windows"]:
            state["windows"], state["since"] = monitor.stats.windows, time.monotonic()
        return monitor.stats.records >= len(records) and monitor.stats.windows > 0 and time.monotonic() - state["since"] > 3.0

    run_until(monitor, settled, timeout_s=120)
    engine.dispose()
    assert monitor.stats.rejected == 0

    with_audio = [w for w in scorer.seen if w.audio]
    assert len(with_audio) >= 20 and {w.asset for w in with_audio} == {c.call_id for c in centre.calls}
    heard: dict[str, dict[float, dict[str, np.ndarray]]] = {}  # call -> chunk start -> speaker -> samples
    for w in with_audio:
        assert set(w.channels) == {"agent", "customer"}, (w.asset, w.start)
        assert [t for t, _ in w.channels["agent"]] == [t for t, _ in w.channels["customer"]] == [t for t, _ in w.audio]
        for (t, agent), (_, customer), (_, mix) in zip(w.channels["agent"], w.channels["customer"], w.audio):
            chunk = sent[(w.asset, round(t, 6))]
            np.testing.assert_array_equal(agent, chunk[:, 0])  # channel 0 is the agent's (monitor.call_channels)
            np.testing.assert_array_equal(customer, chunk[:, 1])
            np.testing.assert_allclose(mix, (agent + customer) / 2, atol=1e-6)
            heard.setdefault(w.asset, {})[t] = {"agent": agent, "customer": customer}

    # and the names are the speakers: while only one of them talks, their channel carries the voice
    louder = {"agent": 0, "customer": 0}
    for call in centre.calls:
        chunks = heard.get(call.call_id, {})
        for u in call.utterances:
            other = [v for v in call.utterances if v.speaker != u.speaker and v.start < u.end and v.end > u.start]
            for t, ch in chunks.items():
                if not other and u.start <= t and t + 0.5 <= u.end:
                    rms = {name: float(np.sqrt(np.mean(x ** 2))) for name, x in ch.items()}
                    quiet = "customer" if u.speaker == "agent" else "agent"
                    assert rms[u.speaker] > 10 * rms[quiet], (call.call_id, u.speaker, t, rms)
                    louder[u.speaker] += 1
    assert louder["agent"] > 0 and louder["customer"] > 0, louder
