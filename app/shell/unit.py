"""What a view is: the unit the page, the URL, the request checks, the background reads and the
report are all built from (app.views lists them, one line each).

A view (:class:`View`) declares

- its ``controls``: each a URL key with its component, default and valid values (:class:`Control`);
- its ``panels``: what it draws (component properties) from which URL keys, and how
  (``draw(state, data)``, reading through app.runs only);
- ``warm(data, run_id)``: the reads of a selected run the background does before a figure asks;
- ``report(state, data)``: its section of the offline report, drawn by the same functions.

The shell (app.shell) owns the URL: every control's value comes from the URL or its default
(:class:`Context` says what the selected runs hold, to pick defaults and check values), and a
panel draws from a store the shell fills with the values of its keys, never from the controls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

# What a control's check says of a value that cannot be judged yet (the runs it depends on are
# still being read): it is kept, and shown, until it can be.
PENDING = "pending"

# The widget of a control -> the kind of value it holds (app.server.body checks requests by kind).
WIDGET_KINDS = {"dropdown": "text", "multi": "texts", "radio": "text", "checklist": "texts",
                "slider": "number", "text": "text", "tabs": "text"}


@dataclass
class Context:
    """What the checks and defaults of controls may use: the runs selected (whether drawn or hidden
    by the filter) and what their headers say; ``complete`` once every one's header is read."""

    selected: list = field(default_factory=list)
    headers: dict = field(default_factory=dict)  # run id -> light_info (readable runs only)
    complete: bool = False

    def union(self, field_name: str) -> list:
        """Every value of one header list (tags, scalars, embedding_tags) over the selected runs,
        in first-seen order."""
        seen = {}
        for run_id in self.selected:
            for item in (self.headers.get(run_id) or {}).get(field_name, []):
                seen.setdefault(item, None)
        return list(seen)

    def configs(self) -> dict:
        """{run id: config} of the selected runs whose header is read."""
        return {r: (self.headers[r] or {}).get("config", {}) for r in self.selected if r in self.headers}

    def config_keys(self) -> list:
        """Config keys of the selected runs: those whose values differ first, then the others."""
        configs = list(self.configs().values())
        keys = sorted({k for c in configs for k in c})
        differing = set(differing_keys(configs)) if len(configs) > 1 else set()
        return [k for k in keys if k in differing] + [k for k in keys if k not in differing]

    def differing_keys(self) -> list:
        """Config keys whose values differ between the selected runs (sorted)."""
        configs = list(self.configs().values())
        return differing_keys(configs) if len(configs) > 1 else []

    def last_step(self) -> int | None:
        """The last recorded step over the selected runs (from their headers), None without any."""
        steps = [h.get("last_step") for h in self.headers.values() if isinstance(h.get("last_step"), int)]
        return max(steps) if steps else None

    def decided(self) -> bool:
        """Whether values that depend on the selected runs can be judged now: some are selected and
        every one's header is read (with none selected, nothing is judged, nothing dropped)."""
        return bool(self.selected) and self.complete


def differing_keys(configs: Sequence[dict]) -> list[str]:
    """Config keys whose values are not the same in every one of ``configs`` (a missing key
    counts as a value), sorted: what tells these runs apart."""
    from app.plot.axes import fmt

    keys = sorted({k for c in configs for k in (c or {})})
    return [k for k in keys if len({fmt((c or {}).get(k, "")) for c in configs}) > 1]


@dataclass(frozen=True)
class Choices:
    """The valid values of a control now: ``values`` (with their ``labels``), final once ``complete``."""

    values: list
    complete: bool = True
    labels: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Control:
    """One value of the page's state: its URL ``key``, the component ``id`` that shows it, how.

    ``widget`` is one of WIDGET_KINDS. ``default`` is the value when the URL has none (or a
    function of the Context). ``choices`` are the valid values: a fixed sequence of ``(value,
    label)`` pairs, or a function of the Context returning :class:`Choices`; None for any value of
    the kind, checked by ``check(value, context)`` if given (None when valid, PENDING, or the
    reason it is not). ``invalid`` says why a value outside the choices is dropped. ``props`` go to
    the component as they are. ``most``: a list control's most values.
    """

    key: str
    id: str
    label: str
    widget: str
    default: Any = None
    choices: Any = None
    check: Callable | None = None
    invalid: str = "not one of the choices"
    props: dict = field(default_factory=dict)
    title: str | None = None
    width: str = ""
    most: int | None = None  # a list control's most values (more are dropped, said once)

    @property
    def kind(self) -> str:
        """The kind of value the component holds (text, texts, number)."""
        return WIDGET_KINDS[self.widget]

    @property
    def many(self) -> bool:
        return self.kind == "texts"

    @property
    def has_options(self) -> bool:
        """Whether the shell sets this control's options (a dropdown whose choices depend on the runs)."""
        return self.widget in ("dropdown", "multi") and callable(self.choices)

    def default_for(self, context: Context):
        return self.default(context) if callable(self.default) else self.default

    def choices_for(self, context: Context) -> Choices | None:
        if self.choices is None:
            return None
        if callable(self.choices):
            return self.choices(context)
        return Choices([value for value, _ in self.choices], True, dict(self.choices))


@dataclass(frozen=True)
class Panel:
    """Part of a view drawn by one callback: ``outputs`` (component id, property) drawn by
    ``draw(state, data)`` from the values of the URL ``keys`` (``state`` also holds ``runs``: the
    runs to draw, read, in the order selected, and their file ``stamps``). A panel whose keys did
    not change is not drawn again."""

    name: str
    outputs: tuple
    keys: tuple
    draw: Callable


@dataclass(frozen=True)
class Section:
    """One part of the offline report: a heading and a plotly figure or a Dash component (a table)."""

    heading: str
    body: Any


@dataclass(frozen=True)
class View:
    """One view of the page (a tab): see the module's docstring.

    ``layout()`` returns its components (its controls' components from app.shell.components);
    ``graphs`` names its graphs (``NAME-graph`` components with export buttons); ``report(state,
    data)`` returns its :class:`Section` list, drawn for every tag when ``report_tags`` is
    ``"each"`` (once, at the default tag, when ``"default"``); ``groups`` says whether it draws
    groups of runs (the group-by bar applies to it).
    """

    name: str
    label: str
    layout: Callable
    panels: tuple
    controls: tuple = ()
    graphs: tuple = ()
    warm: Callable | None = None
    report: Callable | None = None
    report_tags: str = "default"
    groups: bool = False

    def keys(self) -> tuple:
        """Every URL key its panels draw from."""
        return tuple(dict.fromkeys(k for panel in self.panels for k in panel.keys))
