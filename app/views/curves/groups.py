"""The table of groups of the curves view's grouped report: each group's config values, run
count, and each statistic's final value as the mean over its runs with the band (pure)."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
from dash import html

from app.plot.axes import stat_label
from app.plot.palette import group_colors
from app.shell.controls import band_of, groups_of, tag_of
from app.shell.unit import Section
from scoreviz import groups as grouping

# How the table of groups writes a band.
BAND_TEXT = {"std": "\u00b1 std", "sem": "\u00b1 standard error", "minmax": "[min, max]"}


def final_values(series: Mapping[str, pd.Series | None]) -> dict:
    """Each run's last recorded (non-NaN) value of a statistic; runs without one left out."""
    out = {}
    for run, values in series.items():
        values = values.dropna() if values is not None else None
        if values is not None and len(values):
            out[run] = float(values.sort_index().iloc[-1])
    return out


def group_table(groups: Sequence, finals: Mapping[str, Mapping[str, float]], band: str = "std") -> dict:
    """Plain rows for the table of groups: the ``by`` values, the run count, and for each statistic
    (``finals``: statistic -> {run: its final value}) the mean over the group's runs with its band
    (as scoreviz.groups.summarize computes it) and how many runs have a value.

    Returns ``{"columns": [...], "rows": [[cells...]], "values": {group name: {stat: summary}}}``."""
    by = list(groups[0].by) if groups else []
    columns = by + ["runs"] + list(finals)
    rows, values = [], {}
    for group in groups:
        cells = group.values + [str(len(group.runs))]
        values[group.name] = {}
        for stat, by_run in finals.items():
            present = {r: [by_run[r]] for r in group.runs if r in by_run}
            if not present:
                cells.append("-")
                continue
            summary = grouping.summarize(pd.DataFrame(present), band).iloc[0]
            values[group.name][stat] = summary
            cells.append(_mean_and_band(summary, band, len(group.runs)))
        rows.append(cells)
    return {"columns": columns, "rows": rows, "values": values}


def _mean_and_band(summary, band: str, size: int) -> str:
    text = f"{summary['mean']:.4g}"
    if band == "minmax":
        text += f" [{summary['lower']:.4g}, {summary['upper']:.4g}]"
    else:
        text += f" \u00b1 {summary['upper'] - summary['mean']:.2g}"
    count = int(summary["count"])
    return text if count == size else f"{text} ({count} of {size} runs)"

def section(state: dict, data) -> Section:
    """The table of groups of ``state``'s runs (grouped by ``state["group"]``), as a report Section."""
    tag, band, runs = tag_of(state, data), band_of(state), state["runs"]
    group_list = groups_of(state, data)
    finals = {stat: final_values({r: data.safe(lambda r=r: data.statistic(r, tag, stat)) for r in runs})
              for stat in state["stats"] or []}
    content = group_table(group_list, finals, band=band)
    colors = group_colors(group_list)
    by = list(group_list[0].by) if group_list else []
    head = [html.Th(stat_label(c) if i > len(by) else c) for i, c in enumerate(content["columns"])]
    rows = []
    for group, cells in zip(group_list, content["rows"]):
        swatch = html.Span(className="swatch", style={"background": colors[group.name]})
        rows.append(html.Tr([html.Td([swatch, cells[0]] if i == 0 else cells[i]) for i in range(len(cells))]))
    body = html.Table(className="runs groups", children=[html.Thead(html.Tr(head)), html.Tbody(rows)])
    return Section(f"Groups ({tag}): each run's final value, mean over the group {BAND_TEXT[band]}", body)
