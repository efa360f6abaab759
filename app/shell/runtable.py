"""The run table: one row per run the filter keeps (a page of them at a time), config columns
that differ marked, the rows of the runs drawn marked and in their colour. A click on a row shows
or hides its run (app/assets/run_table.js puts it into the run picker at once, in the browser:
a click is never lost to a row being drawn again)."""

from __future__ import annotations

import json
import time
from typing import Mapping, Sequence

from dash import Input, Output, State, ctx, html, no_update

from app.plot.axes import fmt
from app.plot.palette import run_colors
from app.shell import runfilter
from app.shell.selection import filterable
from app.shell.unit import differing_keys

# Rows of the run table built at once (the filter and the picker cover every run; the
# table shows one page of the runs the filter keeps): 1,000 rows took 2 to 3.5 s to build.
PAGE_ROWS = 50


def table_data(rows: Sequence[Mapping]) -> dict:
    """Columns, cells and config-difference marks for the run table.

    Each row is ``{"id", "name", "steps", "last_update", "config": {...}}`` or,
    for a run that cannot be read, ``{"id", "name", "error": "..."}``. Config
    keys become columns, those that differ between the readable runs first
    (each group sorted) and marked in ``differs``. A cell is marked (its row's
    ``marks``) when it departs from a value most runs share: the odd ones out.
    Where every run has its own value (seeds, momenta of a sweep) no cell is
    marked, only the column. Returns ``{"columns", "config_columns", "differs",
    "rows"}``; each output row has ``"cells"``, ``"marks"`` (aligned with
    columns) and ``"error"`` (str or None).
    """
    good = [r for r in rows if not r.get("error")]
    keys = sorted({k for r in good for k in (r.get("config") or {})})
    varying = set(differing_keys([r.get("config") or {} for r in good]))
    differs = {k: k in varying for k in keys}
    # Differing keys first: with dozens of config values, what tells runs
    # apart must be visible without scrolling.
    keys = [k for k in keys if differs[k]] + [k for k in keys if not differs[k]]
    usual = {}
    for k in keys:
        if differs[k]:
            counts = {}
            for r in good:
                value = fmt((r.get("config") or {}).get(k, ""))
                counts[value] = counts.get(value, 0) + 1
            top = sorted(counts.values(), reverse=True)
            if top[0] >= 2 and (len(top) == 1 or top[0] > top[1]):
                usual[k] = max(counts, key=counts.get)
    columns = ["run", "steps", "last update"] + keys
    out_rows = []
    for r in rows:
        if r.get("error"):
            out_rows.append({"id": r.get("id"), "error": r["error"], "marks": [False] * len(columns),
                             "cells": [r.get("name", r.get("id")), "", ""] + [""] * len(keys)})
            continue
        config = r.get("config") or {}
        values = [fmt(config.get(k, "")) for k in keys]
        out_rows.append({
            "id": r.get("id"), "error": None,
            "cells": [r.get("name", r.get("id")), fmt(r.get("steps", "")), fmt(r.get("last_update", ""))] + values,
            "marks": [False] * 3 + [k in usual and v != usual[k] for k, v in zip(keys, values)],
        })
    return {"columns": columns, "config_columns": keys, "differs": differs, "rows": out_rows}


def table(data: dict, shown=(), colors=None, clickable: bool = True) -> html.Table:
    """The run table from :func:`table_data`: differing config columns marked in the header, the
    odd values out in the cells; rows of the runs ``shown`` marked, in their colour (``colors``)."""
    colors = colors or {}
    head = html.Tr([html.Th(c, className="differs" if data["differs"].get(c) else None,
                            title="differs between runs" if data["differs"].get(c) else None)
                    for c in data["columns"]])
    body = []
    for row in data["rows"]:
        if row["error"]:
            body.append(html.Tr(className="error-row", **{"data-run": row["id"]}, children=[
                html.Td(row["cells"][0]),
                html.Td(f"error: {row['error']}", colSpan=len(data["columns"]) - 1),
            ]))
            continue
        on = row["id"] in shown
        swatch = html.Span(className="swatch", style={"background": colors.get(row["id"], "transparent")})
        cells = [html.Td([swatch, row["cells"][0]])]
        for value, marked in zip(row["cells"][1:], row["marks"][1:]):
            cells.append(html.Td(value, className="differs" if marked else None))
        hint = ({"title": "click to hide this run" if on else "click to show this run"} if clickable else {})
        body.append(html.Tr(cells, className="run-row shown" if on else "run-row", **hint, **{"data-run": row["id"]}))
    return html.Table(className="runs", children=[html.Thead(head), html.Tbody(body)])


def empty_folder_hint(runs_dir: str, refresh_s: float) -> html.Div:
    """What to do when RUNS_DIR holds no run yet."""
    return html.Div(className="empty-hint", children=[
        html.P(f"No runs below {runs_dir} yet: a run is a folder with a scores.h5 that "
               f"scoreviz.Recorder writes. This page looks for new ones every {refresh_s:g} s."),
        html.Pre(f'rec = scoreviz.Recorder("{runs_dir}/my-run")     # in your training loop\n'
                 f"scoreviz train --run-dir {runs_dir}/moco           # or the bundled MoCo trainer\n"
                 f"scoreviz demo --out {runs_dir}                   # or the demo's two runs"),
    ])


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


def register(dash_app, data, refresh_s: float) -> None:
    """The run table's callback: on every refresh, filter change, selection change or page move."""
    @dash_app.callback(
        Output("run-table", "children"), Output("table-signature", "data"), Output("last-refresh", "children"),
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
        # the runs drawn: those selected the filter keeps (it hides runs, it does not deselect them)
        listed = set(kept)
        shown = [r for r in (picked or []) if r in listed]
        page = table_page(ctx.triggered_id, page, len(kept))
        on_page = kept[page * PAGE_ROWS:(page + 1) * PAGE_ROWS]
        # a row whose header is not read yet shows its name: the background reads it first, and
        # the table asks again within a second (table-refresh) until the page is complete
        rows = {r: data.table_row(r) for r in on_page}
        complete = all(row is not None for row in rows.values())
        data.save_headers(ids)  # the header index for the next start, if it changed
        unread = sum(1 for r in ids if r not in infos and rows.get(r) is None)
        content = table_data([rows.get(r) or _unread_row(r, infos) for r in kept])
        content["rows"] = content["rows"][page * PAGE_ROWS:(page + 1) * PAGE_ROWS]
        new_signature = json.dumps([content, shown, problems, kept, unread], sort_keys=True, default=str)
        stamp = time.strftime("checked %H:%M:%S")
        if unread:
            stamp += f" (reading {unread} of {len(ids)} run headers)"
        pages = max(1, -(-len(kept) // PAGE_ROWS))
        pager = {"display": "flex"} if pages > 1 else {"display": "none"}
        label = f"runs {page * PAGE_ROWS + 1}-{page * PAGE_ROWS + len(on_page)} of {len(kept)}"
        if new_signature == signature:
            return no_update, no_update, stamp, page, pager, label, complete
        if not ids:
            children = empty_folder_hint(str(data.root), refresh_s)
        elif not kept:
            waiting = f"; {unread} run headers still being read" if unread else ""
            children = html.P(f"No run matches the filter {text!r} ({len(ids)} runs in the folder{waiting}); "
                              "clear the filter to see them again.")
        else:
            children = table(content, shown, run_colors([r for r in shown if not (infos.get(r) or {}).get("error")]))
        if problems:
            children = [html.Div(p, className="error-line") for p in problems] + [children]
        return children, new_signature, stamp, page, pager, label, complete
