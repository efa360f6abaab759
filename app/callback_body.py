"""Checks a Dash callback request before Dash runs it: any mistake is a 400, not a 500.

The browser posts ``{"output", "outputs", "inputs", "state", "changedPropIds"}``
to ``/_dash-update-component``. Dash trusts that body: an unknown output, a
missing key or a value of the wrong type surfaces as an exception deep in
Dash or in a callback, i.e. a 500. Here the body must name a registered
callback, list exactly its outputs, inputs and state (ids and properties, in
order), and every value must have the type its component sends
(``PROPERTY_TYPES``). The callbacks then only ever see values of those types.
"""

from __future__ import annotations

import json
import math

# Largest number a control sends (a step, a slider value); beyond it numpy
# conversions overflow. JavaScript's own integer limit.
MAX_NUMBER = 2 ** 53


class BadCallback(ValueError):
    """A callback request that is not what the page sends; the message says what is wrong."""


def _text(value):
    return value is None or isinstance(value, str)


def _texts(value):
    return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _number(value):
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and math.isfinite(value) and abs(value) <= MAX_NUMBER)


def _count(value):
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_NUMBER)


def _flag(value):
    return value is None or isinstance(value, bool)


def _selection(value):
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    lists_ok = all(_texts(value.get(key)) for key in ("runs", "pending"))
    maps_ok = all(isinstance(value.get(key, {}), dict) for key in ("stamps", "errors"))
    return lists_ok and maps_ok


def _options(value):
    """A dropdown's options: strings, or {"label": ..., "value": string} dicts."""
    if value is None:
        return True
    return isinstance(value, list) and all(
        _text(o) if not isinstance(o, dict) else _text(o.get("value")) for o in value)


def _figure(value):
    if value is None:
        return True
    return (isinstance(value, dict) and isinstance(value.get("data", []), list)
            and all(isinstance(t, dict) for t in value.get("data", []))
            and isinstance(value.get("layout", {}), dict))


# What each component property the callbacks read holds, as the page sends it
# (see app/layout.py). tests/test_server_faults.py checks that every input and
# state of every callback is listed, so a new control cannot skip the check.
PROPERTY_TYPES = {
    ("url", "search"): (_text, "a string"),
    ("run-picker", "value"): (_texts, "a list of run ids"),
    ("run-picker", "options"): (_options, "a list of options"),  # the runs the run-list callback listed
    ("tag", "value"): (_text, "a string"),
    ("tag", "options"): (_texts, "a list of strings"),  # the tags the selection callback set
    ("stats", "options"): (_texts, "a list of strings"),  # the statistics the selection callback set
    ("group-by", "options"): (_texts, "a list of strings"),  # the config keys it set
    ("waterfall-key", "options"): (_texts, "a list of strings"),
    ("view", "value"): (_text, "a string"),
    ("stats", "value"): (_texts, "a list of strings"),
    ("log-y", "value"): (_texts, "a list of strings"),
    ("smoothing", "value"): (_number, "a finite number"),
    ("hist-kind", "value"): (_text, "a string"),
    ("ft-run", "value"): (_text, "a string"),
    ("waterfall-key", "value"): (_text, "a string"),
    ("waterfall-stat", "value"): (_text, "a string"),
    ("grad-run", "value"): (_text, "a string"),
    ("group-by", "value"): (_texts, "a list of config keys"),
    ("band", "value"): (_text, "a string"),
    ("step-slider", "value"): (_number, "a finite number"),
    ("run-filter", "value"): (_text, "a string"),
    ("x-axis", "value"): (_text, "a string"),
    ("heat-scale", "value"): (_text, "a string"),
    ("auto-runs", "data"): (_texts, "a list of run ids"),
    ("wanted-runs", "data"): (_texts, "a list of run ids"),
    ("url-applied", "data"): (_flag, "true or false"),
    ("refresh", "n_intervals"): (_count, "a count"),
    ("table-refresh", "n_intervals"): (_count, "a count"),
    ("selection-refresh", "n_intervals"): (_count, "a count"),
    ("table-signature", "data"): (_text, "a string"),
    ("table-page", "data"): (_count, "a page number"),
    ("selection", "data"): (_selection, "a selection object"),
}
# Properties of the many export buttons and graphs, whatever their id.
BY_PROPERTY = {
    "n_clicks": (_count, "a count"),
    "figure": (_figure, "a figure object"),
}


def property_type(component_id, prop):
    """(check, description) for one component property, or None when it is not declared."""
    return PROPERTY_TYPES.get((component_id, prop)) or BY_PROPERTY.get(prop)


def check(raw: bytes, callback_map) -> dict:
    """The parsed body if it is a valid request for one of ``callback_map``'s callbacks.

    Raises BadCallback saying what is wrong.
    """
    body = _parse(raw)
    output = body.get("output")
    if not isinstance(output, str) or output not in callback_map:
        raise BadCallback(f"no callback has the output {str(output)[:80]!r}")
    spec = callback_map[output]
    declared = spec["output"] if isinstance(spec["output"], (list, tuple)) else [spec["output"]]
    wanted = [(o.component_id, o.component_property) for o in declared]
    outputs = body.get("outputs")
    if isinstance(spec["output"], (list, tuple)):
        if not isinstance(outputs, list) or len(outputs) != len(wanted):
            raise BadCallback(f"'outputs' must list the {len(wanted)} outputs of {output!r}")
    else:
        outputs = [outputs]
    # an output another callback also sets (allow_duplicate) is posted as "property@hash"
    if [(i, prop.split("@", 1)[0]) for i, prop in (_id_and_property(o, "outputs") for o in outputs)] != wanted:
        raise BadCallback(f"'outputs' do not match the callback of {output!r}")
    for key in ("inputs", "state"):
        _check_values(body.get(key, []), spec[key], key)
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        raise BadCallback("'changedPropIds' must be a list of strings")
    return body


def _parse(raw: bytes) -> dict:
    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadCallback("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadCallback("the body is not a JSON object")
    return body


def _id_and_property(item, key):
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) \
            or not isinstance(item.get("property"), str):
        raise BadCallback(f"each of '{key}' must be an object with a string 'id' and 'property'")
    return item["id"], item["property"]


def _check_pattern(items, want, key):
    """A pattern-matching input (``{"type": ..., "index": ALL}``): a list of one item per
    matching component, each id an object of the pattern's type with a string index."""
    pattern = json.loads(want["id"])
    if not isinstance(items, list):
        raise BadCallback(f"'{key}': {pattern.get('type')}.{want['property']} must be a list")
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), dict) \
                or item["id"].get("type") != pattern.get("type") or not isinstance(item["id"].get("index"), str) \
                or item.get("property") != want["property"]:
            raise BadCallback(f"'{key}': each {pattern.get('type')} item must name its id and {want['property']!r}")
        kind = BY_PROPERTY.get(want["property"])
        if kind is not None and not kind[0](item.get("value")):
            raise BadCallback(f"{pattern.get('type')}.{want['property']} must be {kind[1]}")


def _check_values(items, declared, key):
    if not isinstance(items, list) or len(items) != len(declared):
        raise BadCallback(f"'{key}' must list {len(declared)} values")
    for item, want in zip(items, declared):
        if str(want["id"]).startswith("{"):
            _check_pattern(item, want, key)
            continue
        got = _id_and_property(item, key)
        if got != (want["id"], want["property"]):
            raise BadCallback(f"'{key}' does not match the callback: {got[0]!r:.60}.{got[1]!r:.40}")
        kind = property_type(*got)
        if kind is not None and not kind[0](item.get("value")):
            raise BadCallback(f"{got[0]}.{got[1]} must be {kind[1]}")
