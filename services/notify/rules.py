"""Which notifications a change is, and where each goes.

fw.events says "opened", "updated" or "closed". Receivers care about three transitions: an event
opened, an event escalated (its severity rose above what was last seen), an event closed. An update
without a rise in severity (the monitor republishes long events every 10 windows) is no transition.

Routing: every rule whose asset glob, kind glob, minimum severity and transitions match adds its
channels. A channel told that an event opened or escalated is always told when it closes, whatever
the rules say about closing, so no receiver is left holding an event that never ends (and a
retained MQTT state never stays "open").
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable

from services.settings import SEVERITY_ORDER, NotifyRule


def rank(severity: str | None) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else -1


def transition(change: str, severity: str, previous_severity: str | None) -> str | None:
    """The transition of one fw.events change, given the highest severity seen earlier for the event
    (None: this notifier never saw the event before). None when receivers need not hear of it."""
    if change == "opened":
        return "opened"
    if change == "closed":
        return "closed"
    # an update of an event never seen (the group started after it opened) is news to every receiver
    if previous_severity is None or rank(severity) > rank(previous_severity):
        return "escalated"
    return None


def rule_matches(rule: NotifyRule, asset: str, kind: str, severity: str, transition_: str) -> bool:
    return (transition_ in rule.transitions
            and rank(severity) >= rank(rule.min_severity)
            and any(fnmatchcase(asset, g) for g in rule.assets)
            and any(fnmatchcase(kind, g) for g in rule.kinds))


def route(rules: Iterable[NotifyRule], asset: str, kind: str, severity: str, transition_: str,
          told_of_open: Iterable[str] = ()) -> list[str]:
    """Channel names for this notification, in a stable order. `told_of_open`: channels that were
    delivered an opened/escalated notification of this event (they get its close regardless)."""
    channels: set[str] = set()
    for rule in rules:
        if rule_matches(rule, asset, kind, severity, transition_):
            channels.update(rule.channels)
    if transition_ == "closed":
        channels.update(told_of_open)
    return sorted(channels)
