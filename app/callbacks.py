"""Wiring only: read runs (app.data), call figure functions (app.figures), return.

The chain on the page: one state callback (``sync_url``) owns the URL and every
control the URL holds, the picker's runs included: it applies a link when the
page opens, follows new runs while the page shows the default runs, adds runs a
link named once they appear, and toggles a run when its table row is clicked.
The refresh interval and the picker update the ``selection`` store (valid runs
and their file stamps); every figure takes the store as input, so a figure is
recomputed only when a selected run's file changed or a control moved, and only
for the view that is on screen. Each run keeps its colour (app.colors) in every
view.
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlencode

import pandas as pd
import plotly.io as pio
from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from app import colors as run_colors_module
from app import figures, group_figures, images, layout, representation, runfilter
from scoreviz import health
from app.data import RefusedRunId, RunData

# Controls whose values live in the URL: query key -> (component id, is a list).
URL_CONTROLS = {
    "runs": ("run-picker", True),
    "filter": ("run-filter", False),
    "tag": ("tag", False),
    "x": ("x-axis", False),
    "view": ("view", False),
    "stats": ("stats", True),
    "log": ("log-y", True),
    "smooth": ("smoothing", False),
    "kind": ("hist-kind", False),
    "hscale": ("heat-scale", False),
    "ft": ("ft-run", False),
    "key": ("waterfall-key", False),
    "wstat": ("waterfall-stat", False),
    "grun": ("grad-run", False),
    "group": ("group-by", True),
    "band": ("band", False),
}
CONTROL_KEYS = {cid: key for key, (cid, _) in URL_CONTROLS.items()}
# Dropdowns whose options come from the runs' headers (tags, scalars, config keys).
HEADER_OPTIONS = ("tag", "stats", "waterfall-key", "group-by")
# Written into the URL but set from it by the callback that owns the control:
# the step slider belongs to the distribution callback (it knows the steps).
URL_READ_ONLY = {"step": "step-slider"}
# Runs shown when the URL names none: all of them, or the most recent this many.
DEFAULT_RUNS = 10
# Rows of the run table built at once (the filter and the picker cover every run; the
# table shows one page of the runs the filter keeps): 1,000 rows took 2 to 3.5 s to build.
PAGE_ROWS = 50
ROW = {"type": "run-row", "index": ALL}


def register(dash_app, data: RunData) -> None:
    """Attach every callback of the page to ``dash_app``."""
    _url_sync(dash_app, data)
    _run_list(dash_app, data)
    _selection(dash_app, data)
    _figures(dash_app, data)
    for name in layout.GRAPHS:
        _export(dash_app, name)


# ---- URL <-> controls ------------------------------------------------------------


def query_from_values(values: dict) -> str:
    """'?runs=a&runs=b&view=curves...' from control values (empty ones left out)."""
    pairs = []
    for key, value in values.items():
        if value in (None, "", []):
            continue
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, item))
    return "?" + urlencode(pairs) if pairs else ""


def values_from_query(search: str) -> dict:
    """Control values from a query string; unknown keys and unreadable numbers ignored."""
    parsed = parse_qs((search or "").lstrip("?"), keep_blank_values=False)
    out = {}
    for key in list(URL_CONTROLS) + list(URL_READ_ONLY):
        if key not in parsed:
            continue
        items = parsed[key]
        if key == "smooth":
            try:
                out[key] = min(max(float(items[-1]), 0.0), 0.99)
            except ValueError:
                continue
        elif key == "step":
            try:
                out[key] = int(items[-1])
            except ValueError:
                continue
        else:
            out[key] = items if key in URL_CONTROLS and URL_CONTROLS[key][1] else items[-1]
    return out


def default_runs(data: RunData, text) -> list[str]:
    """The runs shown when the URL names none: every run the filter keeps, the most recent
    DEFAULT_RUNS of them when there are more (by their file's mtime: the headers still being
    read in the background are not waited for, except those of the runs chosen)."""
    ids = data.run_ids()
    infos = data.listed_infos(ids)
    kept, _ = runfilter.matching(filterable(ids, infos, text), infos, text)
    by_time = {r: infos.get(r) or {"mtime": data.mtime(r)} for r in kept}
    chosen = []
    for run_id in sorted(kept, key=lambda r: (by_time[r].get("mtime", 0), r), reverse=True):
        if not (infos.get(run_id) or data.light_info(run_id)).get("error"):
            chosen.append(run_id)
        if len(chosen) == DEFAULT_RUNS:
            break
    return sorted(chosen)


def filterable(run_ids, infos: dict, text) -> list[str]:
    """The runs the filter ``text`` can be decided on now: all of them, except, for a config
    condition, those whose header is still being read (they join when it is)."""
    if not runfilter.needs_config(text):
        return list(run_ids)
    return [r for r in run_ids if r in infos]


def _url_sync(dash_app, data):
    # One callback both ways, so Dash sees no cycle between two callbacks:
    # the URL sets the controls when the page opens (or on back/forward), and
    # any control change rewrites the URL.
    ids = [cid for cid, _ in URL_CONTROLS.values()]
    keys = list(URL_CONTROLS)

    @dash_app.callback(
        Output("url", "search"), Output("url-notice", "children"), Output("auto-runs", "data"),
        Output("wanted-runs", "data"), Output("url-applied", "data"),
        *[Output(cid, "value") for cid in ids],
        # a link's values become options together with the values: a dropdown drops a value it
        # has no option for, and the page lists the tags, scalars and config keys of the headers
        # read by then, maybe none yet (the selection callback adds those of the selected runs)
        *[Output(cid, "options", allow_duplicate=True) for cid in HEADER_OPTIONS],
        Input("url", "search"), Input("refresh", "n_intervals"), Input(ROW, "n_clicks"),
        *[Input(cid, "value") for cid in ids], Input("step-slider", "value"),
        State("auto-runs", "data"), State("wanted-runs", "data"), State("url-applied", "data"),
        State("run-picker", "options"), *[State(cid, "options") for cid in HEADER_OPTIONS],
        prevent_initial_call="initial_duplicate",
    )
    def sync_url(search, _n, _clicks, *rest):
        values = dict(zip(keys, rest[:len(ids)]))
        step, auto, wanted, applied, options = rest[len(ids):len(ids) + 5]
        header_options = dict(zip(HEADER_OPTIONS, rest[len(ids) + 5:]))
        wanted = list(wanted or [])
        trigger = ctx.triggered_id
        notice = no_update
        new = {}  # control values this call sets
        # The link's values until the controls hold them: the page's first answer is dropped when
        # another input of this callback fires before it arrives (the run table drawn, a refresh).
        if trigger in (None, "url") or not applied:
            trigger = "url"
            linked = values_from_query(search)
            new = {key: linked[key] for key in keys if key in linked}
            known = set(data.run_ids())
            if "runs" in linked:
                new["runs"] = [r for r in linked["runs"] if r in known]
                wanted, problems = [], []
                for r in linked["runs"]:
                    if r in known:
                        continue
                    why = _why_unknown(data, r)
                    if why is None:
                        wanted.append(r)
                    else:
                        problems.append(_error_line(r, why))
                auto = None
                notice = problems
            else:
                new["runs"] = default_runs(data, linked.get("filter"))
                auto, wanted, notice = new["runs"], [], []
        elif trigger == "refresh":
            # Only runs the picker already lists: a dropdown drops a value missing from its
            # options, and the run-list callback adds a new run's option on this same tick,
            # maybe after this answer arrives. So a new run is shown one refresh later.
            listed = {o.get("value") if isinstance(o, dict) else o for o in options or []}
            known = set(data.run_ids()) & listed
            runs = list(values["runs"] or [])
            arrived = [r for r in wanted if r in known]
            if arrived:  # a run the link named has appeared
                runs += [r for r in arrived if r not in runs]
                wanted = [r for r in wanted if r not in arrived]
            elif auto is not None and sorted(runs) == sorted(auto):
                latest = [r for r in default_runs(data, values["filter"]) if r in listed]
                if latest != sorted(runs):
                    runs = auto = latest
            if runs != list(values["runs"] or []):
                new["runs"] = runs
        elif isinstance(trigger, dict):  # a run-table row
            if not (ctx.triggered and ctx.triggered[0].get("value")):
                # rows (re)drawn, not clicked: nothing to change, and the controls may not hold the
                # link's values yet (the table can be drawn before the link's answer arrives)
                raise _no_change()
            clicked = trigger.get("index")
            runs = list(values["runs"] or [])
            new["runs"] = [r for r in runs if r != clicked] if clicked in runs else runs + [clicked]
        elif trigger == "run-filter":
            runs = list(values["runs"] or [])
            if auto is not None and sorted(runs) == sorted(auto):
                new["runs"] = auto = default_runs(data, values["filter"])
            else:
                infos = {r: data.light_info(r) for r in runs}
                new["runs"], _ = runfilter.matching(runs, infos, values["filter"])
        current = {**values, **new}
        tag = pick_tag(data, current["runs"] or [], current["tag"])
        if tag != current["tag"] and current["runs"]:
            new["tag"] = current["tag"] = tag  # the control says the tag the figures show
        shown = dict(current)
        if auto is not None and sorted(shown["runs"] or []) == sorted(auto):
            shown["runs"] = None  # the default runs: the URL leaves them out, so a reload follows new runs
        else:
            shown["runs"] = list(shown["runs"] or []) + [r for r in wanted if r not in (shown["runs"] or [])]
        # the slider's step; the link's while the slider has none yet (its runs still being read)
        linked_step = values_from_query(search).get("step")
        shown["step"] = step if trigger not in (None, "url") and step is not None else linked_step
        query = query_from_values(shown)
        if trigger not in (None, "url") and not new and query == (search or ""):
            raise _no_change()
        if wanted and notice is no_update:
            notice = []
        if wanted:
            notice = list(notice) + [html.Div(f"waiting for {', '.join(wanted)}: not below the runs folder yet; "
                                              "shown as soon as it appears", className="pending-line")]
        return [query if query != (search or "") else no_update, notice, auto, wanted, True] + \
            [new.get(key, no_update) for key in keys] + \
            [_with_options(header_options[cid], new.get(CONTROL_KEYS[cid])) for cid in HEADER_OPTIONS]


def _with_options(options, value):
    """A dropdown's options with ``value`` (a string, a list or None) added where missing;
    no_update when nothing is missing."""
    options = list(options or [])
    values = value if isinstance(value, list) else [] if value is None else [value]
    missing = [v for v in values if isinstance(v, str) and v not in options]
    return options + missing if missing else no_update


def _no_change():
    from dash.exceptions import PreventUpdate

    return PreventUpdate()


def _why_unknown(data, run_id):
    """Why a linked run is not listed: refused (a reason), or None when it may still appear."""
    try:
        data.resolve(run_id)
    except RefusedRunId as err:
        return str(err)
    return None


# ---- run list, run table ------------------------------------------------------


def _run_list(dash_app, data):
    @dash_app.callback(
        Output("run-picker", "options"), Output("run-table", "children"),
        Output("table-signature", "data"), Output("last-refresh", "children"),
        Output("table-page", "data"), Output("table-pager", "style"), Output("table-page-label", "children"),
        Output("table-refresh", "disabled"),
        Input("refresh", "n_intervals"), Input("run-filter", "value"), Input("run-picker", "value"),
        Input("table-prev", "n_clicks"), Input("table-next", "n_clicks"), Input("table-refresh", "n_intervals"),
        State("table-signature", "data"), State("table-page", "data"),
    )
    def refresh_runs(_n, text, picked, _prev, _next, _soon, signature, page):
        ids = data.run_ids()
        data.warm(ids)  # new and grown runs get read in the background, headers first
        infos = data.listed_infos(ids)  # the headers read so far
        kept, problems = runfilter.matching(filterable(ids, infos, text), infos, text)
        listed = set(ids)
        shown = [r for r in (picked or []) if r in listed]
        page = table_page(ctx.triggered_id, page, len(kept))
        on_page = kept[page * PAGE_ROWS:(page + 1) * PAGE_ROWS]
        # a row whose header is not read yet shows its name: the background reads it first, and
        # the table asks again within a second (table-refresh) until the page is complete
        rows = {r: data.table_row(r) for r in on_page}
        complete = all(row is not None for row in rows.values())
        data.save_headers(ids)  # the header index (app.headers) for the next start, if it changed
        unread = sum(1 for r in ids if r not in infos and rows.get(r) is None)
        table = figures.run_table([rows.get(r) or _unread_row(r, infos) for r in kept])
        table["rows"] = table["rows"][page * PAGE_ROWS:(page + 1) * PAGE_ROWS]
        new_signature = json.dumps([table, shown, problems, kept, unread], sort_keys=True, default=str)
        stamp = time.strftime("checked %H:%M:%S")
        if unread:
            stamp += f" (reading {unread} of {len(ids)} run headers)"
        pages = max(1, -(-len(kept) // PAGE_ROWS))
        pager = {"display": "flex"} if pages > 1 else {"display": "none"}
        label = f"runs {page * PAGE_ROWS + 1}-{page * PAGE_ROWS + len(on_page)} of {len(kept)}"
        if new_signature == signature:
            return no_update, no_update, no_update, stamp, page, pager, label, complete
        options = [{"label": i + ("  (error)" if (infos.get(i) or {}).get("error") else ""), "value": i}
                   for i in kept]
        options += [{"label": r, "value": r} for r in shown if r not in kept]  # the picker keeps its runs
        if not ids:
            children = layout.empty_folder_hint(str(data.root), _refresh_seconds(dash_app))
        elif not kept:
            waiting = f"; {unread} run headers still being read" if unread else ""
            children = html.P(f"No run matches the filter {text!r} ({len(ids)} runs in the folder{waiting}).")
        else:
            children = layout.run_table(table, shown, run_colors_module.run_colors(shown))
        if problems:
            children = [html.Div(p, className="error-line") for p in problems] + [children]
        return options, children, new_signature, stamp, page, pager, label, complete


def table_page(trigger, page, rows: int) -> int:
    """The run table's page after ``trigger`` (the previous/next buttons move it, a new filter
    goes back to the first), kept inside the ``rows`` the filter keeps."""
    page = page if isinstance(page, int) and page >= 0 else 0
    if trigger == "table-prev":
        page -= 1
    elif trigger == "table-next":
        page += 1
    elif trigger == "run-filter":
        page = 0
    return min(max(page, 0), max(0, -(-rows // PAGE_ROWS) - 1))


def _unread_row(run_id: str, infos: dict) -> dict:
    """A run table row off the page shown: its header if read (for the config columns), else its name."""
    info = infos.get(run_id)
    return dict(info, steps="") if info else {"id": run_id, "name": run_id, "config": {}}


def _refresh_seconds(dash_app) -> float:
    return getattr(dash_app, "scoreviz_refresh", 5.0)


# How long the selection callback waits for the background to read the selected runs before it
# answers with those read so far (seconds; the page asks again then, see layout.SELECTION_AGAIN_MS).
SELECTION_WAIT_S = 1.0


def _selection(dash_app, data):
    @dash_app.callback(
        Output("selection", "data"), Output("notice", "children"),
        Output("tag", "options"), Output("stats", "options"), Output("waterfall-key", "options"),
        Output("group-by", "options"), Output("ft-run", "options"), Output("grad-run", "options"),
        Output("selection-refresh", "max_intervals"),
        Input("refresh", "n_intervals"), Input("run-picker", "value"), Input("selection-refresh", "n_intervals"),
        State("selection", "data"), State("tag", "options"), State("group-by", "value"),
    )
    def update_selection(_n, picked, asked_again, previous, previous_tags, grouped_by):
        found, stamps, errors = [], {}, {}
        for run_id in picked or []:
            try:
                stamps[run_id] = data.stamp(run_id)
                found.append(run_id)
            except RefusedRunId as err:
                errors[run_id] = str(err)
        # Runs never read yet are read in the background (their headers too), selected ones
        # first; the figures leave them out until then, so no callback waits seconds. The
        # answer waits for them, a second at most: then the figures come once, complete.
        data.warm(found, urgent=True)
        pending = data.wait_read(found, SELECTION_WAIT_S)
        valid, headers = [], {}
        for run_id in found:
            # a run still being read: its header if read by now (nothing opened here), else later
            info = data.known_info(run_id) if run_id in pending else data.light_info(run_id)
            if info and info.get("error"):
                errors[run_id] = info["error"]
                pending = [r for r in pending if r != run_id]
            else:
                valid.append(run_id)
                if info:
                    headers[run_id] = info
        selection = {"runs": [r for r in valid if r not in pending], "pending": pending,
                     "stamps": stamps, "errors": errors}
        # runs still being read: the page asks again once, soon (selection-refresh), so their
        # curves come as soon as they are read, not at the next refresh
        ask_again = (asked_again or 0) + 1 if pending else 0
        if selection == previous:
            return [no_update] * 8 + [ask_again]
        infos = list(headers.values())
        tags = _union([t for info in infos for t in info.get("tags", [])]
                      + [t for r in selection["runs"] for t in embedding_tags(data, r)]) or ["train"]
        tags = _union(tags + list(previous_tags or []))  # keep the current choice valid
        scalar_names = _union(c for info in infos for c in info.get("scalars", []))
        keys = figures.differing_keys([info.get("config", {}) for info in infos]) if len(infos) > 1 else \
            sorted({k for info in infos for k in info.get("config", {})})
        notice = [_error_line(run_id, msg) for run_id, msg in errors.items()]
        if pending:
            notice.append(html.Div(f"reading {len(pending)} run(s) in the background, drawn when read: "
                                   + ", ".join(pending), className="pending-line"))
        # A dropdown drops a value it has no option for: the keys a link groups by stay listed,
        # and the page's first call (no runs picked yet) keeps the options of every run's keys.
        group_keys = _union(keys + list(grouped_by or [])) if infos else no_update
        # (the waterfall's key likewise: the first call's empty options dropped a link's key=)
        return (selection, notice, tags, list(figures.SCORE_COLUMNS) + scalar_names, keys if infos else no_update,
                group_keys,
                valid, valid, ask_again)


def _error_line(run_id, message):
    return html.Div(f"{run_id}: {message}", className="error-line")


# ---- figures --------------------------------------------------------------------


def _figures(dash_app, data):
    @dash_app.callback(
        Output("curves-graph", "figure"),
        Input("selection", "data"), Input("view", "value"), Input("tag", "value"),
        Input("stats", "value"), Input("log-y", "value"), Input("smoothing", "value"), Input("x-axis", "value"),
        Input("group-by", "value"), Input("band", "value"),
    )
    def update_curves(selection, view, tag, stats, log_y, smoothing, x, group_by, band):
        if view != "curves":
            return no_update
        runs = _runs(selection)
        tag = pick_tag(data, runs, tag)
        if group_by and runs:
            return grouped_curves(data, runs, tag, stats or [], group_by, band, log_y="log" in (log_y or []),
                                  smoothing=smoothing or 0.0, x=x or "step")
        frames = {r: curve_frame(data, r, tag, stats or []) for r in runs}
        return figures.curves_figure(frames, stats or [], log_y="log" in (log_y or []),
                                     smoothing=smoothing or 0.0, title=f"Statistics over steps ({tag})",
                                     colors=run_colors(runs), x=x or "step", times=run_times(data, runs, x))

    @dash_app.callback(
        Output("heatmap-graph", "figure"), Output("step-slider", "min"), Output("step-slider", "max"),
        Output("step-slider", "marks"), Output("step-slider", "value"),
        Input("selection", "data"), Input("view", "value"), Input("tag", "value"),
        Input("hist-kind", "value"), Input("heat-scale", "value"), Input("x-axis", "value"),
        State("step-slider", "value"), State("url", "search"),
    )
    def update_distribution(selection, view, tag, kind, scale, x, step, search):
        if view != "distribution":
            return [no_update] * 5
        runs = _runs(selection)
        tag = pick_tag(data, runs, tag)
        views = {r: _safe(lambda r=r: data.histograms(r, tag, kind)) for r in runs}
        heat = {r: v["heat"] for r, v in views.items() if v}
        fig = figures.score_heatmap_figure(
            heat, kind=kind, scale=figures.HEAT_SCALES.get(scale, figures.HEAT_SCALES[figures.DEFAULT_HEAT_SCALE]),
            colors=run_colors(runs), x=x or "step", times=run_times(data, runs, x))
        linked = None
        if step is None:  # the page just opened: the step a link asked for
            step = linked = values_from_query(search).get("step")
        recorded = [v["snap"][0] for v in views.values() if v and len(v["snap"][0])]
        if not recorded:
            return fig, 0, 1, {}, no_update
        lo, hi = int(min(s[0] for s in recorded)), int(max(s[-1] for s in recorded))
        marks = {m: str(m) for m in (lo, (lo + hi) // 2, hi)}
        # Keep the user's step while it is valid; start at the last step.
        value = hi if step is None or not lo <= step <= hi else (step if linked is not None else no_update)
        return fig, lo, hi, marks, value

    @dash_app.callback(
        Output("hist-graph", "figure"),
        Input("selection", "data"), Input("view", "value"), Input("tag", "value"),
        Input("step-slider", "value"), Input("group-by", "value"), Input("band", "value"),
    )
    def update_histograms(selection, view, tag, step, group_by, band):
        if view != "distribution":
            return no_update
        tag = pick_tag(data, _runs(selection), tag)
        hists = {r: histogram_pair(data, r, tag) for r in _runs(selection)}
        step = step if step is not None else _last_step(hists)
        if group_by and hists:
            return grouped_histograms(data, hists, step, tag, group_by, band)
        return figures.histograms_at_step_figure(hists, step, title=f"Score histograms at step {step} ({tag})",
                                                 colors=run_colors(_runs(selection)))

    @dash_app.callback(
        Output("ft-graph", "figure"),
        Input("selection", "data"), Input("view", "value"), Input("ft-run", "value"),
        Input("step-slider", "value"),
    )
    def update_raw_vs_ft(selection, view, run_id, step):
        if view != "distribution":
            return no_update
        runs = _runs(selection)
        run_id = run_id if run_id in runs else (runs[0] if runs else None)
        if run_id is None:
            return figures.empty_figure("Tags of one run", "select runs")
        by_tag = {t: histogram_pair(data, run_id, t) for t in data.light_info(run_id).get("tags", [])}
        step = step if step is not None else _last_step(by_tag)
        return figures.raw_vs_ft_figure(by_tag, step, run_id)

    @dash_app.callback(
        Output("waterfall-graph", "figure"),
        Input("selection", "data"), Input("view", "value"), Input("tag", "value"),
        Input("waterfall-key", "value"), Input("waterfall-stat", "value"), Input("x-axis", "value"),
        Input("group-by", "value"), Input("band", "value"),
    )
    def update_waterfall(selection, view, tag, key, stat, x, group_by, band):
        if view != "waterfall":
            return no_update
        stat = stat or "neg_sample_var"
        tag = pick_tag(data, _runs(selection), tag)
        if group_by and _runs(selection):
            return grouped_waterfall(data, _runs(selection), tag, stat, group_by, band, key=key or "",
                                     grouped_over_time=x not in (None, "step"))
        series, order = {}, {}
        for r in _runs(selection):
            frame = curve_frame(data, r, tag, [stat])
            if stat in frame:
                series[r] = frame[stat]
                order[r] = data.light_info(r).get("config", {}).get(key) if key else None
        return figures.waterfall_figure(series, order, key=key or "", stat=stat, colors=run_colors(_runs(selection)),
                                        x=x or "step", times=run_times(data, list(series), x))

    @dash_app.callback(
        Output("grad-heatmap-graph", "figure"), Output("grad-surface-graph", "figure"),
        Output("grad-total-graph", "figure"),
        Input("selection", "data"), Input("view", "value"), Input("grad-run", "value"), Input("x-axis", "value"),
    )
    def update_gradients(selection, view, run_id, x):
        if view != "gradients":
            return no_update, no_update, no_update
        runs = _runs(selection)
        colors, times = run_colors(runs), run_times(data, runs, x)
        grads = {r: _safe(lambda r=r: data.gradients(r)) for r in runs}
        totals = {r: g["total"] for r, g in grads.items() if g is not None and len(g["total"])}
        run_id = run_id if run_id in runs else (runs[0] if runs else None)
        g = grads.get(run_id)
        if g is None:
            empty = figures.empty_figure("Gradient landscape", "select a run with gradients")
            return empty, empty, figures.total_norm_figure(totals, colors=colors, x=x or "step", times=times)
        return (figures.gradient_heatmap_figure(g["steps"], g["layers"], g["norms"], run_name=run_id,
                                                color=colors.get(run_id), x=x or "step",
                                                times=(times or {}).get(run_id)),
                figures.gradient_surface_figure(g["steps"], g["layers"], g["norms"], run_name=run_id),
                figures.total_norm_figure(totals, colors=colors, x=x or "step", times=times))

    @dash_app.callback(
        Output("rep-curves-graph", "figure"), Output("spectrum-graph", "figure"), Output("plane-graph", "figure"),
        Output("margin-graph", "figure"),
        Input("selection", "data"), Input("view", "value"), Input("tag", "value"), Input("x-axis", "value"),
    )
    def update_representation(selection, view, tag, x):
        if view != "representation":
            return [no_update] * 4
        runs = _runs(selection)
        score_tag = pick_tag(data, runs, tag)
        colors, times = {}, {}  # by trace label ("run" or "run (its tag)"): each run's own colour and times
        frames, spectra = {}, {}
        for r in runs:
            etag = embedding_tag(data, r, tag)
            if etag is None:
                continue
            label = r if etag == tag else f"{r} ({etag})"
            colors[label], times[label] = run_colors(runs)[r], (run_times(data, [r], x) or {}).get(r)
            frames[label] = _safe(lambda r=r, etag=etag: embeddings_frame(data, r, etag))
            spectra[label] = _safe(lambda r=r, etag=etag: spectrum_view(data, r, etag))
        margins = {}
        for r in runs:  # each run's scores under the tag, else under its first tag
            tags = data.light_info(r).get("tags", [])
            run_tag = score_tag if score_tag in tags else (tags[0] if tags else None)
            if run_tag is not None:
                label = r if run_tag == score_tag else f"{r} ({run_tag})"
                colors[label], times[label] = run_colors(runs)[r], (run_times(data, [r], x) or {}).get(r)
                margins[label] = _safe(lambda r=r, t=run_tag: data.scores(r, t), pd.DataFrame())
        x = x or "step"
        return (representation.rank_std_figure(frames, title=f"Effective rank and std of the embeddings ({tag})",
                                               colors=colors, x=x, times=times),
                representation.spectrum_heatmap_figure(spectra, colors=colors, x=x, times=times),
                representation.alignment_uniformity_figure(frames, colors=colors),
                representation.margin_figure(margins, colors=colors, x=x, times=times))

    @dash_app.callback(
        Output("health-table", "children"),
        Input("selection", "data"), Input("view", "value"), Input("tag", "value"),
    )
    def update_health(selection, view, tag):
        if view != "health":
            return no_update
        runs = _runs(selection)
        score_tag = pick_tag(data, runs, tag)
        results = {}
        for r in runs:
            try:
                results[r] = data.health(r, score_tag) + representation_health(data, r, tag)
            except ValueError as err:
                results[r] = str(err)
        return layout.health_table(results)


def pick_tag(data: RunData, runs: list[str], tag):
    """``tag`` if a selected run has it, else the tag the selected runs would default to."""
    tags = _union(t for r in runs for t in data.light_info(r).get("tags", []))
    return tag if tag in tags or not tags else layout.default_tag(tags)


def run_colors(runs) -> dict:
    """Each run's own colour (app.colors): the same in every view and on every page load."""
    return run_colors_module.run_colors(runs)


def grouped_curves(data: RunData, runs, tag, stats, group_by, band, **options):
    """The Curves figure with runs grouped by the config keys ``group_by``: a mean and band per group."""
    band = _band(band)
    curves = {c: _safe(lambda c=c: data.grouped_curves(runs, tag, c, by=group_by, band=band), []) for c in stats}
    names = _union(gc.group.name for column in curves.values() for gc in column)
    title = f"Statistics over steps ({tag}), {len(runs)} runs grouped by {', '.join(group_by)}"
    return figures.grouped_curves_figure(curves, stats, band=band, title=title,
                                         colors=run_colors_module.group_colors(names), **options)


def grouped_waterfall(data: RunData, runs, tag, stat, group_by, band, key="", grouped_over_time=False):
    """The 3D waterfall with one mean line (and band) per group of runs."""
    band = _band(band)
    curves = _safe(lambda: data.grouped_curves(runs, tag, stat, by=group_by, band=band), [])
    order = f"ordered by {key}" if key in group_by else "in order of their values"
    title = figures.with_notes(f"{figures.stat_label(stat)} over steps ({tag}), {len(runs)} runs grouped by "
                               f"{', '.join(group_by)}, {order}",
                               ["groups are drawn over steps, not time"] if grouped_over_time else [])
    return group_figures.grouped_waterfall_figure(
        curves, key=key, stat=stat, band=band, title=title,
        colors=run_colors_module.group_colors([c.group.name for c in curves]))


def grouped_histograms(data: RunData, hists, step, tag, group_by, band):
    """The histogram overlay with each group's mean histogram at ``step`` (and its band)."""
    from scoreviz.groups import group_runs

    band = _band(band)
    configs = {r: data.light_info(r).get("config", {}) for r in hists}
    title = f"Mean score histograms at step {step} ({tag}), {len(hists)} runs grouped by {', '.join(group_by)}"
    try:
        means = group_figures.mean_histograms_at_step(hists, group_runs(configs, group_by), step)
    except ValueError as err:  # ScorevizError: runs of a group binned differently
        return figures.empty_figure(title, str(err))
    return group_figures.grouped_histograms_figure(
        means, step, band=band, title=title,
        colors=run_colors_module.group_colors([group.name for group, _, _ in means]))


def _band(band) -> str:
    from scoreviz.groups import BANDS

    return band if band in BANDS else "std"


def run_times(data: RunData, runs, x) -> dict | None:
    """{run: Run.times()} when the x axis is a time, else None (no file read for steps)."""
    if x not in ("wall", "relative"):
        return None
    return {r: _safe(lambda r=r: data.times(r)) for r in runs}


def curve_frame(data: RunData, run_id: str, tag: str, columns) -> pd.DataFrame:
    """The score columns of ``tag`` plus any requested scalars, indexed by step."""
    scores = _safe(lambda: data.scores(run_id, tag), pd.DataFrame())
    wanted_scalars = [c for c in columns if c not in scores.columns]
    if not wanted_scalars:
        return scores
    scalars = _safe(lambda: data.scalars(run_id), pd.DataFrame())
    extra = scalars[[c for c in wanted_scalars if c in scalars.columns]]
    return extra if scores.empty else scores.join(extra, how="outer")


def embedding_tags(data: RunData, run_id: str) -> list:
    """The run's tags of logged embeddings, from its header (empty for a run that cannot be read)."""
    return list(data.light_info(run_id).get("embedding_tags", []))


def embedding_tag(data: RunData, run_id: str, tag):
    """``tag`` where the run logged embeddings under it, else its first embedding tag (None without any):
    scores and embeddings may be logged under different tags (the trainer's ``ft`` has scores only)."""
    tags = embedding_tags(data, run_id)
    return tag if tag in tags else (tags[0] if tags else None)


def embeddings_frame(data: RunData, run_id: str, tag: str) -> pd.DataFrame:
    """run.embeddings(tag), cached until the run's file changes."""
    return data.memo(run_id, ("embeddings", tag), lambda: _open(data, run_id).embeddings(tag))


def spectrum_view(data: RunData, run_id: str, tag: str):
    """run.spectrum(tag) with its steps averaged into at most figures.MAX_ROWS buckets."""
    def read():
        steps, eigenvalues = _open(data, run_id).spectrum(tag)
        steps, eigenvalues = figures.bucket_rows(steps, eigenvalues.astype("float32"), figures.MAX_ROWS)
        return steps, eigenvalues
    return data.memo(run_id, ("spectrum", tag), read)


def representation_health(data: RunData, run_id: str, tag) -> list:
    """health.representation_health of the run's embeddings under ``tag`` (or its first embedding tag)."""
    etag = embedding_tag(data, run_id, tag)
    if etag is None:
        return health.representation_health(None)
    return data.memo(run_id, ("representation-health", etag),
                     lambda: health.representation_health(embeddings_frame(data, run_id, etag)))


def _open(data: RunData, run_id: str):
    import scoreviz  # loaded already by RunData; imported here so the figure tests need no torch

    return scoreviz.open_run(data.resolve(run_id))


def histogram_pair(data: RunData, run_id: str, tag: str) -> dict:
    """{"pos": snapshots, "neg": snapshots} for the step slider."""
    out = {}
    for kind in ("pos", "neg"):
        view = _safe(lambda kind=kind: data.histograms(run_id, tag, kind))
        if view:
            out[kind] = view["snap"]
    return out


def _last_step(hists: dict) -> int:
    steps = [int(v[0][-1]) for pair in hists.values() for v in pair.values() if len(v[0])]
    return max(steps) if steps else 0


def _runs(selection) -> list[str]:
    return list((selection or {}).get("runs", []))


def _union(items) -> list:
    seen = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _safe(read, default=None):
    """The value of ``read()``, or ``default`` if the run cannot be read.

    A run that breaks between two refreshes must not break the whole page;
    the run table and the notice show its error.
    """
    try:
        return read()
    except (ValueError, OSError, KeyError):
        return default


# ---- export ------------------------------------------------------------------------


def _export(dash_app, name):
    @dash_app.callback(
        Output(f"{name}-download", "data"), Output(f"{name}-export-message", "children"),
        *[Input(f"{name}-export-{fmt}", "n_clicks") for fmt in layout.EXPORT_FORMATS],
        State(f"{name}-graph", "figure"),
        prevent_initial_call=True,
    )
    def export_figure(*args):
        figure = args[-1]
        fmt = str(ctx.triggered_id).rsplit("-", 1)[-1]
        if not figure or not figure.get("data"):
            return no_update, "nothing to export yet"
        if fmt == "html":
            html_text = pio.to_html(figure, include_plotlyjs=True, full_html=True, validate=False)
            return dcc.send_string(html_text, f"scoreviz-{name}.html"), ""
        try:
            image = images.to_image(figure, fmt)
        except Exception as err:  # noqa: BLE001 - the message is shown to the user as is
            return no_update, str(err)
        return dcc.send_bytes(image, f"scoreviz-{name}.{fmt}"), ""
