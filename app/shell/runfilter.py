"""The run filter: which runs a text like ``moco m=0.99 lr<0.1`` keeps.

The text is split at spaces into terms; a run is kept when every term holds:

- ``KEY=VALUE``, ``KEY!=VALUE``: the run's config value of KEY equals (or not)
  VALUE, as numbers when both are numbers (``m=0.99`` matches 0.99 and
  "0.99"), else as text ignoring case (``arch=small``; ``pos_alpha=None`` also
  matches a run without the key);
- ``KEY<VALUE``, ``KEY<=VALUE``, ``KEY>VALUE``, ``KEY>=VALUE``: numbers only
  (a run whose value is not a number is left out);
- anything else: a regular expression searched in the run's id (its path
  below the runs folder), ignoring case, as TensorBoard's run filter does.

A term that cannot be read (a broken regular expression) is reported and
ignored, so a half-typed filter never empties the page.

The text comes from anyone who can reach the page (a link's ``?filter=`` too), so
it must not be able to stop the server: the regular expressions run in RE2
(google-re2), whose time is linear in the run id and which has no backtracking
(``(a+)+$`` against a 41-character name took Python's ``re`` minutes, holding the
lock every request needs); RE2 refuses lookarounds and backreferences, which are
reported like any broken term. The text is at most ``MAX_CHARS`` characters and
``MAX_TERMS`` terms (the rest are reported, once), a pattern at most
``MAX_PATTERN_CHARS``, and RE2 compiles each within ``_PATTERN_MEMORY`` bytes, so the
work and the problems reported stay small whatever is sent (a 1.5 MB filter once
made a 221 MB answer).
"""

from __future__ import annotations

import functools
import math
import operator
import re
from dataclasses import dataclass

import re2

MAX_CHARS = 1000          # a filter is a few words
MAX_TERMS = 20
MAX_PATTERN_CHARS = 200
_PATTERN_MEMORY = 1 << 20  # bytes RE2 may use to compile one pattern
_COMPARE = re.compile(r"^(?P<key>[^=!<>\s]+)(?P<op>!=|<=|>=|=|<|>)(?P<value>.*)$")
_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge}


@dataclass(frozen=True)
class Term:
    text: str
    key: str | None = None      # a config key, or None for a name pattern
    op: str | None = None
    value: str | None = None
    pattern: object = None      # a compiled RE2 pattern for a name pattern

    def holds(self, run_id: str, config: dict) -> bool:
        if self.pattern is not None:
            return bool(self.pattern.search(run_id))
        present = self.key in config
        got = config.get(self.key)
        want_number, got_number = _number(self.value), _number(got)
        if self.op in ("=", "!="):
            if want_number is not None and got_number is not None:
                equal = math.isclose(want_number, got_number, rel_tol=1e-9, abs_tol=0.0)
            else:
                equal = (_text(got).lower() == self.value.lower() if present
                         else self.value.lower() in ("none", "null", ""))
            return equal if self.op == "=" else not equal
        if want_number is None or got_number is None:
            return False
        return _OPS[self.op](got_number, want_number)


def parse(text) -> tuple[list[Term], list[str]]:
    """(terms, problems) of a filter text; a term with a problem is left out. A text longer
    than MAX_CHARS is ignored whole, terms past MAX_TERMS are left out (each said once)."""
    text = str(text or "")
    if too_long(text):
        return [], [f"filter ignored: {too_long(text)}"]
    raws = text.split()
    terms, problems = [], []
    if len(raws) > MAX_TERMS:
        problems.append(f"filter: its last {len(raws) - MAX_TERMS} terms ignored, at most {MAX_TERMS} are used")
        raws = raws[:MAX_TERMS]
    for raw in raws:
        match = _COMPARE.match(raw)
        if match:
            terms.append(Term(raw, match["key"], match["op"], match["value"]))
            continue
        pattern, problem = _pattern(raw)
        if problem:
            problems.append(f"filter {raw[:60]!r} ignored: {problem}")
        else:
            terms.append(Term(raw, pattern=pattern))
    return terms, problems


def too_long(text: str) -> str | None:
    """Why the filter ``text`` is too long to be used, or None."""
    return f"{len(text):,} characters long, at most {MAX_CHARS:,}" if len(text) > MAX_CHARS else None


def _pattern(raw: str):
    """(the compiled case-insensitive RE2 pattern, None) or (None, what is wrong with it)."""
    if len(raw) > MAX_PATTERN_CHARS:
        return None, f"{len(raw):,} characters long, at most {MAX_PATTERN_CHARS} in a pattern"
    try:
        return re2.compile(raw, _re2_options()), None
    except re2.error as err:
        reason = err.args[0] if err.args else err
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        return None, f"not a regular expression RE2 reads ({reason})"


@functools.cache
def _re2_options():
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # a broken pattern is a problem reported on the page, not a line on stderr
    options.max_mem = _PATTERN_MEMORY
    return options


def keep(terms: list[Term], run_id: str, config: dict | None) -> bool:
    """Whether a run passes every term."""
    config = config or {}
    return all(term.holds(run_id, config) for term in terms)


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return "None" if value is None else str(value)


def needs_config(text) -> bool:
    """Whether the filter ``text`` has a config condition (so a run's header must be read to decide)."""
    terms, _ = parse(text)
    return any(t.pattern is None for t in terms)


def matching(run_ids, infos: dict, text) -> tuple[list[str], list[str]]:
    """(the ids of ``run_ids`` the filter ``text`` keeps, problems with the text).

    ``infos`` maps an id to its light info (config, or an error): a run that
    cannot be read is kept while no config condition is given, so its error shows.
    """
    terms, problems = parse(text)
    config_terms = any(t.pattern is None for t in terms)
    kept = []
    for run_id in run_ids:
        info = infos.get(run_id) or {}
        if info.get("error") and config_terms:
            continue
        if keep(terms, run_id, info.get("config")):
            kept.append(run_id)
    return kept, problems


def most_recent(run_ids, infos: dict, most: int) -> list[str]:
    """The ``most`` readable runs of ``run_ids`` written to last, in id order: what the page
    shows when no runs were picked (all of them while there are at most ``most``)."""
    readable = [r for r in run_ids if not (infos.get(r) or {}).get("error")]
    latest = sorted(readable, key=lambda r: (infos[r].get("mtime", 0), r), reverse=True)[:most]
    return sorted(latest)
