"""Representation: from Recorder.log_embeddings, first the label-free signals that predict accuracy
best (docs/health_validation.md), then each run's effective rank and std, its spectrum, its path in
the alignment-uniformity plane, and the margin and hard negatives of its scores."""

from __future__ import annotations

from app.plot.axes import over
from app.shell import components
from app.shell.controls import tag_of
from app.shell.unit import Panel, Section, View
from app.views.representation import figures


def read(state: dict, data) -> dict:
    """What the view draws, by trace label ("run", or "run (its tag)" where a run's embeddings or
    scores are under another tag): embeddings frames, spectra, score frames, colours and times."""
    runs, tag, x = state["runs"], tag_of(state, data), state["x"] or "step"
    out = {"frames": {}, "spectra": {}, "margins": {}, "colors": {}, "times": {}}
    times = data.run_times(runs, x) or {}
    for r in runs:
        etag = data.embedding_tag(r, tag)
        if etag is not None:
            label = r if etag == tag else f"{r} ({etag})"
            out["colors"][label], out["times"][label] = state["colors"].get(r), times.get(r)
            out["frames"][label] = data.safe(lambda r=r, etag=etag: data.embeddings(r, etag))
            out["spectra"][label] = data.safe(lambda r=r, etag=etag: data.spectrum(r, etag))
        tags = data.light_info(r).get("tags", [])  # the scores under the tag, else under the run's first
        run_tag = tag if tag in tags else (tags[0] if tags else None)
        if run_tag is not None:
            label = r if run_tag == tag else f"{r} ({run_tag})"
            out["colors"][label], out["times"][label] = state["colors"].get(r), times.get(r)
            out["margins"][label] = data.safe(lambda r=r, t=run_tag: data.scores(r, t))
    return out


def draw(state: dict, data):
    """The view's five figures, the validated signals first."""
    tag, x, got = tag_of(state, data), state["x"] or "step", read(state, data)
    style = dict(colors=got["colors"], x=x, times=got["times"])
    return (figures.signals_figure(got["frames"], tag=tag, **style),
            figures.rank_std_figure(got["frames"], title=f"Effective rank and std of the embeddings ({tag})", **style),
            figures.spectrum_heatmap_figure(
                got["spectra"], title=f"Spectrum of the embeddings {over(x)} (log10 eigenvalue, {tag})", **style),
            figures.alignment_uniformity_figure(got["frames"], title=f"Alignment and uniformity over training ({tag})",
                                                colors=got["colors"]),
            figures.margin_figure(got["margins"], tag=tag, **style))


def report(state: dict, data) -> list:
    """The view's five figures (not grouped: one trace per run)."""
    if state["group"]:
        return []
    headings = ("Signals that predict accuracy", "Effective rank and std", "Spectrum of the embeddings", "Alignment and uniformity", "Hard negatives")
    return [Section(f"{heading} ({tag_of(state, data)})", fig) for heading, fig in zip(headings, draw(state, data))]


def warm(data, run_id) -> list:
    """The embeddings and spectra of every embedding tag of a selected run."""
    tags = data.light_info(run_id).get("embedding_tags", [])
    return [read for tag in tags for read in (lambda tag=tag: data.embeddings(run_id, tag),
                                              lambda tag=tag: data.spectrum(run_id, tag))]


def layout() -> list:
    return [components.note("From Recorder.log_embeddings(step, z, z2) of the chosen tag (or each run's first tag "
                            "with embeddings): first the signals of each spectrum window that predict a run's final "
                            "accuracy best (measured over the momentum and FT studies' runs, docs/health_validation.md), "
                            "then std and uniformity per step, effective rank and spectrum per window of steps, "
                            "alignment with a second view; margin and hard negatives from the logged scores."),
            components.graph("signals"), components.graph("rep-curves"), components.graph("spectrum"),
            components.graph("plane"), components.graph("margin")]


VIEW = View(
    name="representation", label="Representation", layout=layout,
    graphs=("signals", "rep-curves", "spectrum", "plane", "margin"),
    panels=(Panel("figures", (("signals-graph", "figure"), ("rep-curves-graph", "figure"), ("spectrum-graph", "figure"),
                              ("plane-graph", "figure"), ("margin-graph", "figure")), ("tag", "x", "group"), draw),),
    warm=warm, report=report,
)
