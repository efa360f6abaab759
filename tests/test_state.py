"""The page's one state (app.shell.state), without a browser: the URL sets every control, a value
the runs cannot judge yet is kept until they can, an invalid one is dropped and said so, the filter
hides runs and never deselects them."""

import numpy as np
import pytest

from tests.sweep_runs import write_run

pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("state-runs")
    steps = np.arange(0, 30, 3)
    write_run(root / "baseline", {"moco_m": 0.99}, steps, steps / 100, tags=("train",), scalars={"loss": steps * 1.0})
    write_run(root / "ft", {"moco_m": 0.99, "pos_alpha": 2.0}, steps, steps / 50, tags=("train", "ft"),
              scalars={"loss": steps * 2.0, "lr": steps * 0.0 + 0.03})
    return root


def page_state(runs, warm=False):
    from app.runs import RunData
    from app.shell.state import PageState
    from app.views import VIEWS

    return PageState(RunData(runs, warm=warm), VIEWS, wait=0)


def test_the_url_sets_every_control_and_stays_as_it_was(runs):
    state = page_state(runs)
    query = "?view=distribution&runs=ft&runs=baseline&tag=ft&stats=lr&stats=pos_mean&step=12&ft=ft"
    answer = state.update(query, {}, {}, True)
    assert answer["search"] == query and answer["dropped"] == []
    values = answer["values"]
    assert (values["view"], values["runs"], values["tag"], values["stats"], values["ft"], values["step"]) == (
        "distribution", ["ft", "baseline"], "ft", ["lr", "pos_mean"], "ft", 12)
    # a dropdown's options hold its value, in the same answer (a dropdown drops a value it has no option for)
    assert {"lr", "pos_mean"} <= {o["value"] for o in answer["options"]["stats"]}
    assert {o["value"] for o in answer["options"]["run-picker"]} == {"baseline", "ft"}
    # the panels of the view on screen only, each with the values of its keys
    assert set(answer["panels"]) == {"distribution-heatmap-state", "distribution-hist-state", "distribution-ft-state"}
    assert answer["panels"]["distribution-hist-state"]["step"] == 12


def test_a_value_is_kept_until_the_runs_can_judge_it_then_dropped_if_invalid(runs):
    from app.runs import RunData
    from app.shell.state import PageState
    from app.views import VIEWS

    data = RunData(runs, warm=False)
    state = PageState(data, VIEWS, wait=0)
    known = data.light_info
    data.light_info = lambda run_id: {}  # no header read yet (a run being read in the background)
    data.known_info = lambda run_id: None
    try:
        answer = state.update("?runs=ft&stats=lr&stats=nonsense", {}, {}, True)
    finally:
        data.light_info, data.known_info = known, type(data).known_info.__get__(data)
    assert answer["dropped"] == [] and answer["values"]["stats"] == ["lr", "nonsense"]  # both kept, and shown
    labels = {o["value"]: o["label"] for o in answer["options"]["stats"]}
    assert "waiting" in labels["nonsense"] and "waiting" in labels["lr"]
    answer = state.update("?runs=ft&stats=lr&stats=nonsense", {}, {}, True)  # the header read: judged
    assert answer["values"]["stats"] == ["lr"] and answer["search"] == "?runs=ft&stats=lr"
    assert answer["dropped"] == ["stats=nonsense (no selected run records this statistic)"]


@pytest.mark.parametrize("query, dropped", [
    ("?x=time", "x=time (the x axis is one of step, wall, relative)"),
    ("?runs=nosuch&runs=ft", "runs=nosuch (no such run below the runs folder)"),
    ("?runs=../../etc", "refused"),
    ("?tag=nope", "tag=nope (no selected run recorded this tag)"),
    ("?runs=baseline&grun=ft", "grun=ft (not a selected run)"),
    ("?smooth=2", "smooth=2 (smoothing is from 0 to 0.99)"),
    ("?step=1000", "step=1000 (after the last recorded step, 27)"),
    ("?group=nokey", "group=nokey (no selected run has this config key)"),
    ("?view=nope", "view=nope (the view is one of"),
    ("?bogus=1", "bogus=1 (not a setting of this page)"),
])
def test_an_invalid_value_is_dropped_and_said_so(runs, query, dropped):
    answer = page_state(runs).update(query, {}, {}, True)
    assert any(line.startswith(dropped) or dropped in line for line in answer["dropped"]), answer["dropped"]
    assert answer["search"].count("=") == query.count("=") - 1  # the URL rewritten without it


def test_a_control_the_user_changed_goes_into_the_url_and_the_others_keep_theirs(runs):
    state = page_state(runs)
    first = state.update("?runs=ft&runs=baseline&tag=ft", {}, {}, True)
    applied = first["values"]
    now = dict(applied, stats=["loss"], band="sem")  # two controls changed on the page
    answer = state.update(first["search"], now, applied, False)
    assert answer["search"] == "?runs=ft&runs=baseline&tag=ft&band=sem&stats=loss"
    assert answer["values"]["tag"] == "ft" and answer["dropped"] == []


def test_the_filter_hides_runs_and_never_deselects_them(runs):
    state = page_state(runs)
    first = state.update("?runs=baseline&runs=ft", {}, {}, True)
    assert first["runs"] == ["baseline", "ft"]
    # filter "ft": baseline hidden, still selected (the picker keeps it, labelled), nothing drawn of it
    hidden = state.update(first["search"], dict(first["values"], filter="ft"), first["values"], False)
    assert hidden["runs"] == ["ft"] and hidden["values"]["runs"] == ["baseline", "ft"]
    assert hidden["search"] == "?runs=baseline&runs=ft&filter=ft"
    labels = {o["value"]: o["label"] for o in hidden["options"]["run-picker"]}
    assert "hidden by the filter" in labels["baseline"]
    assert hidden["panels"]["curves-curves-state"]["runs"] == ["ft"]
    # cleared: exactly the selection before it, drawn
    cleared = state.update(hidden["search"], dict(hidden["values"], filter=""), hidden["values"], False,
                           hidden["signatures"])
    assert cleared["search"] == "?runs=baseline&runs=ft" and cleared["runs"] == ["baseline", "ft"]
    assert cleared["panels"]["curves-curves-state"]["runs"] == ["baseline", "ft"]  # a new state: drawn again


def test_a_filter_that_matches_nothing_then_cleared_draws_the_runs_again(runs):
    state = page_state(runs)
    first = state.update("", {}, {}, True)  # the default runs: every run
    assert first["runs"] == ["baseline", "ft"] and first["search"] == ""
    none = state.update("", dict(first["values"], filter="nomatch"), first["values"], False, first["signatures"])
    assert none["runs"] == [] and none["panels"]["curves-curves-state"]["runs"] == []
    cleared = state.update(none["search"], dict(none["values"], filter=""), none["values"], False, none["signatures"])
    assert cleared["search"] == "" and cleared["runs"] == ["baseline", "ft"]
    assert cleared["panels"]["curves-curves-state"]["runs"] == ["baseline", "ft"]
    # explicit runs too: the same selection back, drawn
    first = state.update("?runs=ft", {}, {}, True)
    none = state.update(first["search"], dict(first["values"], filter="nomatch"), first["values"], False,
                        first["signatures"])
    assert none["runs"] == [] and none["values"]["runs"] == ["ft"]
    cleared = state.update(none["search"], dict(none["values"], filter=""), none["values"], False, none["signatures"])
    assert cleared["runs"] == ["ft"] and cleared["panels"]["curves-curves-state"]["runs"] == ["ft"]


def test_defaults_follow_the_runs(runs):
    answer = page_state(runs).update("?runs=baseline&runs=ft&view=distribution", {}, {}, True)
    values = answer["values"]
    assert values["ft"] == "ft"  # the raw-vs-transformed panel: the run with more than one tag
    assert values["key"] == "pos_alpha"  # the waterfall ordered by the first key that differs
    assert values["step"] == 27 and values["tag"] == "train"
    assert answer["search"] == "?view=distribution&runs=baseline&runs=ft"  # defaults stay out of the URL


def test_a_hostile_url_is_bounded_and_its_notice_short(runs):
    """Issue 25: a forged link (a filter of megabytes, thousands of settings, long values) is
    applied in part, its notice lists NOTICE_ITEMS dropped values and counts the rest, each value
    quoted short; nothing of it is echoed whole."""
    from app.shell import runfilter, url
    from app.shell.state import NOTICE_ITEMS, dropped_line

    fields = [f"filter={'(' * (runfilter.MAX_CHARS + 1)}", "runs=ft", f"runs={'x' * 5000}", "view=curves"]
    fields += [f"k{i}={'v' * 100}" for i in range(url.MAX_FIELDS - len(fields) + 500)]
    answer = page_state(runs).update("?" + "&".join(fields), {}, {}, True)
    dropped = answer["dropped"]
    assert dropped[0].startswith("filter=(((") and "500 settings after the first 1,000" in dropped
    assert any(d.startswith("filter=(((") and "(1,001 characters) (a filter is at most 1,000 characters)" in d for d in dropped)
    assert any(d.startswith("runs=xxx") and "(5,000 characters)" in d for d in dropped)
    assert answer["values"]["runs"] == ["ft"] and answer["values"]["filter"] == ""
    assert answer["search"] == "?view=curves&runs=ft" and all(len(d) < 200 for d in dropped)
    line = dropped_line(dropped)
    assert line.endswith(f"; and {len(dropped) - NOTICE_ITEMS:,} more") and len(line) < 2000
    assert dropped_line(["x=1 (why)"]).endswith("x=1 (why)")
