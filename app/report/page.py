"""The report's file: one self-contained HTML page (plotly.js inlined once, no CDN), written
atomically to a path checked first."""

from __future__ import annotations

import html
import os
import time
from pathlib import Path

from app.report.html import to_html
from scoreviz.errors import ScorevizError

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1f2933; }
table.runs { border-collapse: collapse; font-size: 12px; }
table.runs th, table.runs td { border-bottom: 1px solid #e4e7eb; padding: 3px 8px; text-align: left;
  vertical-align: top; }
table.runs:not(.health) th, table.runs:not(.health) td { white-space: nowrap; }
.scroll { overflow-x: auto; }
.differs { background: #fff3c4; font-weight: 600; }
td.flagged { color: #ab091e; font-weight: 600; } td.notice { color: #8d5a00; } td.ok { color: #27ab83; } td.unchecked { color: #9aa5b1; }
tr.error-row td { color: #ab091e; background: #ffeeee; }
.note, .thresholds { color: #52606d; font-size: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
section { margin: 24px 0; }
"""


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


def page_html(title: str, intro: str, sections) -> str:
    """One self-contained page of ``sections`` ((heading, plotly figure or dash.html component)
    pairs), with plotly.js inlined once (from the plotly package: no CDN, opens offline)."""
    from plotly.offline import get_plotlyjs

    parts = []
    for heading, body in sections:
        if hasattr(body, "to_html") and hasattr(body, "data"):  # a plotly figure
            body = body.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        else:  # a table, as wide as it needs, scrolled sideways (as the app's run table is)
            body = f'<div class="scroll">{to_html(body)}</div>'
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{body}</section>")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(intro)}, written {time.strftime("%Y-%m-%d %H:%M:%S")}</p>
{''.join(parts)}
</body></html>
"""
