"""`scoreviz export RUN_DIR... --out report.html`: one standalone HTML report, no server needed.

The report is the app, offline: each view's report section (app.views: ``View.report``), drawn by
the same functions from the same state the app would show for these runs (the shell's state logic
resolves the defaults: the tag, the waterfall's key, the statistics), with the same health checks
and each run in the same colour. Grouped (``--group-by KEY``), the views that draw groups draw
them, and RUN_DIR may be a sweep's folder (every run below it). Reads go through app.runs, as
the server's do; a curve of a group is read thinned, a histogram at the last step as two rows, so
a sweep of hundreds of long runs reads quickly.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from app.report.page import page_html, write_atomic
from scoreviz.errors import ScorevizError

# Which option of `scoreviz export` sets which URL key, for the messages.
OPTIONS = {"group": "--group-by", "band": "--band", "stats": "--stat", "wstat": "--waterfall-stat"}


def expand_runs(run_dirs) -> list[Path]:
    """Each RUN_DIR as given when it is a run (its scores.h5 names its folder), else every run below
    it (a sweep's folder), in order, each once. ScorevizError for a path that is neither."""
    from scoreviz.run import find_runs
    from scoreviz.store import FILE_NAME

    out = []
    for item in map(Path, run_dirs):
        if item.name == FILE_NAME and item.is_file():
            item = item.parent
        if not item.is_dir():
            raise ScorevizError(f"{item}: no such run folder")
        found = [item] if (item / FILE_NAME).exists() else find_runs(item)
        if not found:
            raise ScorevizError(f"{item}: no run below it (a run is a folder with a scores.h5)")
        out += [run for run in found if run not in out]
    return out


def open_runs(run_dirs):
    """A RunData of the runs of ``run_dirs`` (no background, no header index), every run readable:
    ScorevizError naming the first that is not."""
    from app.runs import RunData

    folders = expand_runs(run_dirs)
    data = RunData(folders, warm=False, index=False)
    ids = data.run_ids()
    for run_id in tqdm(ids, desc="export: reading headers", unit="run", disable=len(ids) < 20):
        error = data.light_info(run_id).get("error")
        if error:
            raise ScorevizError(f"{data.resolve(run_id)}: {error}")
    return data, ids


def _check(context, group_by, stats) -> None:
    """ScorevizError for a --group-by key no run has and a --stat no run recorded."""
    known = sorted({k for config in context.configs().values() for k in config})
    for key in group_by:
        if key not in known:
            raise ScorevizError(f"--group-by {key}: no run has this config key "
                                f"(their keys: {', '.join(known) or 'none'})")
    from app.plot.axes import SCORE_COLUMNS

    for stat in stats:
        if stat not in SCORE_COLUMNS and stat not in context.union("scalars"):
            raise ScorevizError(f"--stat {stat}: no run recorded it (a score column such as neg_mean, or the name "
                                "of a logged scalar)")


def sections(data, runs, views=None, group_by=(), band=None, stats=(), waterfall_stat=None) -> list:
    """The report's (heading, figure or table) pairs: the run table, then each view's section (for
    every tag where the view draws one tag at a time), for the state the app shows for ``runs``
    with ``group_by``, ``band``, ``stats`` and ``waterfall_stat`` set."""
    from app.shell import runtable, url
    from app.shell.state import PageState
    from app.views import VIEWS

    views = tuple(views or VIEWS)
    logic = PageState(data, views, wait=0)
    explicit = {"runs": list(runs), "group": list(group_by) or None, "band": band, "stats": list(stats) or None,
                "wstat": waterfall_stat}
    answer = logic.update(url.encode(explicit, logic.controls), {}, {}, True)
    _check(answer["context"], group_by, list(stats) + ([waterfall_stat] if waterfall_stat else []))
    if answer["dropped"]:
        raise ScorevizError("export: " + "; ".join(answer["dropped"]))
    values, drawn, colors = answer["values"], answer["runs"], answer["colors"]
    table = runtable.table_data([data.info(r) for r in drawn])
    out = [("Runs", runtable.table(table, shown=drawn, colors=colors, clickable=False))]
    tags = answer["context"].union("tags")
    for view in tqdm(views, desc="export: drawing", unit="view", disable=len(drawn) < 20):
        if view.report is None:
            continue
        for tag in (tags if view.report_tags == "each" else []) or [values["tag"]]:
            state = {**values, "runs": drawn, "colors": colors, "tag": tag}
            out += [(section.heading, section.body) for section in view.report(state, data)]
    return out


def write_report(run_dirs, out_path, force: bool = False, group_by=(), band: str | None = None, stats=(),
                 waterfall_stat: str | None = None) -> Path:
    """Write one standalone HTML report of ``run_dirs`` (runs, or folders of runs) to ``out_path``;
    returns the path. Grouped by the config keys ``group_by`` when given.

    Raises scoreviz.ScorevizError naming the run that cannot be read, a key or statistic no run
    has, or saying what is wrong with ``out_path`` (a folder, in a missing folder, unwritable, or
    existing without ``force``).
    """
    if not run_dirs:
        raise ScorevizError("export: give at least one run folder")
    from scoreviz.bridges.export import output_file

    out = output_file(out_path, force, reads=run_dirs)  # before reading: a bad path fails at once
    data, runs = open_runs(run_dirs)
    parts = sections(data, runs, group_by=group_by, band=band, stats=stats, waterfall_stat=waterfall_stat)
    if group_by:
        from app.shell.controls import groups_of

        groups = groups_of({"runs": runs, "group": group_by}, data)
        folded = groups[-1].folded if groups else 0  # the groups past the most drawn, drawn as one
        title, intro = "scoreviz sweep report", (
            f"{len(runs)} run(s) in {len(groups) - 1 + folded if folded else len(groups)} group(s) by "
            f"{', '.join(group_by)}" + (f", the last {folded} drawn as one, '{groups[-1].name}'" if folded else ""))
    else:
        title, intro = "scoreviz report", f"{len(runs)} run(s)"
    write_atomic(out, page_html(title, intro, parts))
    return out
