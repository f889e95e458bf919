"""Summarizer parts on their own: TTS, the MP4 writer read back with PyAV, WebVTT, media paths,
the variable-rate timeline, and the optional rephraser's fact checks (with a tiny local model)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from schemas.events import Attribution
from services.summarizer import media
from services.summarizer.facts import EventFacts
from services.summarizer.mp4 import Cue, Mp4Writer, parse_webvtt, webvtt
from services.summarizer.narrator import narrate
from services.summarizer.render import Timeline
from services.summarizer.tts import Speaker
from tests.test_summarizer_support import read_mp4


def test_speaker_speaks_each_sentence_offline():
    speaker = Speaker()
    speech = speaker.speak(["Peak score 1.8 times the threshold.", "Parts SN-0042 and SN-0043."])
    assert speaker.route in ("library", "binary")
    assert speech.sample_rate == speaker.sample_rate > 8000
    assert len(speech.clips) == 2
    for clip, seconds in zip(speech.clips, speech.durations()):
        assert 0.8 < seconds < 8.0
        assert float(np.sqrt(np.mean(clip ** 2))) > 0.02


def test_mp4_writer_round_trip_with_variable_frame_times(tmp_path):
    path = tmp_path / "clip.mp4"
    sr = 22050
    cues = [Cue(0.2, 1.0, "first cue"), Cue(1.2, 2.9, "second — cue with “quotes”")]
    times = [0.0, 0.1, 0.2, 0.3, 1.5, 2.0, 2.9]
    with Mp4Writer(path, 320, 240, 10.0, sr) as writer:
        for i, t in enumerate(times):
            writer.add_frame(np.full((240, 320, 3), 30 * i, np.uint8), t)
        writer.add_audio(0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr))
        writer.add_cues(cues)
    out = read_mp4(path)
    assert ("video", "h264") in out["streams"] and ("audio", "aac") in out["streams"]
    assert ("subtitle", "mov_text") in out["streams"] and out["faststart"]
    assert [round(t, 2) for t, _ in out["video_frames"]] == times
    assert [text for _, _, text in out["cues"]] == [c.text for c in cues]
    assert abs(out["duration"] - 3.0) < 0.15
    assert abs(float(np.sqrt(np.mean(out["audio"] ** 2))) - 0.3 / np.sqrt(2)) < 0.03


def test_webvtt_round_trip_and_arrow_in_text():
    cues = [Cue(0.0, 1.25, "a --> b"), Cue(3661.5, 3662.0, "over an hour in")]
    text = webvtt(cues)
    assert text.startswith("WEBVTT\n")
    assert "01:01:01.500 --> 01:01:02.000" in text
    back = parse_webvtt(text)
    assert [(c.start, c.end) for c in back] == [(0.0, 1.25), (3661.5, 3662.0)]
    assert back[0].text == "a → b"  # a cue text may not contain the timing arrow


def test_media_names_come_from_the_event_id_and_stay_inside_the_root(tmp_path):
    paths = media.summary_paths(tmp_path, "../../etc/passwd")
    assert paths.video.startswith("summaries/") and ".." not in paths.video
    assert paths == media.summary_paths(tmp_path, "../../etc/passwd"), "deterministic: a re-render replaces"
    with pytest.raises(ValueError):
        media.resolve(tmp_path, "../outside.mp4")
    target = tmp_path / "summaries" / "x.mp4"
    with pytest.raises(RuntimeError):
        with media.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("render crashed")
    assert not target.exists() and list((tmp_path / "summaries").iterdir()) == []
    media.write_text_atomic(target, "whole")
    assert target.read_text() == "whole"


def test_timeline_is_dense_over_evidence_and_sparse_after():
    tl = Timeline(t0=1000.0, duration=20.0, fps=10.0, evidence_s=8.0, cue_times=(9.3, 12.71))
    assert tl.times[:81] == pytest.approx([i / 10 for i in range(80)] + [8.0])
    tail = tl.times[80:]
    assert 9.3 in tail and 12.71 in tail  # a caption change gets its own frame
    assert max(np.diff(tail)) <= 0.5 + 1e-9
    assert tl.times[-1] == pytest.approx(19.9)
    assert tl.frames == 80 + 24 + 2 + 1  # vs 200 at a constant 10 fps
    assert tl.index_of(9.35) == tl.times.index(9.3)


# ── optional rephraser ─────────────────────────────────────────────────────────────────────

def _facts() -> EventFacts:
    start = datetime(2026, 11, 26, 14, 5, 12, tzinfo=timezone.utc)
    return EventFacts(event_id="e1", asset="L3-S2", kind="bearing_fault", severity="high", status="closed",
                      start=start, end=start + timedelta(seconds=6), peak_score=0.9, mean_score=0.7, threshold=0.5,
                      model_version="m", windows=6, attribution=Attribution(
                          modality_shares={"audio": 0.9, "logs": 0.1}, log_codes=["E-117"],
                          top_log_lines=["Spindle temperature high"]), serials=("SN-0042",))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random one-layer GPT-2 with a small BPE tokenizer, saved as safetensors: a local model
    directory like a real one, which (being random) writes nonsense."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-lm")
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["Peak score 1.8 times the threshold.", "Rewrite the sentence for a lead."],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]", "<eos>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="[UNK]")
    tokenizer.save_pretrained(path)
    import torch

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=256,
                               eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
                    ).save_pretrained(path, safe_serialization=True)
    return path


def test_rephraser_keeps_the_template_when_the_model_talks_nonsense(tiny_model):
    from services.summarizer.rephrase import Rephraser

    facts = _facts()
    template = narrate(facts)
    rephraser = Rephraser(tiny_model, max_new_tokens=16)
    assert rephraser.rephrase(template, facts) == template
    assert rephraser.rejected == len(template.sentences) and rephraser.accepted == 0


def test_rephraser_accepts_only_rewrites_that_keep_and_add_no_facts(tiny_model, monkeypatch):
    from services.summarizer.rephrase import Rephraser

    facts = _facts()
    rephraser = Rephraser(tiny_model)
    original = "Peak score 1.8 times the threshold."
    assert rephraser.accept(original, "The score reached 1.8 times the threshold at its peak.", facts, [], "UTC")
    assert not rephraser.accept(original, "The score reached twice the threshold.", facts, [], "UTC")  # dropped 1.8
    assert not rephraser.accept(original, "The score reached 1.8 times the threshold, code E-999.", facts, [], "UTC")
    assert not rephraser.accept("Parts SN-0042.", "Parts SN-0042 and the camera looked odd.", facts, [], "UTC")
    monkeypatch.setattr(rephraser, "_generate", lambda s: s.replace("Peak score", "The score peaked at"))
    out = rephraser.rephrase(narrate(facts), facts)
    assert "The score peaked at 1.8 times the threshold." in out.text


def test_rephraser_refuses_a_directory_without_a_model(tmp_path):
    from schemas.errors import ConfigError
    from services.summarizer.rephrase import Rephraser

    with pytest.raises(ConfigError, match="REPHRASE_MODEL"):
        Rephraser(tmp_path)


def test_which_fw_events_records_get_a_summary(sqlite_url, tmp_path):
    """Closed → yes, unless a summary already post-dates the close (a replay); opened/updated →
    only with summarizer.open_after_s, once the event is that old and has no summary yet."""
    from schemas.events import AnomalyData
    from schemas.tables import Summary
    from services.db import make_engine, session_factory, session_scope
    from services.settings import DatabaseSettings, Settings
    from services.summarizer.service import SummarizerService
    from tests.test_summarizer_support import insert_event

    factory = session_factory(make_engine(sqlite_url))
    settings = Settings(var_dir=tmp_path, database=DatabaseSettings(url=sqlite_url))
    service = SummarizerService(settings, "127.0.0.1:1", factory)
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    data = AnomalyData(event_id="e-1", change="closed", revision=2, asset="L1-S1", severity="high", status="closed",
                       start_time=start, end_time=start + timedelta(seconds=30), peak_score=1.0, mean_score=0.8,
                       threshold=0.5, model_version="m", windows=30)
    insert_event(factory, data)
    opened = data.model_copy(update={"change": "opened", "end_time": None, "status": "open"})
    assert service._wanted(data)
    assert not service._wanted(opened)
    service.settings = settings.model_copy(update={"summarizer": settings.summarizer.model_copy(
        update={"open_after_s": 60.0})})
    assert service._wanted(opened), "open for 5 minutes, over the 60 s setting"
    with session_scope(factory) as s:
        s.add(Summary(event_id="e-1", status="partial", narration="…", missing=[],
                      rendered_at=start + timedelta(seconds=10)))
    assert not service._wanted(opened), "already has a (long-open) summary"
    assert service._wanted(data), "the close re-renders the long-open summary"
    with session_scope(factory) as s:
        s.get(Summary, "e-1").rendered_at = datetime.now(timezone.utc)
    assert not service._wanted(data), "a replayed close after its summary is skipped"
    assert service.handle(b"not a cloud event") is None


def test_sweep_removes_only_old_partial_files(tmp_path):
    import os
    import time

    from services.summarizer.media import sweep_partial_files

    (tmp_path / "events").mkdir()
    old = tmp_path / "events" / ".a.mp4.1234abcd.part"
    fresh = tmp_path / "events" / ".b.mp4.5678abcd.part"
    final = tmp_path / "events" / "a.mp4"
    for p in (old, fresh, final):
        p.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(final, (two_hours_ago, two_hours_ago))
    assert sweep_partial_files(tmp_path) == [old]
    assert not old.exists() and fresh.exists() and final.exists()
