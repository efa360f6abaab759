"""Checks a Dash callback request before Dash runs it: any mistake is a 400, not a 500.

The browser posts ``{"output", "outputs", "inputs", "state", "changedPropIds"}``
to ``/_dash-update-component``. Dash trusts that body: an unknown output, a
missing key or a value of the wrong type surfaces as an exception deep in
Dash or in a callback, i.e. a 500. Here the body must name a registered
callback, list exactly its outputs, inputs and state (ids and properties, in
order), and every value must have the type its component sends
(declared by the app: ``kinds``). The callbacks then only ever see values of those types.
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


def _plain(value):
    """What a control holds: nothing, a string, a number or a list of strings."""
    return value is None or isinstance(value, str) or (_number(value) and not isinstance(value, bool)) or \
        (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _strings(value):
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _values(value):
    """The controls' values by URL key (the shell's ``applied`` store)."""
    return value is None or (isinstance(value, dict)
                             and all(isinstance(k, str) and _plain(v) for k, v in value.items()))


def _signatures(value):
    """Digests by name (the shell's ``signatures`` store)."""
    return value is None or _strings(value)


def _panel(value, keys=None):
    """A panel's store: the runs to draw (strings), their stamps and colours, the value of each of its
    keys of the kind ``keys`` declares for it (else anything a control holds)."""
    if value is None:
        return True
    if not isinstance(value, dict) or not _texts(value.get("runs")) or not isinstance(value.get("stamps", {}), dict):
        return False
    if not _strings(value.get("colors", {})):
        return False
    for key, item in value.items():
        if key in ("runs", "stamps", "colors"):
            continue
        kind = (keys or {}).get(key)
        if not (isinstance(key, str) and (KINDS[kind][0](item) if kind in KINDS else _plain(item))):
            return False
    return True


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


# What a value of each kind must be, and how the 400 names it. app.create_app declares the kind of
# every component property the callbacks read ({(component id, property): kind}, built from the
# views and the shell: app.shell.page.property_kinds); tests/test_server_faults.py checks that every
# input and state of every callback has one, so a new control cannot skip the check.
KINDS = {
    "text": (_text, "a string"),
    "texts": (_texts, "a list of strings"),
    "number": (_number, "a finite number"),
    "count": (_count, "a count"),
    "flag": (_flag, "true or false"),
    "values": (_values, "an object of control values"),
    "signatures": (_signatures, "an object of strings"),
    "options": (_options, "a list of options"),
    "figure": (_figure, "a figure object"),
}
# Properties of the many export buttons and graphs, whatever their id.
BY_PROPERTY = {"n_clicks": "count", "figure": "figure"}


def property_type(kinds: dict, component_id, prop):
    """(check, description) for one component property given the declared ``kinds``, or None when
    it is not declared. A kind is a name of KINDS, or ``("panel", {key: kind name})`` for a panel's
    store and the kinds of its keys."""
    kind = kinds.get((component_id, prop)) or BY_PROPERTY.get(prop)
    if isinstance(kind, tuple) and kind[0] == "panel":
        return (lambda value: _panel(value, kind[1])), "a panel state object"
    return KINDS[kind] if kind else None


def check(raw: bytes, callback_map, kinds: dict) -> dict:
    """The parsed body if it is a valid request for one of ``callback_map``'s callbacks, every
    value of the kind ``kinds`` declares for it.

    Raises BadCallback saying what is wrong.
    """
    body = _parse(raw)
    output = body.get("output")
    if not isinstance(output, str) or output not in callback_map:
        raise BadCallback(f"no callback has the output {str(output)[:80]!r}")
    spec = callback_map[output]
    if "callback" not in spec:  # a clientside callback: the browser computes it, Dash has nothing to run
        raise BadCallback(f"{output!r} is computed in the browser, not by the server")
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
        _check_values(body.get(key, []), spec[key], key, kinds)
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


def _check_pattern(items, want, key, kinds):
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
        kind = property_type(kinds, pattern.get("type"), want["property"])
        if kind is not None and not kind[0](item.get("value")):
            raise BadCallback(f"{pattern.get('type')}.{want['property']} must be {kind[1]}")


def _check_values(items, declared, key, kinds):
    if not isinstance(items, list) or len(items) != len(declared):
        raise BadCallback(f"'{key}' must list {len(declared)} values")
    for item, want in zip(items, declared):
        if str(want["id"]).startswith("{"):
            _check_pattern(item, want, key, kinds)
            continue
        got = _id_and_property(item, key)
        if got != (want["id"], want["property"]):
            raise BadCallback(f"'{key}' does not match the callback: {got[0]!r:.60}.{got[1]!r:.40}")
        kind = property_type(kinds, *got)
        if kind is not None and not kind[0](item.get("value")):
            raise BadCallback(f"{got[0]}.{got[1]} must be {kind[1]}")
