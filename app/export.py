"""One standalone HTML report of some runs: the main figures, no server needed.

plotly.js is inlined once at the top, so the file opens offline in any
browser and can be mailed or attached to a ticket as it is.
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path

import numpy as np
from plotly.offline import get_plotlyjs

from app import figures, layout
from scoreviz import health
from scoreviz.errors import ScorevizError


def _unique_names(runs) -> list[str]:
    """Run folder names, with the parent added where two runs share a name."""
    names = [r.name for r in runs]
    return [f"{r.path.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]


def _table_html(table: dict) -> str:
    head = "".join(f'<th class="{"differs" if table["differs"].get(c) else ""}">{html.escape(c)}</th>'
                   for c in table["columns"])
    rows = []
    for row in table["rows"]:
        cells = "".join(
            f'<td class="{"differs" if i >= 3 and table["differs"].get(table["columns"][i]) else ""}">'
            f"{html.escape(str(v))}</td>" for i, v in enumerate(row["cells"]))
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _health_html(results: dict) -> str:
    rows = []
    for name, flags in results.items():
        cells = "".join(
            f'<td class="flagged">from step {f.step}: {html.escape(f.detail)}</td>' if f.fired
            else '<td class="ok">ok</td>' for f in flags)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return ('<table class="runs"><thead><tr><th>run</th><th>collapse</th><th>instability</th>'
            f'<th>non-finite</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="note">Thresholds: {html.escape(health.THRESHOLDS_TEXT)}</p>')


def report_figures(run_dirs) -> tuple[list[tuple[str, object]], str, str]:
    """The report's (title, figure) pairs and its run-table and health HTML.

    Runs need not share tags: the score figures come once per tag, each with
    the runs that recorded it. Raises ScorevizError naming a run that cannot be read.
    """
    import scoreviz

    runs = [scoreviz.open_run(d) for d in run_dirs]
    names = _unique_names(runs)
    by_name = dict(zip(names, runs))
    all_tags = list(dict.fromkeys(t for r in runs for t in r.tags))

    rows = []
    for name, run in by_name.items():
        summary = run.summary()
        rows.append({"id": name, "name": name, "steps": summary.get("steps"),
                     "last_update": time.strftime("%Y-%m-%d %H:%M:%S",
                                                  time.localtime(run.file.stat().st_mtime)),
                     "config": run.config})
    table = figures.run_table(rows)
    differing = [k for k, d in table["differs"].items() if d]

    scores = {tag: {n: r.scores(tag) for n, r in by_name.items() if tag in r.tags} for tag in all_tags}
    out = []
    for tag in all_tags:
        hists = {n: {k: r.histograms(tag, k) for k in ("pos", "neg")}
                 for n, r in by_name.items() if tag in r.tags}
        out.append((f"Statistics over steps ({tag})", figures.curves_figure(
            scores[tag], figures.DEFAULT_STATS, title=f"Statistics over steps ({tag})")))
        out.append((f"Negative score distribution ({tag})", figures.score_heatmap_figure(
            {n: h["neg"] for n, h in hists.items()}, kind="neg")))
        last = max((int(h["neg"][0][-1]) for h in hists.values() if len(h["neg"][0])), default=0)
        out.append((f"Histograms at the last step ({tag})", figures.histograms_at_step_figure(hists, last)))
        if len(scores[tag]) > 1:
            key = differing[0] if differing else ""
            order = {n: by_name[n].config.get(key) for n in scores[tag]} if key else {}
            out.append((f"3D waterfall ({tag})", figures.waterfall_figure(
                {n: s["neg_sample_var"] for n, s in scores[tag].items() if "neg_sample_var" in s},
                order, key=key)))
    if not all_tags:
        out.append(("Statistics over steps", figures.empty_figure("Statistics over steps",
                                                                  "no scores recorded")))
    scalars = {n: r.scalars() for n, r in by_name.items()}
    totals = {n: r.total_gradient_norm() for n, r in by_name.items()}
    out.append(("Total gradient norm", figures.total_norm_figure(totals)))
    for name, run in by_name.items():
        grads = run.gradients()
        if grads.shape[1]:
            steps, layers, norms = figures.reduce_gradients(grads)
            out.append((f"Gradients: {name}", figures.gradient_heatmap_figure(
                steps, layers, norms.astype(np.float32), run_name=name)))
    results = {}
    for name, run in by_name.items():  # each run checked under its main tag
        tag = layout.default_tag(run.tags)
        label = f"{name} ({tag})" if tag in run.tags else name
        results[label] = health.run_health(scores.get(tag, {}).get(name), scalars[name], totals[name])
    return out, _table_html(table), _health_html(results)


def output_path(out, force: bool = False) -> Path:
    """``out`` checked as a file to write: ScorevizError if it is a folder, its folder is
    missing, or it exists and ``force`` is not given."""
    out = Path(out)
    if out.is_dir():
        raise ScorevizError(f"--out {out}: is a folder; give a file name, e.g. {out / 'report.html'}")
    if not out.parent.exists():
        raise ScorevizError(f"--out {out}: the folder {out.parent} does not exist")
    if not out.parent.is_dir():
        raise ScorevizError(f"--out {out}: {out.parent} is not a folder")
    if (out.exists() or out.is_symlink()) and not force:
        raise ScorevizError(f"--out {out}: exists; add --force to overwrite it")
    return out


def write_atomic(out: Path, text: str) -> None:
    """Write ``text`` to ``out`` through a temporary file beside it: a failed write
    leaves the old file (if any) untouched. ScorevizError naming ``out`` on failure."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, out)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise ScorevizError(f"--out {out}: cannot write it ({err.strerror or err})") from None


def write_report(run_dirs, out_path, force: bool = False) -> Path:
    """Write one standalone HTML report of ``run_dirs`` to ``out_path``; returns the path.

    Raises scoreviz.ScorevizError naming the run that cannot be read, or saying
    what is wrong with ``out_path`` (a folder, in a missing folder, unwritable,
    or existing without ``force``).
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ScorevizError("export: give at least one run folder")
    out = output_path(out_path, force)
    figs, table_html, health_html = report_figures(run_dirs)
    page = page_html("scoreviz report", f"{len(run_dirs)} run(s)",
                     [("Runs", table_html), ("Health", health_html)], figs)
    write_atomic(out, page)
    return out


def page_html(title: str, intro: str, tables, figs) -> str:
    """One self-contained page: ``tables`` ((heading, HTML) pairs), then ``figs`` ((heading,
    figure) pairs), with plotly.js inlined once (from the plotly package: no CDN, opens offline)."""
    parts = [f"<h2>{html.escape(heading)}</h2>{body}" for heading, body in tables]
    for heading, fig in figs:
        body = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{body}</section>")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #1f2933; }}
table.runs {{ border-collapse: collapse; font-size: 12px; }}
table.runs th, table.runs td {{ border-bottom: 1px solid #e4e7eb; padding: 3px 8px; text-align: left; }}
.differs {{ background: #fff3c4; font-weight: 600; }}
.flagged {{ color: #ab091e; font-weight: 600; }} .ok {{ color: #27ab83; }} .note {{ color: #52606d; font-size: 12px; }}
.swatch {{ display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(intro)}, written {time.strftime("%Y-%m-%d %H:%M:%S")}</p>
{''.join(parts)}
</body></html>
"""
