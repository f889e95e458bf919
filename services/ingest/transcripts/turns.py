"""Pieces of speech → speaker turns, and the vendor's speaker labels → agent / customer.

A turn is one speaker's run of speech: it ends when they pause longer than `max_pause_s`, when
someone else starts speaking after their last word, or when it has run `max_turn_s` (a monologue
is sent in parts, so that the model hears each part in the windows where it was said — a line is
stamped at its turn's start, as the call-folder format and the simulator stamp them).

Which label is whose (`SpeakerMap`): with `--customer` the labels named are the customer and every
other label the agent; `--agent` the other way round; both: every label must be named. Without
either, a transcript already labelled agent/customer is kept; channels follow the call-centre
convention (ch_0 agent, ch_1 customer, as in call folders); two diarized speakers are told apart
by who speaks first — the agent answers the call. More than two unnamed speakers is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.errors import ConfigError
from services.ingest.transcripts import SpeechPiece, Transcript, TranscriptError

ROLES = ("agent", "customer")


@dataclass(frozen=True)
class TurnConfig:
    max_pause_s: float = 1.5
    max_turn_s: float = 15.0
    max_text_chars: int = 4000  # far under the contract's 16 KiB per log record, in any script


@dataclass(frozen=True)
class Turn:
    start: float  # seconds from the start of the audio
    end: float
    speaker: str | None  # "agent" | "customer"; None for a transcript without speakers
    text: str
    label: str | None  # the vendor's label the speaker came from


@dataclass(frozen=True)
class SpeakerMap:
    """How vendor labels become roles; `resolve` checks it against the labels a transcript has."""

    customer: tuple[str, ...] = ()
    agent: tuple[str, ...] = ()
    roles: dict[str, str] = field(default_factory=dict)  # label -> role, once resolved
    how: str = ""  # one line for the operator: what was decided and why

    def resolve(self, pieces: list[SpeechPiece]) -> SpeakerMap:
        order: list[str] = []
        for p in pieces:  # labels in order of first speech
            if p.speaker is not None and p.speaker not in order:
                order.append(p.speaker)
        named = set(self.customer) | set(self.agent)
        both = set(self.customer) & set(self.agent)
        if both:
            raise ConfigError(f"{sorted(both)[0]!r} is named as both --customer and --agent")
        unknown = sorted(named - set(order))
        if unknown:
            have = ", ".join(order) if order else "none"
            raise ConfigError(f"the transcript has no speaker {unknown[0]!r} (its speakers: {have})")
        if not order:
            if named:
                raise ConfigError("the transcript has no speaker labels, so --customer/--agent have nothing to name")
            return SpeakerMap(how="the transcript names no speakers: lines go out without one")
        if self.customer and self.agent:
            rest = [s for s in order if s not in named]
            if rest:
                raise ConfigError(f"speaker {rest[0]!r} is named by neither --customer nor --agent")
            roles = {s: "customer" if s in self.customer else "agent" for s in order}
            how = "as named"
        elif self.customer:
            roles = {s: "customer" if s in self.customer else "agent" for s in order}
            how = "--customer named, everyone else the agent"
        elif self.agent:
            roles = {s: "agent" if s in self.agent else "customer" for s in order}
            how = "--agent named, everyone else the customer"
        elif {s.lower() for s in order} <= set(ROLES):
            roles = {s: s.lower() for s in order}
            how = "labelled agent/customer in the transcript"
        elif set(order) <= {"ch_0", "ch_1"}:
            roles = {"ch_0": "agent", "ch_1": "customer"}
            roles = {s: roles[s] for s in order}
            how = "channel 0 the agent, channel 1 the customer (say --customer ch_0 if your recorder does it the other way)"
        elif len(order) <= 2:
            roles = dict(zip(order, ROLES))
            how = f"{order[0]} speaks first: the agent" + (f", {order[1]} the customer" if len(order) > 1 else "")
        else:
            raise ConfigError(f"the transcript has {len(order)} speakers ({', '.join(order)}); say which are the "
                              "customer's with --customer LABEL (everyone else is the agent)")
        mapping = ", ".join(f"{s} → {r}" for s, r in roles.items())
        return SpeakerMap(self.customer, self.agent, roles, f"{mapping} ({how})")

    def role(self, label: str | None) -> str | None:
        return None if label is None else self.roles[label]


def group_turns(transcript: Transcript, speakers: SpeakerMap, cfg: TurnConfig = TurnConfig()) -> list[Turn]:
    """Turns in order of their start (`speakers` resolved against the same transcript)."""
    if transcript.pieces_are_turns:
        turns = [Turn(p.start, p.end, speakers.role(p.speaker), p.text, p.speaker) for p in transcript.pieces]
        for t in turns:
            if len(t.text) > cfg.max_text_chars:
                raise TranscriptError(f"the turn at {t.start:.1f} s is {len(t.text)} characters long (at most "
                                      f"{cfg.max_text_chars}); cut it into turns of a few sentences")
        return turns
    open_turns: dict[str | None, list[SpeechPiece]] = {}
    latest_start: dict[str | None, float] = {}  # each speaker's latest piece start
    done: list[list[SpeechPiece]] = []
    for p in transcript.pieces:  # sorted by start
        role = speakers.role(p.speaker)
        run = open_turns.get(role)
        if run is not None:
            last_end = max(q.end for q in run)
            interrupted = any(t >= last_end for who, t in latest_start.items() if who != role)
            text_len = sum(len(q.text) + 1 for q in run) + len(p.text)
            if (p.start - last_end > cfg.max_pause_s or interrupted or p.end - run[0].start > cfg.max_turn_s
                    or text_len > cfg.max_text_chars):
                done.append(run)
                run = None
        if run is None:
            run = open_turns[role] = []
        run.append(p)
        latest_start[role] = p.start
    done += [r for r in open_turns.values() if r]  # a closed run was replaced: these are still open
    turns = [Turn(r[0].start, max(q.end for q in r), speakers.role(r[0].speaker), _join(r), r[0].speaker) for r in done]
    return sorted(turns, key=lambda t: (t.start, t.end))


def _join(run: list[SpeechPiece]) -> str:
    return " ".join(p.text for p in run if p.text)
