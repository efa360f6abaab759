"""The URL codec: the page's state as a query string and back, for the controls declared.

``?runs=a&runs=b&view=curves&stats=lr`` holds the values a user or a link set explicitly; a
control the query leaves out has its default. A list-valued key given blank (``runs=``) is an
explicitly empty list. A value that cannot be read as its kind (``smooth=abc``), a key no control
has, is dropped, and said so (the shell shows the notice, then rewrites the URL).
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs, urlencode


MAX_FIELDS = 1000  # key=value pairs read from one URL: a page's state has a few dozen


def parse(search, controls) -> tuple[dict, list[str]]:
    """(explicit values by key, what was dropped) of a query string, for ``controls``. Past
    MAX_FIELDS pairs the rest is dropped, said once."""
    fields = (search or "").lstrip("?").split("&")
    values, dropped = {}, []
    if len(fields) > MAX_FIELDS:
        dropped.append(f"{len(fields) - MAX_FIELDS:,} settings after the first {MAX_FIELDS:,}")
        fields = fields[:MAX_FIELDS]
    parsed = parse_qs("&".join(fields), keep_blank_values=True)
    by_key = {c.key: c for c in controls}
    for key, items in parsed.items():
        control = by_key.get(key)
        if control is None:
            dropped.append(f"{shown(key)}={shown(items[-1])} (not a setting of this page)")
            continue
        if control.many:
            values[key] = list(dict.fromkeys(item for item in items if item))
        elif control.kind == "number":
            number = _number(items[-1])
            if number is None:
                dropped.append(f"{key}={shown(items[-1])} (not a number)")
            else:
                values[key] = number
        elif items[-1] != "":
            values[key] = items[-1]
    return values, dropped


def shown(text, most: int = 60) -> str:
    """A value as a notice quotes it: at most ``most`` characters (a URL may hold megabytes)."""
    text = str(text)
    return text if len(text) <= most else text[:most] + f"... ({len(text):,} characters)"


def encode(values: dict, controls) -> str:
    """The query string of the explicit ``values`` ('' when there are none), keys in the order of
    ``controls`` so a state has one URL."""
    pairs = []
    for control in controls:
        value = values.get(control.key)
        if value is None:
            continue
        if control.many:
            pairs += [(control.key, item) for item in value] if value else [(control.key, "")]
        else:
            pairs.append((control.key, number_text(value) if control.kind == "number" else value))
    return "?" + urlencode(pairs) if pairs else ""


def number_text(value) -> str:
    """A number as the URL writes it: ``17`` for a whole number, else its shortest exact form."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() else value
