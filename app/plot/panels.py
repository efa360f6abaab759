"""One panel per run, stacked with a shared x axis and titled in the run's colour: the score
heatmaps and the spectra draw one run per panel."""

from __future__ import annotations

from plotly.subplots import make_subplots

from app.plot.axes import color_titles, label_every_x_axis, x_axis


def run_panels(reduced: dict, x, times, colors):
    """The subplots for ``reduced``, which maps a run to a tuple whose first item is its steps;
    runs without the x axis asked for (no wall times) are left out. Returns (figure or None when
    no run is left, the XAxis, the runs kept)."""
    axis = x_axis({name: r[0] for name, r in reduced.items()}, x, times)
    reduced = {name: r for name, r in reduced.items() if name in axis.values}
    if not reduced:
        return None, axis, reduced
    n = len(reduced)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=min(0.14, 0.36 / n) if n > 1 else 0,
                        subplot_titles=list(reduced))
    color_titles(fig, list(reduced), colors)
    label_every_x_axis(fig)
    return fig, axis, reduced
