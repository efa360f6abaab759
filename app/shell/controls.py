"""The controls every view shares: the runs, the filter, the tag, the x axis, grouping and band.
The view tabs are a control too (``view_control``, from the registry of views)."""

from __future__ import annotations

from app.plot.axes import X_AXES
from app.shell.unit import Choices, Control
from scoreviz.groups import MAX_GROUPS, MAX_KEYS, group_runs

FILTER_HELP = ("regular expression on run names (RE2: no lookarounds or backreferences), and/or config "
               "conditions: moco_m=0.99, lr<0.1, pos_alpha!=None (space-separated, all must hold; at most 20 terms "
               "and 1,000 characters). It hides runs, it does not deselect them: clearing it shows them again")
BANDS = (("std", "std"), ("sem", "std error"), ("minmax", "min-max"))


def default_tag(tags) -> str | None:
    """'train' where runs have it (the Recorder's default), else the first tag."""
    tags = list(tags)
    return "train" if "train" in tags or not tags else tags[0]


def _tags(context) -> Choices:
    return Choices(list(dict.fromkeys(context.union("tags") + context.union("embedding_tags"))), context.decided())


def _config_keys(context) -> Choices:
    differing = set(context.differing_keys())
    keys = context.config_keys()
    return Choices(keys, context.decided(), {k: f"{k} (differs)" if k in differing else k for k in keys})


RUNS = Control("runs", "run-picker", "Runs shown", "multi", default=None,
               props=dict(searchable=True, placeholder="search and select runs"))
FILTER = Control("filter", "run-filter", "Filter runs", "text", default="", width="narrow-wide", title=FILTER_HELP,
                 props=dict(placeholder="e.g. moco  or  moco_m>=0.9", className="filter-input"))
TAG = Control("tag", "tag", "Tag", "dropdown", default=lambda context: default_tag(_tags(context).values),
              choices=_tags, invalid="no selected run recorded this tag", width="narrow",
              props=dict(clearable=False))
X = Control("x", "x-axis", "x axis", "radio", default="step", choices=tuple(X_AXES.items()),
            invalid=f"the x axis is one of {', '.join(X_AXES)}", width="narrow-wide")
GROUP = Control("group", "group-by", "Group by (config keys that differ)", "multi", default=[],
                choices=_config_keys, invalid="no selected run has this config key", most=MAX_KEYS,
                props=dict(placeholder="e.g. moco_m: one mean per value, seeds folded in"),
                title="runs with the same values of these keys form a group, drawn as its mean with a band "
                      "in the views that draw groups; every other key (seed...) is ignored")
BAND = Control("band", "band", "Band", "radio", default="std", choices=BANDS,
               invalid="the band is one of std, sem, minmax", width="narrow-wide",
               title="the shaded area around a group's mean")
# In the order the URL writes them (after the view).
SHARED = (RUNS, FILTER, TAG, X, GROUP, BAND)


def view_control(views) -> Control:
    """The view tabs as a control: ``view=NAME``, one of the registry's views."""
    return Control("view", "view", "View", "tabs", default=views[0].name,
                   choices=tuple((v.name, v.label) for v in views),
                   invalid=f"the view is one of {', '.join(v.name for v in views)}")


def tag_of(state: dict, data) -> str | None:
    """The tag a panel draws: the state's, else (a store without one) the one its runs default to."""
    if state.get("tag"):
        return state["tag"]
    tags = list(dict.fromkeys(t for r in state.get("runs", []) for t in data.light_info(r).get("tags", [])))
    return default_tag(tags)


def band_of(state: dict) -> str:
    """The state's band around a group's mean (std where it holds none)."""
    return state.get("band") if state.get("band") in dict(BANDS) else "std"


def groups_of(state: dict, data, runs=None) -> list:
    """The groups a view draws of ``runs`` (the state's by default) grouped by the state's keys: at
    most MAX_GROUPS, the rest folded into one "N other groups" group (scoreviz.groups.group_runs), so
    a figure stays small whatever the sweep."""
    runs = state["runs"] if runs is None else runs
    return group_runs({r: data.light_info(r).get("config", {}) for r in runs}, state["group"], most=MAX_GROUPS)


def selected_runs(context) -> Choices:
    """The choices of a per-run picker (the run of a landscape, of a tags panel, a reference): the
    runs selected, final as soon as there are some."""
    return Choices(list(context.selected), bool(context.selected))


def step_check(value, context):
    """The check of a step slider's value: a whole number from 0 to the selected runs' last step
    (PENDING until their headers are read)."""
    from app.shell.unit import PENDING

    if value != int(value) or value < 0:
        return "a step is a whole number, 0 or more"
    if not context.decided():
        return PENDING
    last = context.last_step()
    return None if last is None or value <= last else f"after the last recorded step, {last}"


def step_slider(key: str, component_id: str, label: str = "Step") -> Control:
    """A step slider: its value in the URL as ``key``, the last recorded step by default; its range
    is set by the panel that reads the steps."""
    return Control(key, component_id, label, "slider", default=lambda context: context.last_step(), check=step_check,
                   width="step-control", props=dict(min=0, max=1, step=1, allow_direct_input=True,
                                                    updatemode="mouseup", tooltip={"placement": "bottom"}))
