"""The call-centre simulator: calls as synthesised speech plus transcript lines, with labels.

The source end of the call-centre profile. Each call is an asset (key "call-000123"): its audio
goes out in 0.5 s stereo WAV chunks (channel 0 the agent, 1 the customer), its transcript as log records {"msg", "speaker"} stamped at the
start of each utterance (what a streaming ASR would emit). Several lines (agents) take calls at
once; a new call starts a few seconds after the previous one on that line ends.

Calls follow scripts of four types — calm, frustrated, escalating (frustration rises turn by
turn) and sarcastic (positive words, angry tone) — and every utterance carries a sentiment label
(negative / neutral / positive) and a frustration value in 0..1. The customer's voice follows
the frustration: faster, louder, higher, wider pitch range and harsher (see `tts.Tone`); angry
customers also leave shorter pauses and talk over the agent. `labels_at(call_id, t)` gives the
label a window ending at t should carry: the customer's latest utterance.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from schemas.envelope import Kind, WireRecord, encode_audio, encode_log, format_time, wav_bytes
from schemas.errors import ConfigError
from services.simulator.tts import Tone, speak

# a call "should escalate" when a customer turn is at least this frustrated (the monitor's default threshold)
ESCALATION_FRUSTRATION = 0.6
CHANNEL_ORDER = ("agent", "customer")  # channel 0 and 1 of a stereo call this simulator writes
CALL_TYPES = ("calm", "frustrated", "escalating", "sarcastic")
DEFAULT_MIX = {"calm": 0.35, "frustrated": 0.25, "escalating": 0.25, "sarcastic": 0.15}
AGENT_VOICES = (("en-us+f3", 55, "Dana"), ("en-us+m2", 45, "Sam"), ("en+f2", 58, "Priya"), ("en-us+m7", 42, "Marco"))
CUSTOMER_VOICES = (("en-us+m1", 40), ("en+m3", 45), ("en-us+f2", 60), ("en-gb-x-rp+m7", 42), ("en-us+f4", 62),
                   ("en+f5", 58), ("en-us+m4", 38), ("en-029+m2", 46))
COMPANY = "Northwind Appliances"

# Utterance pools: (text template, sentiment, frustration). Slots: {company} {agent} {order} {days}
# {minutes} {product} {times}.
LINES: dict[str, list[tuple[str, str, float]]] = {
    "greet": [("Thank you for calling {company}, this is {agent}. How can I help you today?", "positive", 0.0),
              ("{company} customer care, {agent} speaking. What can I do for you?", "neutral", 0.0)],
    "lookup": [("Of course. Could you give me the order number, please?", "neutral", 0.0),
               ("Sure, let me pull up your account. One moment.", "neutral", 0.0)],
    "resolve": [("I can see it here. Your {product} shipped yesterday and should arrive in {days} days.", "neutral", 0.0),
                ("Good news, the replacement part is in stock. I have booked it for delivery in {days} days.", "positive", 0.0)],
    "apologise": [("I am really sorry about that. Let me see what I can do right now.", "neutral", 0.0),
                  ("I understand, and I apologise for the trouble. Let me check the order.", "neutral", 0.0)],
    "offer": [("I can send a technician on Thursday, and I will waive the call-out fee.", "positive", 0.0),
              ("I have issued a full refund and a new unit will ship today.", "positive", 0.0)],
    "policy": [("Unfortunately the warranty does not cover that part, so there would be a repair charge.", "neutral", 0.0),
               ("I am afraid I cannot change the delivery date once it has been dispatched.", "neutral", 0.0)],
    "escalate": [("I understand. I am transferring you to my supervisor now.", "neutral", 0.0),
                 ("Let me get a supervisor on the line for you.", "neutral", 0.0)],
    "close": [("Is there anything else I can help you with? Thank you for calling.", "positive", 0.0),
              ("Thanks for your patience. Have a good day.", "positive", 0.0)],
    # customers
    "calm_request": [("Hi, I would like to check on my order, number {order}.", "neutral", 0.1),
                     ("Hello. My {product} is making a strange noise and I wanted to ask about the warranty.", "neutral", 0.15),
                     ("Good morning. I am ringing about order {order}, could you tell me where it is?", "neutral", 0.1)],
    "calm_ack": [("Sure, it is {order}.", "neutral", 0.05), ("Okay, no rush.", "neutral", 0.05),
                 ("Yes, go ahead, I can wait.", "neutral", 0.05)],
    "calm_thanks": [("That is great, thank you so much for your help.", "positive", 0.0),
                    ("Perfect, that works for me. Thanks!", "positive", 0.0),
                    ("Brilliant, you have been very helpful. Cheers!", "positive", 0.0)],
    "frustrated_open": [("I have called {times} times about my {product} and nobody has fixed anything.", "negative", 0.7),
                        ("This is ridiculous. My order {order} is two weeks late and no one answers my emails.", "negative", 0.75),
                        ("Every single time I call, I get a different story about my {product}.", "negative", 0.72)],
    "frustrated_more": [("I have been on hold for {minutes} minutes. I want this sorted out today.", "negative", 0.8),
                        ("That is what the last person told me too. It never happens.", "negative", 0.8),
                        ("I am sick of waiting. Somebody needs to fix this properly today.", "negative", 0.8)],
    "frustrated_after": [("Fine. But if it does not show up this time I am cancelling everything.", "negative", 0.6),
                         ("Okay. I will believe it when I see it.", "negative", 0.55),
                         ("Alright, but I am not happy about any of this.", "negative", 0.58)],
    "esc_1": [("Hi, I am calling about my {product}, it stopped working after a week.", "neutral", 0.2),
              ("Hello, my delivery for order {order} did not arrive.", "neutral", 0.2),
              ("Hi there, my {product} arrived with a cracked door.", "neutral", 0.2)],
    "esc_2": [("Wait, why would I have to pay for that? It is brand new.", "negative", 0.5),
              ("What do you mean you cannot change it? I was never told.", "negative", 0.5),
              ("Hang on, nobody said anything about a fee before.", "negative", 0.5)],
    "esc_3": [("No, that is not acceptable. I want to speak to someone who can actually help.", "negative", 0.75),
              ("You are not listening to me. This is the third time I am explaining this.", "negative", 0.78),
              ("That is a joke. Put me through to a manager who can actually decide something.", "negative", 0.76)],
    "esc_4": [("This is absolutely unbelievable! I am done with your company!", "negative", 0.95),
              ("Forget it! I am reporting this and I want my money back now!", "negative", 0.95),
              ("Enough! This is a disgrace and I am taking my business elsewhere!", "negative", 0.95)],
    "sarc_open": [("Oh wonderful, another {minutes} minutes on hold. Just fantastic.", "negative", 0.75),
                  ("Great, just great. My brand new {product} broke again. Love it.", "negative", 0.78),
                  ("Oh brilliant, the {product} died again. What a lovely surprise.", "negative", 0.76)],
    "sarc_more": [("Oh sure, a technician on Thursday. Because that worked so well last time.", "negative", 0.8),
                  ("Perfect. Amazing service as always. Really, thank you so much.", "negative", 0.8),
                  ("Sure, Thursday. I am absolutely sure that will go perfectly this time.", "negative", 0.8)],
    "sarc_close": [("Wow, you have been super helpful. Truly the best.", "negative", 0.75),
                   ("Oh, I can hardly wait. Fantastic.", "negative", 0.72),
                   ("Oh, marvellous. You have made my whole week.", "negative", 0.73)],
}
SCRIPTS = {
    "calm": ["greet", "calm_request", "lookup", "calm_ack", "resolve", "calm_thanks", "close"],
    "frustrated": ["greet", "frustrated_open", "apologise", "frustrated_more", "offer", "frustrated_after", "close"],
    "escalating": ["greet", "esc_1", "lookup", "esc_2", "policy", "esc_3", "apologise", "esc_4", "escalate"],
    "sarcastic": ["greet", "sarc_open", "apologise", "sarc_more", "offer", "sarc_close", "close"],
}
# Customer stages have a third phrasing (index 2) that only a simulator built with
# phrasings="unseen" says, and it then says nothing else: a held-out test of wording never trained on.
SEEN_PHRASINGS = 2
AGENT_STAGES = frozenset({"greet", "lookup", "resolve", "apologise", "offer", "policy", "escalate", "close"})
PRODUCTS = ("dishwasher", "washing machine", "fridge", "oven", "dryer", "coffee machine")


@dataclass(frozen=True)
class Utterance:
    start: float
    end: float
    speaker: str  # "agent" | "customer"
    text: str
    sentiment: str  # "negative" | "neutral" | "positive"
    frustration: float  # 0..1

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 6), "end": round(self.end, 6), "speaker": self.speaker, "text": self.text,
                "sentiment": self.sentiment, "frustration": round(self.frustration, 3)}


@dataclass
class Call:
    """One call and its ground truth. `audio` is the whole call, mono float32 (the two speakers
    mixed, as a mono line carries them); `channels` the same call as two tracks, (2, N) in
    CHANNEL_ORDER (what a stereo call recording keeps apart)."""

    call_id: str
    call_type: str
    line: int
    start: float
    end: float
    agent: str
    utterances: list[Utterance]
    audio: np.ndarray | None = field(default=None, repr=False)
    channels: np.ndarray | None = field(default=None, repr=False)
    sample_rate: int = 16000

    def to_json(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "call_type": self.call_type, "line": self.line,
                "start": round(self.start, 6), "end": round(self.end, 6), "start_time": format_time(self.start),
                "end_time": format_time(self.end), "agent": self.agent,
                "segments": [u.to_json() for u in self.utterances]}

    def labels_at(self, t: float) -> tuple[str, float]:
        label = ("neutral", 0.0)  # before the customer says anything there is no evidence of a mood
        for u in self.utterances:
            if u.start > t:
                break
            if u.speaker == "customer":
                label = (u.sentiment, u.frustration)
        return label


class _Line:
    def __init__(self, index: int, seed: int):
        self.index = index
        self.rng = np.random.default_rng([seed, index, 21])
        self.agent = AGENT_VOICES[index % len(AGENT_VOICES)]


class CallCenter:
    """Simulated call centre with `assets` concurrent lines. `records(duration_s)` is stateful."""

    def __init__(self, assets: int = 4, seed: int = 0, start_time: float | None = None, sample_rate: int = 16000,
                 audio_chunk_s: float = 0.5, mix: dict[str, float] | None = None, phrasings: str = "seen"):
        import time

        if phrasings not in ("seen", "unseen"):
            raise ConfigError("phrasings must be 'seen' (the two trained on) or 'unseen' (the held-out third)")
        self.phrasings = phrasings

        if isinstance(assets, list):  # accepted for symmetry with Plant: the count of lines matters
            assets = len(assets)
        if assets < 1:
            raise ConfigError("a call centre needs at least one line (--assets 1 or more)")
        mix = mix or DEFAULT_MIX
        if set(mix) - set(CALL_TYPES) or not sum(mix.values()) > 0:
            raise ConfigError(f"call mix must weight some of {', '.join(CALL_TYPES)}")
        self.mix_types = list(mix)
        self.mix_p = np.asarray([mix[k] for k in self.mix_types], dtype=float) / sum(mix.values())
        self.seed, self.sample_rate, self.audio_chunk_s = seed, sample_rate, audio_chunk_s
        self.start_time = float(start_time if start_time is not None else round(time.time(), 3))
        self._lines = [_Line(i, seed) for i in range(assets)]
        self._next_starts: list[tuple[float, int]] = [
            (self.start_time + float(line.rng.uniform(0, 4)), line.index) for line in self._lines]
        heapq.heapify(self._next_starts)
        self.calls: list[Call] = []
        self._by_id: dict[str, Call] = {}
        self._active: list[dict[str, Any]] = []
        self._t = self.start_time
        self._count = 0

    @property
    def ground_truth(self) -> list[Call]:
        """Every call started so far, with per-utterance labels."""
        return self.calls

    @property
    def time(self) -> float:
        return self._t

    def labels_at(self, call_id: str, t: float) -> tuple[str, float]:
        """(sentiment, frustration) of the call at time t: the customer's latest utterance."""
        call = self._by_id.get(call_id)
        if call is None:
            raise KeyError(f"unknown call {call_id!r}")
        return call.labels_at(t)

    # ── call generation ─────────────────────────────────────────────────────────────────────
    def _new_call(self, start: float, line: _Line) -> Call:
        rng = line.rng
        self._count += 1
        call_id = f"call-{self._count:06d}"
        call_type = str(rng.choice(self.mix_types, p=self.mix_p))
        voice, base_pitch = CUSTOMER_VOICES[int(rng.integers(len(CUSTOMER_VOICES)))]
        agent_voice, agent_pitch, agent_name = line.agent
        slots = {"company": COMPANY, "agent": agent_name, "order": f"{int(rng.integers(10000, 99999))}",
                 "days": str(int(rng.integers(2, 6))), "minutes": str(int(rng.integers(15, 60))),
                 "product": PRODUCTS[int(rng.integers(len(PRODUCTS)))], "times": ("three", "four", "five")[int(rng.integers(3))]}
        sr = self.sample_rate
        t = 0.6  # the line connects
        pieces: list[tuple[int, np.ndarray, int]] = []  # (sample offset, wave, channel)
        utterances: list[Utterance] = []
        last_frustration = 0.0
        for stage in SCRIPTS[call_type]:
            pool = LINES[stage] if stage in AGENT_STAGES else (
                LINES[stage][:SEEN_PHRASINGS] if self.phrasings == "seen" else LINES[stage][SEEN_PHRASINGS:])
            template, sentiment, frustration = pool[int(rng.integers(len(pool)))] if len(pool) > 1 else pool[0]
            text = template.format(**slots)
            if stage not in AGENT_STAGES:
                speaker = "customer"
                frustration = float(np.clip(frustration + np.clip(rng.normal(0, 0.04), -0.06, 0.06), 0, 1))
                if call_type == "escalating":  # escalation never goes back down
                    frustration = max(frustration, min(1.0, last_frustration + 0.05))
                tone = Tone.for_anger(frustration, base_pitch=base_pitch)
                if call_type == "sarcastic":  # exaggerated, drawn-out intonation on the "nice" words
                    tone = Tone(rate_wpm=tone.rate_wpm - 25, pitch=tone.pitch, pitch_range=95, volume=tone.volume,
                                harshness=tone.harshness * 0.8)
                gain = 0.7  # loud, harsh voices must not clip the line
                # angry customers barge in: short pauses, even talking over the agent
                t += float(rng.uniform(0.3, 0.9)) - 0.7 * frustration
                last_frustration = frustration
            else:
                speaker, frustration = "agent", 0.0
                tone = Tone(rate_wpm=int(rng.integers(160, 180)), pitch=agent_pitch, pitch_range=55, volume=95)
                gain = 0.75
                t += float(rng.uniform(0.35, 0.9)) + 0.2 * last_frustration  # agents pause before answering anger
            t = max(t, utterances[-1].start - start + 0.5 if utterances else 0.0)  # overlap, never a restart
            wave = speak(text, voice if speaker == "customer" else agent_voice, tone, sr)
            pieces.append((int(t * sr), gain * wave, CHANNEL_ORDER.index(speaker)))
            utterances.append(Utterance(start + t, start + t + len(wave) / sr, speaker, text, sentiment, frustration))
            t += len(wave) / sr
        length = int((t + 0.6) * sr)
        noise = (0.002 * rng.standard_normal(length)).astype(np.float32)  # line noise
        audio = noise.copy()
        channels = np.stack([0.5 * noise, 0.5 * noise])  # each side's own line noise, mixing to the mono line's
        for offset, wave, ch in pieces:
            audio[offset:offset + len(wave)] += wave[: max(length - offset, 0)]
            channels[ch, offset:offset + len(wave)] += wave[: max(length - offset, 0)]
        np.clip(audio, -1, 1, out=audio)
        np.clip(channels, -1, 1, out=channels)
        call = Call(call_id, call_type, line.index, start, start + length / sr, agent_name, utterances, audio,
                    channels, sr)
        self.calls.append(call)
        self._by_id[call_id] = call
        return call

    def complete_calls(self, duration_s: float) -> Iterator[Call]:
        """The calls that start in the next `duration_s`, whole (audio and both channels), in
        start order: the same calls `records` would stream, for writers and datasets that need
        the recording rather than the wire."""
        end = self._t + duration_s
        while self._next_starts and self._next_starts[0][0] < end:
            t0, li = heapq.heappop(self._next_starts)
            line = self._lines[li]
            call = self._new_call(t0, line)
            heapq.heappush(self._next_starts, (call.end + float(line.rng.uniform(2, 10)), li))
            yield call
        self._t = end

    # ── records ─────────────────────────────────────────────────────────────────────────────
    def records(self, duration_s: float) -> Iterator[tuple[Kind, WireRecord]]:
        """Records with event time in [time, time + duration_s), ordered by event time."""
        end = self._t + duration_s
        while self._t < end - 1e-9:
            b = min(self._t + 1.0, end)
            while self._next_starts and self._next_starts[0][0] < b:
                t0, li = heapq.heappop(self._next_starts)
                line = self._lines[li]
                call = self._new_call(t0, line)
                self._active.append({"call": call, "chunk": 0, "utt": 0})
                heapq.heappush(self._next_starts, (call.end + float(line.rng.uniform(2, 10)), li))
            batch: list[tuple[float, int, int, Kind, WireRecord]] = []
            for state in self._active:
                self._emit(state, b, batch)
            self._active = [s for s in self._active if not s.get("done")]
            batch.sort(key=lambda r: r[:3])
            self._t = b
            for *_, kind, rec in batch:
                yield kind, rec

    def _emit(self, state: dict[str, Any], until: float, batch: list) -> None:
        call: Call = state["call"]
        asset, sr = call.call_id, self.sample_rate
        n = int(round(self.audio_chunk_s * sr))
        base = f"/sim/callcenter/line{call.line + 1}"
        while (t := call.start + state["chunk"] * self.audio_chunk_s) < min(until, call.end):
            k = state["chunk"]
            assert call.channels is not None, "a call's channels are kept until it has been streamed"
            samples = call.channels[:, k * n:(k + 1) * n].T  # stereo, as a call recorder sends it (CHANNEL_ORDER)
            rec = encode_audio(asset, f"{base}/audio", t, wav_bytes(samples, sr), id=f"{asset}-a{k}", sequence=k)
            batch.append((t, call.line, 1, Kind.AUDIO, rec))
            state["chunk"] += 1
        while state["utt"] < len(call.utterances) and (u := call.utterances[state["utt"]]).start < until:
            i = state["utt"]
            rec = encode_log(asset, f"{base}/asr", u.start, {"msg": u.text, "speaker": u.speaker}, id=f"{asset}-t{i}", sequence=i)
            batch.append((u.start, call.line, 2, Kind.LOG, rec))
            state["utt"] += 1
        if state["utt"] >= len(call.utterances) and call.start + state["chunk"] * self.audio_chunk_s >= call.end:
            state["done"] = True
            call.audio = call.channels = None  # the ground truth stays; the waveform is no longer needed


def write_call_folder(call: Call, root: Path, stereo: bool = True) -> Path:
    """One call in the labelled call-folder format (docs/callcenter.md, "Your own calls"):
    `root/<call_id>/call.wav` (stereo: channel 0 the agent, 1 the customer; or the mono mix) at the
    simulator's sample rate, `transcript.jsonl` (one turn a line: speaker, start, end in seconds
    from the start of call.wav, text, sentiment, frustration) and `labels.json` (per call)."""
    from pathlib import Path

    if call.audio is None or (stereo and call.channels is None):
        raise ConfigError(f"{call.call_id}: its audio was already streamed and dropped; write calls from complete_calls()")
    folder = Path(root) / call.call_id
    folder.mkdir(parents=True, exist_ok=True)
    samples = call.channels.T if stereo and call.channels is not None else call.audio
    (folder / "call.wav").write_bytes(wav_bytes(np.ascontiguousarray(samples), call.sample_rate))
    turns = [{"speaker": u.speaker, "start": round(u.start - call.start, 3), "end": round(u.end - call.start, 3),
              "text": u.text, "sentiment": u.sentiment, "frustration": round(u.frustration, 3)} for u in call.utterances]
    (folder / "transcript.jsonl").write_text("".join(json.dumps(t) + "\n" for t in turns))
    said = [u for u in call.utterances if u.speaker == "customer"]
    labels = {"call_id": call.call_id, "start_time": format_time(call.start), "call_type": call.call_type,
              "channels": {name: i for i, name in enumerate(CHANNEL_ORDER)} if stereo else None,
              "overall": said[-1].sentiment if said else "neutral",
              "escalation": any(u.frustration >= ESCALATION_FRUSTRATION for u in said), "source": "simulator"}
    (folder / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
    return folder
