"""Many runs as one long pandas DataFrame, for notebooks: ``scoreviz.open_runs``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from scoreviz.errors import ScorevizError
from scoreviz.run import Run, common_base, expand_roots, find_runs, open_run
from scoreviz.store.objects import ObjectStore, check_options, is_url, shown
from scoreviz.store.remote import RemoteRun, runs_in
from scoreviz.store import STATS_COLUMNS
from scoreviz.store.select import check_max_points, check_step_range

FIXED_COLUMNS = ("run", "path", "tag", "statistic", "step", "value")


def open_runs(roots, statistics="neg_mean", tag: str = "train", where=None, steps=None,
              max_points: int | None = None, errors: str = "warn", storage_options=None) -> pd.DataFrame:
    """One statistic (or several) of every run below ``roots`` as a long DataFrame.

        frame = scoreviz.open_runs("runs/", "neg_mean", where={"moco_m": [0.99, 0.999]})
        frame.groupby(["moco_m", "step"])["value"].agg(["mean", "std"])

    ``roots``: a folder, a glob (``"runs/sweep-*"``), or a list of them; runs are
    found below each (as ``scoreviz serve`` does). ``statistics``: a name or a list
    of names, each a score statistic of ``tag`` (``pos_mean``, ``neg_sample_var``,
    ... see Run.scores) or a logged scalar (``loss``); a run without it has no rows
    for it. ``where`` keeps the runs whose config matches, decided from each run's
    header before any data is read:

    - a dict ``{key: wanted}``: every key must match; ``wanted`` is a value
      (equal), a list/tuple/set of values (one of them), or a callable taking the
      value and returning a bool (``{"alpha": lambda a: a > 1}``); a run without the
      key never matches;
    - a callable taking the whole config dict and returning a bool;
    - a list holding either kind: all must match.

    ``steps`` (first, last) and ``max_points`` read only that step range and at most
    that many steps per run (strided, see Run.scores). ``errors``: "warn" (default)
    skips a run that cannot be read with a warning naming it, "raise" raises its
    ScorevizError.

    A root may be a URL (``s3://bucket/sweep/``): its runs are found with one listing,
    ``where`` is decided from each run's published manifest, and only the matching
    runs' new parts are fetched (``storage_options``: fsspec's options for the store).

    Returns columns run (the run's folder relative to the common folder of
    ``roots``), path, tag, statistic, step, value, then one column per config key
    found in the matching runs (NaN where a run has no such key; a key named like
    one of the first six columns becomes ``config.<key>``). Rows are ordered by
    run, statistic and step.
    """
    if errors not in ("warn", "raise"):
        raise ScorevizError(f"open_runs: errors must be 'warn' or 'raise', got {errors!r}")
    check_max_points(max_points, "open_runs")  # a bad option is said once, not as every run's warning
    check_step_range(steps, "open_runs")
    names = [statistics] if isinstance(statistics, str) else list(statistics)
    if not names:
        raise ScorevizError("open_runs: no statistic asked for")
    keep = _where(where)
    frames, configs = [], {}
    for run_id, folder, opener in _progress(_runs_below(roots, check_options(storage_options, "open_runs"))):
        try:
            run = opener(keep)
            if run is None:
                continue
            parts = _read(run, names, tag, steps, max_points)
        except ScorevizError as err:
            if errors == "raise":
                raise
            warnings.warn(f"open_runs: skipped {folder}: {err}", stacklevel=2)
            continue
        configs[run_id] = run.config
        for statistic, series in parts:
            frames.append(pd.DataFrame({"run": run_id, "path": str(folder), "tag": tag, "statistic": statistic,
                                        "step": series.index.to_numpy(), "value": series.to_numpy(dtype=float)}))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: pd.Series(dtype=float if c == "value" else "int64" if c == "step" else object) for c in FIXED_COLUMNS})
    return _with_config(frame, configs)


def _runs_below(roots, options) -> list:
    """[(run id, where, opener)] of every run below ``roots``; opener(keep) opens the run, or
    returns None when its config does not pass ``keep`` (for a run in a store, decided from its
    manifest before any part is fetched)."""
    items = [roots] if isinstance(roots, (str, Path)) else list(roots)
    urls = [shown(str(item)) for item in items if is_url(item)]
    local = [item for item in items if not is_url(item)]
    found = []
    if local or not urls:
        folders = expand_roots(local)
        base = common_base(folders)
        for folder in find_runs(folders):
            found.append((Path(os.path.relpath(folder, base)).as_posix(), folder,
                          lambda keep, folder=folder: _if_kept(open_run(folder), keep)))
    base = os.path.commonprefix([u + "/" for u in urls]).rpartition("/")[0] if len(urls) > 1 else (urls or [""])[0]
    for url in urls:
        store = ObjectStore(url, options)
        for folder, keys in sorted(runs_in(store.list("")).items()):
            remote = RemoteRun(url, store=store, key=folder)
            run_id = remote.url[len(base):].strip("/") or remote.url.rsplit("/", 1)[-1]

            def opener(keep, remote=remote, keys=keys):
                published = remote.latest(keys)
                if published[0] == "manifest" and not keep(published[1].header.get("config", {})):
                    return None
                return _if_kept(Run(remote.url, storage_options=options, published=published), keep)
            found.append((run_id, remote.url, opener))
    return found


def _if_kept(run, keep):
    return run if keep(run.config) else None


def _read(run, names, tag, steps, max_points):
    """[(statistic, Series by step)] of one run; only the columns asked for are read."""
    score_names = [n for n in names if n in STATS_COLUMNS]
    out = {}
    if score_names and tag in run.tags:
        scores = run.scores(tag, columns=score_names, steps=steps, max_points=max_points)
        out.update({n: scores[n] for n in score_names})
    scalar_names = [n for n in names if n not in STATS_COLUMNS]
    if scalar_names:
        scalars = run.scalars(names=scalar_names, steps=steps, max_points=max_points)
        out.update({n: scalars[n].dropna() for n in scalar_names if n in scalars})
    return [(n, out[n]) for n in names if n in out]


def _where(where) -> Callable:
    """A predicate on a config dict from open_runs' ``where``."""
    if where is None:
        return lambda config: True
    if callable(where):
        return lambda config: bool(where(config))
    if isinstance(where, Mapping):
        tests = {key: _matcher(key, wanted) for key, wanted in where.items()}
        return lambda config: all(key in config and test(config[key]) for key, test in tests.items())
    if isinstance(where, (list, tuple)):
        predicates = [_where(w) for w in where]
        return lambda config: all(p(config) for p in predicates)
    raise ScorevizError(f"open_runs: where must be a dict, a callable or a list of them, got "
                        f"{type(where).__name__}")


def _matcher(key, wanted) -> Callable:
    if callable(wanted):
        return lambda value: bool(wanted(value))
    if isinstance(wanted, (list, tuple, set, frozenset)):
        options = list(wanted)
        return lambda value: any(_equal(value, option) for option in options)
    return lambda value: _equal(value, wanted)


def _equal(value, wanted) -> bool:
    if isinstance(value, list) and isinstance(wanted, tuple):
        wanted = list(wanted)
    try:
        return bool(value == wanted)
    except (TypeError, ValueError):
        return False


def _with_config(frame: pd.DataFrame, configs: Mapping[str, Mapping]) -> pd.DataFrame:
    keys = []
    for config in configs.values():
        keys += [k for k in config if k not in keys]
    for key in keys:
        column = f"config.{key}" if key in FIXED_COLUMNS else key
        values = {run: config.get(key) for run, config in configs.items()}
        frame[column] = frame["run"].map(lambda run, values=values: _cell(values.get(run)))
    return frame


def _cell(value):
    """Config values as cells: lists become tuples (hashable, so groupby works), None stays None."""
    return tuple(value) if isinstance(value, list) else value


def _progress(folders):
    if len(folders) < 50:
        return folders
    from tqdm import tqdm

    return tqdm(folders, desc="reading runs", unit="run")
