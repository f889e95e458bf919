"""Labelled call folders (`--source dir:PATH`), stereo channels, 8 kHz telephony and the speaker
and channel inputs of the model: a small sample set written by the simulator's writer (real
synthesised speech), read back, featurized, trained on and evaluated with the VADER row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.features import SPEAKERS, Featurizer
from services.simulator.callcenter import CHANNEL_ORDER, CallCenter, write_call_folder
from services.training import callcenter as cc
from services.training.callcenter_data import CallDirConfig, call_windows, read_call_folder

RATE = 8000  # telephony


@pytest.fixture(scope="module")
def call_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("calls")
    centre = CallCenter(2, seed=31, start_time=1767600000.0, sample_rate=RATE,
                        mix={"calm": 0.5, "frustrated": 0.25, "escalating": 0.25})
    calls = list(centre.complete_calls(100))
    for call in calls:
        write_call_folder(call, root)
    return root, calls


def test_writer_and_reader_keep_the_channels_apart_at_the_native_rate(call_dir):
    root, calls = call_dir
    rec = read_call_folder(root / calls[0].call_id)
    assert rec.sample_rate == RATE and set(rec.channels) == set(CHANNEL_ORDER)
    labels = json.loads((root / calls[0].call_id / "labels.json").read_text())
    assert labels["channels"] == {"agent": 0, "customer": 1} and labels["call_type"] == calls[0].call_type
    # each channel carries its own speaker: the customer's channel is loud in the customer's turns only
    sr = rec.sample_rate
    for turn in rec.turns:
        lo, hi = int((turn.start - rec.start) * sr), int((turn.end - rec.start) * sr)
        own = np.sqrt(np.mean(rec.channels[turn.speaker][lo:hi] ** 2))
        other = np.sqrt(np.mean(rec.channels[{"agent": "customer", "customer": "agent"}[turn.speaker]][lo:hi] ** 2))
        overlap = any(u is not turn and u.start < turn.end and u.end > turn.start for u in rec.turns)
        if not overlap:
            assert own > 5 * other, (turn.speaker, turn.text)
    assert rec.turns[1].sentiment in ("negative", "neutral", "positive")
    # which channel is whose is configurable when labels.json does not say
    (root / calls[0].call_id / "labels.json").write_text(json.dumps({k: v for k, v in labels.items() if k != "channels"}))
    swapped = read_call_folder(root / calls[0].call_id, CallDirConfig(channels=("customer", "agent")))
    np.testing.assert_array_equal(swapped.channels["customer"], rec.channels["agent"])
    (root / calls[0].call_id / "labels.json").write_text(json.dumps(labels))


def test_windows_are_featurized_per_channel_without_resampling(call_dir, monkeypatch):
    import torchaudio.functional as AF

    root, calls = call_dir
    rec = read_call_folder(root / calls[0].call_id)
    windows = list(call_windows(rec, cc.CALL_FEATURES))[:12]
    assert all(w.sample_rate == cc.CALL_FEATURES.sample_rate == RATE for w in windows)

    def no_resampling(*a, **k):
        raise AssertionError("8 kHz telephony must not be resampled")

    monkeypatch.setattr(AF, "resample", no_resampling)
    feats = Featurizer(cc.CALL_FEATURES).featurize_many(windows)
    f = next(f for f in feats if len(f.log_text))
    assert f.channel_mel.shape == (2, cc.CALL_FEATURES.n_mels, cc.CALL_FEATURES.audio_frames)
    assert f.channel_mask.all()  # both channels recorded: silence on one is real silence
    said = {u.text: u.speaker for u in rec.turns}
    assert [SPEAKERS[s] for s in f.log_speakers] == [said[t] for t in f.log_text]


def test_speaker_and_channel_inputs_change_the_model_and_mono_still_scores(call_dir):
    import torch

    from models.fusion import FusionModel

    root, _ = call_dir
    data = cc.load_call_dir(root)
    assert data.channel_mel is not None and data.log_speakers is not None
    model = FusionModel(cc.get_call_recipe("tiny").model_config()).eval()
    with torch.no_grad():
        model.speaker_embed.normal_()
        model.channel_embed.normal_()
    idx = np.flatnonzero(data.log_mask.any(1))[:8]
    batch = data.batch(idx)
    with torch.no_grad():
        base = model.tokens(batch)
        batch.log_speakers = 3 - batch.log_speakers.clamp_min(1)  # agent <-> customer
        swapped = model.tokens(batch)
        assert not torch.allclose(base.log_tokens, swapped.log_tokens)
        # stereo: three audio slots (mix, agent, customer), the mix masked; mono: only the mix
        T = base.audio_tokens.shape[1] // 3
        assert not base.audio_mask[:, :T].any() and base.audio_mask[:, T:].any()
        mono = cc.keep_modalities(data.batch(idx), cc.MODALITY_SETS["mono"])
        m = model.tokens(mono)
        assert m.audio_mask[:, :T].any() and not m.audio_mask[:, T:].any()
        _, summary, _ = model.fuse(m)
        assert torch.isfinite(model.sentiment_head(summary)).all()


def test_factory_checkpoint_loads_without_the_call_inputs():
    from pathlib import Path

    from models import checkpoint

    model, _, _ = checkpoint.load(Path(__file__).parents[1] / "models" / "pretrained" / "factory-standard")
    assert model.speaker_embed is None and model.channel_embed is None
    assert not any(k.startswith(("speaker_embed", "channel_embed")) for k in model.state_dict())


def test_train_and_eval_on_call_folders(call_dir, tmp_path):
    import torch
    from typer.testing import CliRunner

    from models import checkpoint
    from services.cli import app

    torch.set_num_threads(1)
    root, calls = call_dir
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", "--profile", "callcenter", "--recipe", "tiny", "--source", f"dir:{root}",
                                      "--out", str(out), "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    model, _, config = checkpoint.load(out)
    assert model.cfg.speaker_embedding and model.cfg.channel_audio and model.cfg.features.sample_rate == RATE
    bad = CliRunner().invoke(app, ["train", "--profile", "callcenter", "--source", "kafka", "--no-progress"])
    assert bad.exit_code != 0

    data = cc.load_call_dir(root)
    assert len(data.meta["calls"]) == len(calls)
    report = cc.evaluate_callcenter(cc.get_call_recipe("tiny"), tmp_path / "eval", tmp_path / "datasets",
                                    rows=("vader", "cross_attention", "cross_attention_mono"), test_data=data,
                                    source=f"dir:{root}")
    assert [r.name for r in report.rows] == ["vader", "cross_attention", "cross_attention_mono"]
    assert report.turns == sum(u.speaker == "customer" for c in calls for u in c.utterances)
    vader = report.row("vader")
    assert 0.0 <= vader.turn_macro_f1 <= 1.0 and np.isfinite(vader.escalation_recall)
    from rich.console import Console

    console = Console(record=True, width=220)
    console.print(cc.render_call_report(report))
    text = console.export_text()
    assert "VADER" in text and "customer turns: macro-F1" in text and "VADER alone uses nothing simulated" in text
