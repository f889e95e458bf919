"""The transcript search syntax, and what it becomes on each database.

One syntax for both: words must all appear (stemmed: "refunds" finds "refund"), `"an exact
phrase"`, `word*` for a prefix, `-word` to leave lines with it out, and `a OR b` for either of
two neighbours (it binds tighter than the implicit AND: `refund OR return late` is
(refund or return) and late). Anything else in a word — punctuation, quotes, operators of either
engine — is not syntax: only letters and digits reach the database, so no input can make an
invalid or hostile FTS5 / tsquery expression. The expression itself still travels as a bound
parameter.

`fts5_query` renders it for SQLite FTS5 MATCH, `tsquery` for PostgreSQL `to_tsquery('english', …)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TERMS = 16
_TOKEN = re.compile(r'-?"[^"]*"?\*?|\S+')
_WORD = re.compile(r"\w+", re.UNICODE)


class SearchSyntaxError(ValueError):
    """A query that searches for nothing (only exclusions, only punctuation, too many terms)."""


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]  # one word, or a phrase
    prefix: bool = False  # the last word is a prefix


@dataclass(frozen=True)
class Query:
    clauses: tuple[tuple[Term, ...], ...]  # AND of clauses, each an OR of terms
    excluded: tuple[Term, ...]


def parse(text: str) -> Query:
    clauses: list[list[Term]] = []
    excluded: list[Term] = []
    join_next = False
    count = 0
    for token in _TOKEN.findall(text):
        if token == "OR" and clauses and not join_next:
            join_next = True
            continue
        negated = token.startswith("-") and len(token) > 1
        body = token[1:] if negated else token
        prefix = body.endswith("*")
        words = tuple(w.lower() for w in _WORD.findall(body))
        if not words:
            continue
        count += 1
        if count > MAX_TERMS:
            raise SearchSyntaxError(f"a search holds at most {MAX_TERMS} words or phrases")
        term = Term(words, prefix)
        if negated:
            excluded.append(term)
        elif join_next:
            clauses[-1].append(term)
        else:
            clauses.append([term])
        join_next = False
    if not clauses:
        raise SearchSyntaxError("a search needs at least one word to find (exclusions alone find nothing)")
    return Query(tuple(tuple(c) for c in clauses), tuple(excluded))


def fts5_query(q: Query) -> str:
    def term(t: Term) -> str:
        return '"' + " ".join(t.words) + '"' + ("*" if t.prefix else "")

    expr = " AND ".join("(" + " OR ".join(term(t) for t in clause) + ")" for clause in q.clauses)
    for t in q.excluded:  # FTS5's NOT is binary: what the left side matches, less the right
        expr = f"({expr}) NOT {term(t)}"
    return expr


def tsquery(q: Query) -> str:
    def term(t: Term) -> str:
        lexemes = [f"'{w}'" for w in t.words]
        if t.prefix:
            lexemes[-1] += ":*"
        return "(" + " <-> ".join(lexemes) + ")"

    parts = ["(" + " | ".join(term(t) for t in clause) + ")" for clause in q.clauses]
    parts += ["!" + term(t) for t in q.excluded]
    return " & ".join(parts)


def words_of(q: Query) -> list[str]:
    """The words searched for (for highlighting on the page)."""
    return [w for clause in q.clauses for t in clause for w in t.words]
