"""The page's one state: the URL.

Every control's value comes from the URL or its default, through one callback (this module's):
when the page opens (or on back/forward) the URL sets every control; when the user changes a
control (one that differs from the value this callback last set: the ``applied`` store), that
change goes into the URL. A value the selected runs cannot judge yet (``stats=lr`` before their
headers are read) is kept, and listed among the dropdown's options, until they can; a value that
is not valid (an unknown run, statistic, tag or ``x=``) is dropped with a notice saying so, then
the URL is rewritten. The options of a dropdown are set in the same answer as its value, so no
dropdown ever drops a value for want of its option, whatever order the answers arrive in.

The same callback fills the store of each panel of the view on screen with the values of its
keys, the runs to draw and their file stamps: a panel draws again only when one of them changed.
"""

from __future__ import annotations

import hashlib
import json
import re

from dash import Input, Output, State, ctx, html, no_update

from app.plot.palette import run_colors
from app.shell import page, runfilter, selection as selection_module, url
from app.shell.selection import default_runs, filterable, select, why_not_a_run
from app.shell.unit import PENDING, Context


_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
NOTICE_ITEMS = 10  # values a notice lists of those dropped from a URL; the rest are counted


def dropped_line(dropped: list) -> str:
    """The notice of what was dropped from the URL: the first NOTICE_ITEMS, the rest counted (a
    forged link may drop thousands)."""
    more = f"; and {len(dropped) - NOTICE_ITEMS:,} more" if len(dropped) > NOTICE_ITEMS else ""
    return "Not applied from the URL, which is rewritten without them: " + "; ".join(dropped[:NOTICE_ITEMS]) + more


class PageState:
    """The state logic of the page for ``views`` over ``data`` (a RunData), without Dash: ``update``
    maps the URL and the controls' values to what the callback answers. It waits ``wait`` seconds
    at most for the selected runs to be read (default: app.shell.selection.SELECTION_WAIT_S)."""

    def __init__(self, data, views, wait: float | None = None):
        self.data, self.views, self.wait = data, views, wait
        self.controls = page.controls(views)
        self.by_key = {c.key: c for c in self.controls}
        self.option_controls = [c for c in self.controls if c.widget in ("dropdown", "multi")]
        self.panels = [(v, p) for v in views for p in v.panels]

    # ---- values --------------------------------------------------------------------

    def normal(self, control, value):
        """A control's value as compared and stored: lists for list controls, '' for an empty text."""
        if control.many:
            return list(value) if isinstance(value, list) else ([] if value is None else [value])
        if control.widget == "text":
            return value or ""
        return value

    def edits(self, now: dict, applied: dict) -> dict:
        """The controls the user changed: those whose value differs from the one last set."""
        out = {}
        for key, value in now.items():
            control = self.by_key[key]
            if key in (applied or {}) and self.normal(control, value) != self.normal(control, applied[key]):
                out[key] = self.normal(control, value)
        return out

    def verdict(self, control, item, context):
        """None when ``item`` is a valid value of ``control`` now, PENDING when that cannot be said
        yet, else why it is not."""
        choices = control.choices_for(context)
        if choices is not None:
            if item in choices.values:
                return None
            return PENDING if not choices.complete else control.invalid
        if control.check is not None:
            return control.check(item, context)
        return None

    # ---- the answer ------------------------------------------------------------------

    def update(self, search, now: dict, applied: dict, from_url: bool, signatures: dict | None = None,
               asked_again=0) -> dict:
        """What the page shows for the URL ``search`` and the controls' values ``now`` (``applied``:
        the values last set; ``from_url``: the URL changed, the controls follow it). Returns
        ``{"search", "dropped", "values", "options", "panels", "notice", "pending", "signatures", "runs",
        "colors", "context"}``: the URL, what was dropped from it, every control's value, the options
        and panel states that changed, the notice lines, whether runs are still being read, the
        signatures sent, the runs to draw, their colours, and the Context."""
        # what the page's settings refuse is said before what the URL's codec left out (unknown keys,
        # fields past the most read): a forged link's hundreds of those do not hide it
        explicit, left_out = url.parse(search, self.controls)
        dropped = []
        edits = {} if from_url else self.edits(now, applied)
        for key in ("runs", "filter"):
            if key in edits:
                self._set(explicit, key, edits.pop(key), None)
        if runfilter.too_long(str(explicit.get("filter", ""))):  # ignored whole: not echoed either (1.5 MB)
            dropped.append(f"filter={url.shown(explicit.pop('filter'))} (a filter is at most "
                           f"{runfilter.MAX_CHARS:,} characters)")
        ids = self.data.run_ids()  # listed once an answer (a walk of the run folders)
        selected = self._runs(explicit, dropped, ids)
        wait = selection_module.SELECTION_WAIT_S if self.wait is None else self.wait
        selection = select(self.data, selected, explicit.get("filter"), wait)
        context = selection.context
        for key, value in edits.items():
            self._set(explicit, key, value, context)
        pending = self._check(explicit, context, dropped)
        values = {c.key: self._value(c, explicit, context, selection) for c in self.controls}
        signatures = dict(signatures or {})
        options = {}
        for control in self.option_controls:
            listed = (self._run_options(selection, values["filter"], ids) if control.key == "runs" else
                      self._options(control, values[control.key], context, pending.get(control.key, [])))
            digest = _digest(listed)
            if signatures.get("options:" + control.id) != digest:
                signatures["options:" + control.id] = digest
                options[control.id] = listed
        panels = {}
        # each run's colour among the runs shown together (still being read or not): app.plot.palette
        colors = run_colors([r for r in selection.selected if r not in selection.errors and r not in selection.hidden])
        for view, panel in self.panels:
            if view.name != values["view"]:
                continue
            state = {"runs": selection.drawn, "stamps": {r: selection.stamps.get(r) for r in selection.drawn},
                     "colors": colors, **{k: values[k] for k in panel.keys}}
            digest = _digest(state)
            if signatures.get("panel:" + page.store_id(view, panel)) != digest:
                signatures["panel:" + page.store_id(view, panel)] = digest
                panels[page.store_id(view, panel)] = state
        notice = [f"{run_id}: {message}" for run_id, message in selection.errors.items()]
        if selection.pending:
            notice.append("reading " + f"{len(selection.pending)} run(s) in the background, drawn when read: "
                          + ", ".join(selection.pending))
        return {"search": url.encode(explicit, self.controls), "dropped": dropped + left_out, "values": values,
                "options": options, "panels": panels, "notice": notice, "pending": bool(selection.pending),
                "signatures": signatures, "runs": selection.drawn, "colors": colors, "context": context}

    def sanitized(self, stored, panel) -> dict:
        """A panel's store as its draw may trust it: runs a list of strings, every key's value of its
        control's kind (else the default); a forged request gets the defaults, never an exception."""
        from app.server.body import KINDS

        stored = stored if isinstance(stored, dict) else {}
        runs = stored.get("runs")
        out = {"runs": [r for r in runs if isinstance(r, str)] if isinstance(runs, list) else [],
               "stamps": stored.get("stamps") if isinstance(stored.get("stamps"), dict) else {}}
        colors = stored.get("colors") if isinstance(stored.get("colors"), dict) else {}
        given = {r: c for r, c in colors.items() if isinstance(c, str) and _COLOR.fullmatch(c)}
        out["colors"] = {r: given.get(r) or fallback for r, fallback in run_colors(out["runs"]).items()}
        for key in panel.keys:
            control = self.by_key[key]
            value = stored.get(key)
            if value is None or not KINDS[control.kind][0](value):
                value = self.normal(control, control.default_for(Context()))
            if control.many and control.most is not None:
                value = value[:control.most]  # a forged store: no more than the page would send
            out[key] = value
        return out

    def _set(self, explicit: dict, key: str, value, context) -> None:
        """A user's change of one control into the explicit state: the URL keeps what the user set
        (an emptied picker is an empty selection, ``stats=``), and leaves out a cleared value whose
        default is nothing anyway (no tag, no filter, no grouping)."""
        control = self.by_key[key]
        if key == "runs":
            explicit[key] = list(value or [])
            return
        default = control.default_for(context) if context is not None else None
        if value is None or value == "" or (value == [] and default in (None, [])):
            explicit.pop(key, None)
        else:
            explicit[key] = value

    def _runs(self, explicit: dict, dropped: list, ids: list) -> list:
        """The runs selected: the URL's that exist (the others dropped, and said why), else the default."""
        if "runs" not in explicit:
            return default_runs(self.data, explicit.get("filter"), ids)
        known = set(ids)
        valid = []
        for run_id in explicit["runs"]:
            why = why_not_a_run(self.data, run_id, known)
            if why is None:
                valid.append(run_id)
            else:
                dropped.append(f"runs={url.shown(run_id)} ({why})")
        if explicit["runs"] and not valid:  # a link naming no run there: the default runs, and the notice
            del explicit["runs"]
            return default_runs(self.data, explicit.get("filter"), ids)
        explicit["runs"] = valid
        return valid

    def _check(self, explicit: dict, context, dropped: list) -> dict:
        """Drop the explicit values that are not valid (said in ``dropped``); returns the values kept
        while they cannot be judged yet, by key."""
        pending = {}
        for control in self.controls:
            if control.key in ("runs", "filter") or control.key not in explicit:
                continue
            value = explicit[control.key]
            kept = []
            for item in value if control.many else [value]:
                verdict = self.verdict(control, item, context)
                if verdict is None or verdict == PENDING:
                    kept.append(item)
                    if verdict == PENDING:
                        pending.setdefault(control.key, []).append(item)
                else:
                    text = url.number_text(item) if control.kind == "number" else item
                    dropped.append(f"{control.key}={url.shown(text)} ({verdict})")
            if control.many and control.most is not None and len(kept) > control.most:
                dropped.append(f"{control.key}: {len(kept) - control.most} values after the first {control.most}")
                del kept[control.most:]
            if not control.many:
                if not kept:
                    del explicit[control.key]
            elif value and not kept:
                del explicit[control.key]
            else:
                explicit[control.key] = kept
        return pending

    def _value(self, control, explicit: dict, context, selection):
        if control.key == "runs":
            return list(selection.selected)
        if control.key in explicit:
            return explicit[control.key]
        return self.normal(control, control.default_for(context))

    def _options(self, control, value, context, waiting: list) -> list:
        """A dropdown's options: its valid values now, and every value it holds (those waiting to be
        judged labelled so)."""
        choices = control.choices_for(context)
        values = list(choices.values) if choices else []
        labels = dict(choices.labels) if choices else {}
        for item in (value if isinstance(value, list) else [value]):
            if item is not None and item not in values:
                values.append(item)
        for item in waiting:
            labels[item] = f"{item} (waiting for the runs' headers)"
        return [{"label": str(labels.get(v, v)), "value": v} for v in values]

    def _run_options(self, selection, text, ids: list) -> list:
        """The run picker's options: every run the filter ``text`` keeps, and the selected ones it
        hides (they stay selected: clearing the filter shows them again)."""
        infos = self.data.listed_infos(ids)
        kept, _ = runfilter.matching(filterable(ids, infos, text), infos, text)
        out = [{"label": r + ("  (error)" if (infos.get(r) or {}).get("error") else ""), "value": r} for r in kept]
        listed = set(kept)
        out += [{"label": f"{r}  (hidden by the filter)", "value": r} for r in selection.selected if r not in listed]
        return out


def _digest(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def register(dash_app, data, views) -> PageState:
    """The state callback of the page (see the module's docstring) and one callback per panel."""
    state = PageState(data, views)
    controls, options = state.controls, state.option_controls
    stores = [page.store_id(v, p) for v, p in state.panels]

    @dash_app.callback(
        Output("url", "search"), Output("url-notice", "children"), Output("notice", "children"),
        Output("selection-refresh", "max_intervals"), Output("applied", "data"), Output("signatures", "data"),
        *[Output(c.id, "value") for c in controls],
        *[Output(c.id, "options") for c in options],
        *[Output(store, "data") for store in stores],
        Input("url", "search"), Input("refresh", "n_intervals"), Input("selection-refresh", "n_intervals"),
        *[Input(c.id, "value") for c in controls],
        State("applied", "data"), State("signatures", "data"),
    )
    def update_state(search, _refresh, asked_again, *rest):
        now = {c.key: value for c, value in zip(controls, rest)}
        applied, signatures = rest[len(controls)], rest[len(controls) + 1]
        from_url = ctx.triggered_id in (None, "url")
        answer = state.update(search, now, applied if isinstance(applied, dict) else {}, from_url,
                              signatures if isinstance(signatures, dict) else {}, asked_again)
        values = answer["values"]
        if answer["dropped"]:
            url_notice = html.Div(dropped_line(answer["dropped"]), className="dropped-line")
        else:
            url_notice = [] if from_url or state.edits(now, applied or {}) else no_update
        notice = [html.Div(line, className="pending-line" if line.startswith("reading ") else "error-line")
                  for line in answer["notice"]]
        new_applied = {c.key: values[c.key] for c in controls}
        return [
            answer["search"] if answer["search"] != (search or "") else no_update,
            url_notice, notice,
            (asked_again or 0) + 1 if answer["pending"] else 0,
            new_applied if new_applied != applied else no_update,
            answer["signatures"] if answer["signatures"] != signatures else no_update,
            *[values[c.key] if state.normal(c, values[c.key]) != state.normal(c, now[c.key]) else no_update
              for c in controls],
            *[answer["options"].get(c.id, no_update) for c in options],
            *[answer["panels"].get(store, no_update) for store in stores],
        ]

    for view, panel in state.panels:
        _panel_callback(dash_app, data, state, view, panel)
    return state


def _panel_callback(dash_app, data, state, view, panel):
    @dash_app.callback(*[Output(i, p) for i, p in panel.outputs], Input(page.store_id(view, panel), "data"),
                       prevent_initial_call=True)
    def draw(stored):
        return panel.draw(state.sanitized(stored, panel), data)
