"""One standalone HTML report of some runs: the main figures, no server needed.

plotly.js is inlined once at the top, so the file opens offline in any
browser and can be mailed or attached to a ticket as it is.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np
from plotly.offline import get_plotlyjs

from app import figures, health


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
    """The report's (title, figure) pairs and its run-table and health HTML."""
    import scoreviz

    runs = [scoreviz.open_run(d) for d in run_dirs]
    names = _unique_names(runs)
    tags = [t for t in runs[0].tags if all(t in r.tags for r in runs)] or runs[0].tags
    tag = "train" if "train" in tags else (tags[0] if tags else None)

    rows = []
    for name, run in zip(names, runs):
        summary = run.summary()
        rows.append({"id": name, "name": name, "steps": summary.get("steps"),
                     "last_update": time.strftime("%Y-%m-%d %H:%M:%S",
                                                  time.localtime(run.file.stat().st_mtime)),
                     "config": run.config})
    table = figures.run_table(rows)

    scores = {n: r.scores(tag) for n, r in zip(names, runs)} if tag else {}
    scalars = {n: r.scalars() for n, r in zip(names, runs)}
    totals = {n: r.total_gradient_norm() for n, r in zip(names, runs)}
    hists = {n: {k: r.histograms(tag, k) for k in ("pos", "neg")} for n, r in zip(names, runs)} if tag else {}

    out = [("Statistics over steps", figures.curves_figure(scores, figures.DEFAULT_STATS,
                                                           title=f"Statistics over steps ({tag})"))]
    out.append(("Negative score distribution", figures.score_heatmap_figure(
        {n: h["neg"] for n, h in hists.items()}, kind="neg")))
    last = max((int(h["neg"][0][-1]) for h in hists.values() if len(h["neg"][0])), default=0)
    out.append(("Histograms at the last step", figures.histograms_at_step_figure(hists, last)))
    differing = [k for k, d in table["differs"].items() if d]
    if len(runs) > 1:
        key = differing[0] if differing else ""
        order = {n: r.config.get(key) for n, r in zip(names, runs)} if key else {}
        out.append(("3D waterfall", figures.waterfall_figure(
            {n: s["neg_sample_var"] for n, s in scores.items() if "neg_sample_var" in s},
            order, key=key)))
    out.append(("Total gradient norm", figures.total_norm_figure(totals)))
    for name, run in zip(names, runs):
        grads = run.gradients()
        if grads.shape[1]:
            steps, layers, norms = figures.reduce_gradients(grads)
            out.append((f"Gradients: {name}", figures.gradient_heatmap_figure(
                steps, layers, norms.astype(np.float32), run_name=name)))
    results = {n: health.run_health(scores.get(n), scalars[n], totals[n]) for n in names}
    return out, _table_html(table), _health_html(results)


def write_report(run_dirs, out_path) -> Path:
    """Write one standalone HTML report of ``run_dirs`` to ``out_path``; returns the path.

    Raises scoreviz.ScorevizError naming the run that cannot be read.
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("write_report: give at least one run folder")
    figs, table_html, health_html = report_figures(run_dirs)
    parts = []
    for title, fig in figs:
        body = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        parts.append(f"<section><h2>{html.escape(title)}</h2>{body}</section>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>scoreviz report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #1f2933; }}
table.runs {{ border-collapse: collapse; font-size: 12px; }}
table.runs th, table.runs td {{ border-bottom: 1px solid #e4e7eb; padding: 3px 8px; text-align: left; }}
.differs {{ background: #fff3c4; font-weight: 600; }}
.flagged {{ color: #ab091e; font-weight: 600; }} .ok {{ color: #27ab83; }} .note {{ color: #52606d; font-size: 12px; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>scoreviz report</h1>
<p>{len(run_dirs)} run(s), written {time.strftime("%Y-%m-%d %H:%M:%S")}</p>
<h2>Runs</h2>{table_html}
<h2>Health</h2>{health_html}
{''.join(parts)}
</body></html>
"""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
