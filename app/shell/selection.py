"""Which runs the page shows: the runs selected (the URL's, else the most recent), those the
filter hides (it never deselects them, as TensorBoard's), those still being read, and the
Context the controls' checks and defaults see."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.runs import RefusedRunId
from app.shell import runfilter
from app.shell.unit import Context

# Runs shown when the URL names none: all of them, or the most recent this many.
DEFAULT_RUNS = 10
# How long the state waits for the background to read the selected runs before it answers with
# those read so far (seconds; the page asks again then, see app.shell.page.SELECTION_AGAIN_MS).
SELECTION_WAIT_S = 1.0


def filterable(run_ids, infos: dict, text) -> list[str]:
    """The runs the filter ``text`` can be decided on now: all of them, except, for a config
    condition, those whose header is still being read (they join when it is)."""
    if not runfilter.needs_config(text):
        return list(run_ids)
    return [r for r in run_ids if r in infos]


def default_runs(data, text, ids=None) -> list[str]:
    """The runs shown when the URL names none: every run the filter keeps, the most recent
    DEFAULT_RUNS of them when there are more (by their file's mtime: the headers still being
    read in the background are not waited for, except those of the runs chosen). ``ids``: every
    run id, when the caller has listed them already."""
    ids = data.run_ids() if ids is None else ids
    infos = data.listed_infos(ids)
    kept, _ = runfilter.matching(filterable(ids, infos, text), infos, text)
    by_time = {r: (infos.get(r) or {}).get("mtime") or data.mtime(r) for r in kept}
    chosen = []
    for run_id in sorted(kept, key=lambda r: (by_time[r], r), reverse=True):
        if not (infos.get(run_id) or data.light_info(run_id)).get("error"):
            chosen.append(run_id)
        if len(chosen) == DEFAULT_RUNS:
            break
    return sorted(chosen)


def why_not_a_run(data, run_id, known) -> str | None:
    """Why ``run_id`` cannot be selected (refused, or no such run), None when it can."""
    try:
        data.resolve(run_id)
    except RefusedRunId as err:
        return str(err)
    return None if run_id in known else "no such run below the runs folder"


@dataclass
class Selection:
    """The runs of the page now: ``selected`` (valid ids), ``drawn`` (kept by the filter, readable,
    read: what figures draw), ``pending`` (still being read), ``hidden`` (by the filter),
    ``errors`` (run id -> why it cannot be drawn), their file ``stamps``, and the Context."""

    selected: list
    drawn: list
    pending: list
    hidden: list
    errors: dict
    stamps: dict
    context: Context
    problems: list = field(default_factory=list)  # the filter's (a broken regular expression)


def select(data, selected, text, wait: float = SELECTION_WAIT_S) -> Selection:
    """The Selection of ``selected`` runs under the filter ``text``. Runs never read are read in
    the background, the selected first; this waits for them ``wait`` seconds at most, so the
    figures come once, complete, and leaves those still unread out (``pending``)."""
    data.warm(selected, urgent=True)
    pending = set(data.wait_read(selected, wait))
    headers, errors = {}, {}
    for run_id in selected:
        # a run still being read: its header if read by now (nothing opened here), else later
        info = data.known_info(run_id) if run_id in pending else data.light_info(run_id)
        if info and info.get("error"):
            errors[run_id] = info["error"]
        elif info:
            headers[run_id] = info
    stamps = {}
    for run_id in selected:
        try:
            stamps[run_id] = data.stamp(run_id)
        except RefusedRunId as err:
            errors[run_id] = str(err)
    readable = [r for r in selected if r not in errors]
    complete = all(r in headers for r in readable)
    kept, problems = runfilter.matching(filterable(readable, headers, text), headers, text)
    kept = set(kept)
    hidden = [r for r in readable if r not in kept and (r in headers or not runfilter.needs_config(text))]
    drawn = [r for r in readable if r in kept and r not in pending]
    context = Context(selected=readable, headers=headers, complete=complete)
    return Selection(list(selected), drawn, [r for r in readable if r in pending and r not in hidden], hidden,
                     errors, stamps, context, problems)
