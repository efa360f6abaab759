"""The Representation view and the representation health checks, without a browser: the figure
functions on frames, every view's callback on a run without negatives, the health flags."""

import json

import numpy as np
import pandas as pd
import pytest

from app.plot.reduce import MAX_CELLS
from app.views.representation import figures as representation
from scoreviz import health

torch = pytest.importorskip("torch")
scoreviz = pytest.importorskip("scoreviz")

from app import create_app  # noqa: E402
from test_app import post_panel, view_state  # noqa: E402

DIM = 16


def collapsing_embeddings(step, collapse_at, gen):
    """(z, z2): spread-out embeddings, shrinking towards one point from `collapse_at` on."""
    z = torch.randn(64, DIM, generator=gen)
    if collapse_at is not None and step >= collapse_at:
        z = torch.ones(DIM) + z * 10.0 ** -(step - collapse_at + 1)
    return z, z + 0.1 * torch.randn(64, DIM, generator=gen) * z.std()


def make_positive_only_run(root, name, steps=50, collapse_at=None):
    """A BYOL/SimSiam-like run: positive scores only (no negatives), embeddings with two views."""
    gen = torch.Generator().manual_seed(7)
    model = torch.nn.Linear(4, 2)
    with scoreviz.Recorder(root / name, config={"method": "simsiam", "collapse_at": collapse_at},
                           spectrum_window=4) as rec:
        for step in range(steps):
            z, z2 = collapsing_embeddings(step, collapse_at, gen)
            pos = torch.nn.functional.cosine_similarity(z, z2).clamp(-1, 1)
            rec.log_scores(step, pos)
            rec.log_embeddings(step, z, z2)
            model(torch.randn(3, 4, generator=gen)).sum().backward()
            rec.log_gradients(step, model)
            rec.log_scalars(step, loss=float(-pos.mean()))
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("representation-runs")
    make_positive_only_run(root, "healthy")
    make_positive_only_run(root, "collapsing", collapse_at=20)
    return root


# ---- figure functions ---------------------------------------------------------------


def frame(steps=100, dim=DIM, rank_every=10, std=0.2):
    index = pd.Index(np.arange(steps), name="step")
    rank = np.full(steps, np.nan)
    rank[rank_every - 1::rank_every] = np.linspace(dim * 0.9, 2, steps // rank_every)
    return pd.DataFrame({"std": np.full(steps, std), "uniformity": np.linspace(-3, -1, steps),
                         "alignment": np.linspace(0.5, 0.1, steps), "rank": rank, "dim": float(dim),
                         "window_samples": np.where(np.isnan(rank), np.nan, 640.0)}, index=index)


def test_rank_and_std_curves_one_trace_per_run_and_panel_with_the_reference_levels():
    fig = representation.rank_std_figure({"a": frame(), "b": frame(std=0.01)})
    named = [t for t in fig.data if t.name in ("a", "b")]
    assert [t.name for t in named] == ["a", "a", "b", "b"]
    assert len(named[0].x) == 10 and named[0].mode == "lines+markers"  # rank: one point per window
    assert len(named[1].x) == 100
    assert len(fig.data) == 4
    levels = sorted(shape.y0 for shape in fig.layout.shapes)
    assert levels == pytest.approx(sorted([DIM, health.DIMENSIONAL_COLLAPSE_RANK * DIM, 1 / np.sqrt(DIM),
                                           health.COMPLETE_COLLAPSE_STD / np.sqrt(DIM)]))
    assert fig.layout.yaxis2.type == "log"
    assert "no embeddings" in json.dumps(representation.rank_std_figure({"a": None}).to_dict())


def test_spectrum_heatmap_stays_within_the_cell_budget_and_is_log_scaled():
    steps = np.arange(0, 5000, 5)
    eigenvalues = np.tile(np.logspace(0, -6, 2048), (len(steps), 1))
    eigenvalues[:, -5:] = 0.0  # zero eigenvalues sit at the colour scale's floor
    fig = representation.spectrum_heatmap_figure({"big": (steps, eigenvalues), "small": (steps[:10],
                                                                                          eigenvalues[:10, :64])})
    cells = sum(np.asarray(t.z).size for t in fig.data)
    assert len(fig.data) == 2 and cells <= MAX_CELLS
    z = np.asarray(fig.data[0].z, dtype=float)
    assert np.nanmax(z) == pytest.approx(0.0, abs=0.1) and np.nanmin(z) >= np.log10(representation.EIGENVALUE_FLOOR)
    assert np.asarray(fig.data[1].z).shape == (64, 10)  # small enough to be drawn whole
    assert "no spectrum" in json.dumps(representation.spectrum_heatmap_figure({}).to_dict())


def test_alignment_uniformity_plane_colours_points_by_step_and_skips_runs_without_two_views():
    no_views = frame().assign(alignment=np.nan)
    fig = representation.alignment_uniformity_figure({"a": frame(1000), "b": no_views})
    assert [t.name for t in fig.data] == ["a"]
    assert len(fig.data[0].x) <= representation.PLANE_POINTS
    assert list(fig.data[0].marker.color[:2]) == [0, 3] and fig.layout.coloraxis.cmax == 999
    empty = representation.alignment_uniformity_figure({"b": no_views})
    assert "second view" in json.dumps(empty.to_dict())


def test_margin_figure_needs_negatives():
    with_negatives = pd.DataFrame({"margin": [0.1, 0.2], "hard_frac": [0.5, 0.4]})
    without = pd.DataFrame({"margin": [np.nan, np.nan], "hard_frac": [np.nan, np.nan]})
    fig = representation.margin_figure({"a": with_negatives, "b": without})
    assert [t.name for t in fig.data] == ["a", "a"]
    assert "needs scores" in json.dumps(representation.margin_figure({"b": without}).to_dict())


def test_signals_figure_draws_the_validated_signals_strongest_first():
    ordered = [abs(s.rho) for s in health.VALIDATED_SIGNALS]
    assert ordered == sorted(ordered, reverse=True) and all(s.better in ("higher", "lower")
                                                            for s in health.VALIDATED_SIGNALS)
    with_signals = frame()
    for i, signal in enumerate(health.VALIDATED_SIGNALS):
        with_signals[signal.column] = with_signals["rank"] * (i + 1)  # one value per window, NaN between
    no_spectrum = frame().drop(columns="rank")
    fig = representation.signals_figure({"a": with_signals, "older file": frame(), "no spectrum": no_spectrum})
    assert {t.name for t in fig.data} == {"a", "older file"}  # a run without any window signal has no trace
    assert [len(t.x) for t in fig.data if t.name == "a"] == [10] * len(health.VALIDATED_SIGNALS)  # a point a window
    assert len([t for t in fig.data if t.name == "older file"]) == 1  # its effective rank, the one signal it has
    assert "no spectrum window" in json.dumps(representation.signals_figure({"x": no_spectrum}).to_dict())


# ---- health --------------------------------------------------------------------------


def test_complete_collapse_is_flagged_from_its_first_persistent_step():
    f = frame(60)
    f.loc[30:, "std"] = 1e-4
    f.loc[33, "std"] = 0.5  # a blip resets the count
    flag = health.check_complete_collapse(f)
    assert flag.fired and flag.step == 34 and "sqrt(dim)" in flag.detail
    assert not health.check_complete_collapse(frame(60)).fired
    assert health.check_complete_collapse(None).detail == "no embeddings"


def test_dimensional_collapse_needs_low_rank_in_windows_with_enough_samples():
    f = frame(100)  # rank falls linearly from 14.4 to 2 over 10 windows; 0.2 x 16 = 3.2
    assert not health.check_dimensional_collapse(f).fired
    f.loc[[69, 79, 89, 99], "rank"] = [1.0, 1.2, 1.5, 1.5]
    flag = health.check_dimensional_collapse(f)
    assert flag.fired and flag.step == 69 and flag.detail == "rank 1.0 of dim 16"
    # it fires on healthy runs too (docs/health_validation.md): a notice, not an alarm
    assert flag.severity == health.NOTICE and flag.text() == "notice: from step 69: rank 1.0 of dim 16; still at " \
        "the last step (99)"
    f["window_samples"] = np.where(f["rank"].notna(), 10.0, np.nan)  # fewer samples than dim: not judged
    assert not health.check_dimensional_collapse(f).fired


def test_the_health_table_draws_alarms_red_and_notices_amber():
    from app.views.health import table

    alarm = health.Flag("complete collapse", True, 34, "std 0.01 = 0.1/sqrt(dim)", last=99)
    notice = health.Flag("dimensional collapse", True, 69, "rank 1.0 of dim 16", last=99)
    ok = health.Flag("collapse", False)
    cells = table({"run": [ok, alarm, notice]}).children[1].children[0].children[1:]
    assert [(c.className, c.children) for c in cells] == [
        ("ok", "ok"), ("flagged", "from step 34: std 0.01 = 0.1/sqrt(dim); still at the last step (99)"),
        ("notice", "notice: from step 69: rank 1.0 of dim 16; still at the last step (99)")]


# ---- callbacks, a run without negatives in every view -------------------------------


def draw_every_panel(runs, query):
    """Every panel of every view (the registry's) drawn through its callback for the URL ``query``."""
    from app.shell.page import store_id
    from app.views import VIEWS

    dash_app = create_app(runs, refresh=60)
    client = dash_app.server.test_client()
    drawn = {}
    for view in VIEWS:
        state = view_state(dash_app.scoreviz_data, f"{query}&view={view.name}")
        for panel in view.panels:
            drawn.update(post_panel(client, dash_app, store_id(view, panel), state))
    return dash_app, client, drawn


def test_every_view_draws_runs_without_negatives(runs):
    dash_app, client, drawn = draw_every_panel(
        runs, "?runs=collapsing&runs=healthy&key=collapse_at&stats=pos_mean&stats=neg_mean&stats=margin")
    names = lambda graph: [t.get("name") for t in drawn[graph]["figure"]["data"]]  # noqa: E731
    # pos_mean drawn; neg_mean all NaN gets no (empty) trace
    assert names("curves-graph")[0] == "collapsing" and "healthy" in names("curves-graph")
    assert "no negative scores recorded" in json.dumps(drawn["heatmap-graph"]["figure"])
    assert names("hist-graph") == ["collapsing pos", "healthy pos"]
    assert names("ft-graph") == ["train pos"]
    assert len(names("waterfall-graph")) == 2
    assert [t["type"] for t in drawn["grad-heatmap-graph"]["figure"]["data"]] == ["heatmap"]
    assert "collapsing" in names("rep-curves-graph")
    assert "from step" in json.dumps(drawn["health-table"]["children"])
    assert "no negatives" in json.dumps(drawn["health-table"]["children"])  # the score check cannot judge
    # grouped (both runs lack the key: one group), positives drawn as a mean and a band
    state = view_state(dash_app.scoreviz_data, "?runs=collapsing&runs=healthy&stats=pos_mean&stats=neg_mean&band=minmax",
                       group=["no_such_key"])
    grouped = [t["name"] for t in post_panel(client, dash_app, "curves-curves-state", state)["curves-graph"]["figure"]["data"]]
    assert grouped == ["no_such_key not set (n=2) band", "no_such_key not set (n=2)"]


def test_representation_view_draws_both_runs(runs):
    _, _, out = draw_every_panel(runs, "?runs=collapsing&runs=healthy&tag=train")
    # first, the validated signals: one panel each, the strongest predictor of accuracy first
    signals = out["signals-graph"]["figure"]
    assert {t["name"] for t in signals["data"]} == {"collapsing", "healthy"}
    titles = [a["text"] for a in signals["layout"]["annotations"]]
    assert titles[0].startswith(f"{health.VALIDATED_SIGNALS[0].label}: rho ")
    assert len(titles) == len(health.VALIDATED_SIGNALS)
    curves = [t["name"] for t in out["rep-curves-graph"]["figure"]["data"] if t["name"] in ("collapsing", "healthy")]
    assert curves == ["collapsing", "collapsing", "healthy", "healthy"]
    assert [t["type"] for t in out["spectrum-graph"]["figure"]["data"]] == ["heatmap", "heatmap"]
    assert [t["name"] for t in out["plane-graph"]["figure"]["data"]] == ["collapsing", "healthy"]
    assert "needs scores" in json.dumps(out["margin-graph"]["figure"])  # positives only: no margin


def test_health_panel_flags_the_collapsing_run_only(runs):
    _, _, out = draw_every_panel(runs, "?runs=collapsing&runs=healthy&tag=train")
    text = json.dumps(out["health-table"]["children"])
    assert "complete collapse" in text and "dimensional collapse" in text
    flags = {name: dict(zip(health.REPRESENTATION_CHECKS, health.representation_health(
        scoreviz.open_run(runs / name).embeddings()))) for name in ("collapsing", "healthy")}
    complete = flags["collapsing"]["complete collapse"]
    assert complete.fired and 20 <= complete.step <= 25 and f"from step {complete.step}" in text
    assert not flags["healthy"]["complete collapse"].fired and not flags["healthy"]["dimensional collapse"].fired
