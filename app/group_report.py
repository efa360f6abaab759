"""`scoreviz export RUNS... --group-by KEY`: one self-contained HTML report of a sweep's groups.

The runs are grouped by config keys as the app groups them (scoreviz.groups): for each
tag, the grouped curves, the grouped waterfall and each group's mean histograms at the
last step, and a table of groups (their values, run count, and each statistic's final
value as the mean over the group's runs with its band). Each curve is read thinned to
figures.MAX_POINTS steps (HDF5 hyperslabs, the last step always included), each
histogram as its last row only, so a sweep of hundreds of long runs reads quickly.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

from tqdm.auto import tqdm

from app import colors, figures, group_figures
from app.export import _table_html, output_path, page_html, write_atomic
from scoreviz import groups as grouping
from scoreviz.errors import ScorevizError


# How the table of groups writes a band.
BAND_TEXT = {"std": "\u00b1 std", "sem": "\u00b1 standard error", "minmax": "[min, max]"}


def expand_runs(run_dirs) -> list[Path]:
    """Each RUN_DIR as given when it is a run (or anything not a folder: open_run says what is wrong
    with it), else every run below it (a sweep's folder), in order, each once."""
    from scoreviz.run import find_runs
    from scoreviz.store import FILE_NAME

    out = []
    for item in map(Path, run_dirs):
        found = find_runs(item) if item.is_dir() and not (item / FILE_NAME).exists() else []
        for run in found or [item]:
            if run not in out:
                out.append(run)
    return out


def open_sweep(run_dirs):
    """``(names, runs)``: every run opened (config and header only), names unique. ScorevizError
    naming a run that cannot be opened."""
    import scoreviz

    from app.export import _unique_names

    runs = [scoreviz.open_run(d) for d in tqdm(run_dirs, desc="export: opening", unit="run",
                                               disable=len(run_dirs) < 20)]
    return _unique_names(runs), runs


def read_sweep(names, runs, stats, histograms: bool = True):
    """Read every run (with a progress bar on stderr): ``(series, hists)`` where ``series[tag][stat]``
    maps a run name to its thinned curve (None without it) and ``hists[tag]`` to its first and
    last histogram rows."""
    series, hists = {}, {}
    for name, run in tqdm(list(zip(names, runs)), desc="export: reading", unit="run", disable=len(runs) < 5):
        scalars = None
        for tag in run.tags:
            scores = run.scores(tag, max_points=figures.MAX_POINTS)
            for stat in stats:
                if stat in scores.columns:
                    values = scores[stat]
                else:
                    if scalars is None:
                        scalars = run.scalars(max_points=figures.MAX_POINTS)
                    values = scalars[stat] if stat in scalars.columns else None
                series.setdefault(tag, {}).setdefault(stat, {})[name] = values
            if histograms:
                hists.setdefault(tag, {})[name] = {kind: run.histograms(tag, kind, max_points=2)
                                                   for kind in ("pos", "neg")}
    return series, hists


def check_keys(configs: dict, by) -> None:
    """ScorevizError for a --group-by key no run has."""
    known = sorted({k for config in configs.values() for k in (config or {})})
    for key in by:
        if not any(key in (config or {}) for config in configs.values()):
            raise ScorevizError(f"--group-by {key}: no run has this config key (their keys: "
                                f"{', '.join(known) or 'none'})")


def check_stats(stats, series) -> None:
    """ScorevizError for a --stat no run recorded."""
    for stat in stats:
        if not any(s is not None and s.notna().any() for tag in series.values()
                   for s in tag.get(stat, {}).values()):
            raise ScorevizError(f"--stat {stat}: no run recorded it (a score column such as neg_mean, "
                                "or the name of a logged scalar)")


def group_report_figures(names, runs, series, hists, by, band="std", stats=figures.DEFAULT_STATS,
                         waterfall_stat="neg_sample_var"):
    """The report's (heading, figure) pairs and its table of groups, per tag."""
    configs = {name: dict(run.config or {}) for name, run in zip(names, runs)}
    group_list = grouping.group_runs(configs, by)
    palette = colors.group_colors([g.name for g in group_list])
    figs, tables = [], []
    label = ", ".join(by)
    for tag in series:
        curves = {stat: grouping.group_curves(series[tag].get(stat, {}), group_list, band=band,
                                              max_points=figures.MAX_POINTS)
                  for stat in dict.fromkeys(list(stats) + [waterfall_stat])}
        runs_in_tag = len({r for stat in stats for r, s in series[tag].get(stat, {}).items() if s is not None})
        figs.append((f"Statistics over steps ({tag})", figures.grouped_curves_figure(
            curves, stats, band=band, colors=palette,
            title=f"Statistics over steps ({tag}), {runs_in_tag} runs grouped by {label}")))
        wstat = waterfall_stat
        figs.append((f"3D waterfall ({tag})", group_figures.grouped_waterfall_figure(
            curves[wstat], key=by[0] if by else "", stat=wstat, band=band, colors=palette,
            title=f"{figures.stat_label(wstat)} over steps ({tag}), groups by {label}")))
        if hists.get(tag):
            last = max((int(h[0][-1]) for pair in hists[tag].values() for h in pair.values() if len(h[0])),
                       default=0)
            means = group_figures.mean_histograms_at_step(hists[tag], group_list, last)
            figs.append((f"Mean histograms at the last step ({tag})", group_figures.grouped_histograms_figure(
                means, last, band=band, colors=palette,
                title=f"Mean score histograms per group at each run's last step ({tag})")))
        finals = {stat: group_figures.final_values(series[tag].get(stat, {})) for stat in stats}
        table = group_figures.group_table(group_list, finals, band=band)
        tables.append((f"Groups ({tag}): each run's final value, mean over the group {BAND_TEXT[band]}",
                       _groups_html(table, group_list, palette)))
    return figs, tables


def _groups_html(table: dict, group_list, palette) -> str:
    head = "".join(f"<th>{html.escape(figures.stat_label(c) if i > len(group_list[0].by) else c)}</th>"
                   for i, c in enumerate(table["columns"]))
    rows = []
    for group, cells in zip(group_list, table["rows"]):
        swatch = f'<span class="swatch" style="background:{palette[group.name]}"></span>'
        tds = "".join(f"<td>{swatch if i == 0 else ''}{html.escape(str(v))}</td>" for i, v in enumerate(cells))
        rows.append(f"<tr>{tds}</tr>")
    return f'<table class="runs groups"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def write_group_report(run_dirs, out_path, by, band: str = "std", stats=None, force: bool = False,
                       waterfall_stat: str = "neg_sample_var") -> Path:
    """Write the grouped report of ``run_dirs`` (runs, or folders of runs) grouped by config keys
    ``by`` to ``out_path``; returns the path. ScorevizError for no runs, a key no run has, a
    statistic none recorded, a band not known, a run that cannot be read or a path not writable."""
    if band not in grouping.BANDS:
        raise ScorevizError(f"--band {band}: must be one of {', '.join(grouping.BANDS)}")
    stats = list(stats or figures.DEFAULT_STATS)
    by = list(by)
    out = output_path(out_path, force)  # before reading: a bad path fails at once
    run_dirs = expand_runs(run_dirs)
    if not run_dirs:
        raise ScorevizError("export: give at least one run folder")
    names, runs = open_sweep(run_dirs)
    configs = {name: run.config for name, run in zip(names, runs)}
    check_keys(configs, by)
    series, hists = read_sweep(names, runs, list(dict.fromkeys(stats + [waterfall_stat])))
    check_stats(stats, series)
    figs, tables = group_report_figures(names, runs, series, hists, by, band, stats, waterfall_stat)
    run_rows = [{"id": n, "name": n, "steps": r.summary().get("steps"), "config": r.config,
                 "last_update": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.file.stat().st_mtime))}
                for n, r in zip(names, runs)]
    table = figures.run_table(run_rows)
    groups_count = len(grouping.group_runs(configs, by))
    page = page_html("scoreviz sweep report", f"{len(runs)} run(s) in {groups_count} group(s) by {', '.join(by)}",
                     tables + [("Runs", _table_html(table))], figs)
    write_atomic(out, page)
    return out

