"""How large the biggest real callback request is, against the server's body limit.

    python benchmarks/request_sizes.py

The browser's largest request is a figure export: the figure on screen goes
back to the server inside the callback body. Figures are bounded on the server
(app.plot.reduce: MAX_ROWS, MAX_POINTS, MAX_CELLS), so their size depends only on the
number of runs and layers. This builds each kind of figure from synthetic data
at sizes beyond real use (1000 layers, 50 runs) and prints the body each export
would post, next to app.server.guard.MAX_BODY. No files, no server: figure functions only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.plot.axes import DEFAULT_STATS  # noqa: E402
from app.plot.lines import curves_figure  # noqa: E402
from app.plot.reduce import reduce_gradients  # noqa: E402
from app.server.guard import MAX_BODY  # noqa: E402
from app.views.distribution.figures import score_heatmap_figure  # noqa: E402
from app.views.gradients.figures import gradient_heatmap_figure, gradient_surface_figure  # noqa: E402

STEPS, BINS = 100_000, 100


def export_body(figure) -> int:
    """Bytes of the export callback body carrying ``figure`` (as Dash serialises it)."""
    body = {"output": "..curves-download.data...curves-export-message.children..",
            "outputs": [{"id": "curves-download", "property": "data"},
                        {"id": "curves-export-message", "property": "children"}],
            "inputs": [{"id": f"curves-export-{f}", "property": "n_clicks", "value": 1}
                       for f in ("html", "png", "svg")],
            "state": [{"id": "curves-graph", "property": "figure",
                       "value": json.loads(pio.to_json(figure, validate=False))}],
            "changedPropIds": ["curves-export-html.n_clicks"]}
    return len(json.dumps(body).encode())


def main():
    rng = np.random.default_rng(0)
    steps = np.arange(STEPS)
    rows = []
    for layers in (150, 1000):
        grads = pd.DataFrame(rng.random((STEPS // 50, layers), dtype=np.float32),
                             index=steps[::50], columns=[f"layer{i}.weight" for i in range(layers)])
        s, names, norms = reduce_gradients(grads)
        rows.append((f"gradient heatmap, {layers} layers", export_body(
            gradient_heatmap_figure(s, names, norms))))
        rows.append((f"gradient surface, {layers} layers", export_body(
            gradient_surface_figure(s, names, norms))))
    for runs in (8, 50):
        frame = pd.DataFrame({c: rng.random(STEPS) for c in DEFAULT_STATS}, index=steps)
        rows.append((f"curves, {runs} runs x 3 statistics", export_body(
            curves_figure({f"run{i}": frame for i in range(runs)}))))
        hist = (steps, np.linspace(-1, 1, BINS + 1), rng.integers(0, 1000, (STEPS, BINS)).astype(np.uint32))
        rows.append((f"score heatmap, {runs} runs", export_body(
            score_heatmap_figure({f"run{i}": hist for i in range(runs)}))))
    print("| request (export of) | body bytes | share of MAX_BODY |")
    print("|---|---:|---:|")
    for name, size in rows:
        print(f"| {name} | {size:,} | {size / MAX_BODY:.1%} |")
    print(f"\nMAX_BODY = {MAX_BODY:,} bytes; largest body above: {max(s for _, s in rows):,} bytes")


if __name__ == "__main__":
    main()
