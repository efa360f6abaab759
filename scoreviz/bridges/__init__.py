"""Bridges between scoreviz runs and other tools' files: TensorBoard event files
(both ways) and Parquet tables. None of them imports Dash; each imports its heavy
package (tensorboard, pyarrow) only when it runs, and says which extra to install
when that package is missing.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from scoreviz.errors import ScorevizError


def require(module: str, extra: str, purpose: str):
    """Import `module`, or raise ScorevizError naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ScorevizError(f"{purpose} needs the package {module.split('.')[0]!r}, which is not installed "
                            f"({err}): pip install 'scoreviz[{extra}]'") from None


def open_runs(run_dirs) -> list:
    """Open every run (ScorevizError naming a bad one); a run given twice is an error."""
    from scoreviz.run import open_run

    runs = [open_run(d) for d in run_dirs]
    if not runs:
        raise ScorevizError("give at least one run folder")
    seen = {}
    for run in runs:
        key = run.path.resolve()
        if key in seen:
            raise ScorevizError(f"{run.path}: the same run is given twice (also as {seen[key]})")
        seen[key] = run.path
    return runs


def run_labels(runs) -> list[str]:
    """A name per run for tables and folders: the folder name, or, where two runs
    share a name, the path below the folder the runs have in common."""
    names = [run.name for run in runs]
    if len(set(names)) == len(names):
        return names
    paths = [run.path.resolve() for run in runs]
    common = Path(*_common_parts(paths))
    return [path.relative_to(common).as_posix() for path in paths]


def _common_parts(paths):
    parts = [p.parts for p in paths]
    out = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        out.append(column[0])
    return out
