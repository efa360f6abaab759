"""scoreviz: see the learning dynamics of contrastive learning.

    rec = scoreviz.Recorder("runs/my-run", config=vars(args))
    rec.log_scores(step, pos, neg)          # cosine scores
    run = scoreviz.open_run("runs/my-run")  # pandas frames
    frame = scoreviz.open_runs("runs/", "neg_mean", where={"moco_m": 0.99})  # many runs, one long frame

The public names are loaded on first use (PEP 562), so importing scoreviz, and
so `scoreviz --help`, does not import torch, numpy or h5py.
"""

import importlib

__version__ = "0.2.0"

from scoreviz.errors import ScorevizError  # noqa: E402  (light: no imports)

# public name -> module that defines it
_LAZY = {"Recorder": "scoreviz.recorder", "Run": "scoreviz.run", "find_runs": "scoreviz.run",
         "open_run": "scoreviz.run", "open_runs": "scoreviz.sweep"}

__all__ = ["Recorder", "Run", "ScorevizError", "find_runs", "open_run", "open_runs", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    try:  # a submodule used as an attribute (scoreviz.store, scoreviz.ft), as after a plain import
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
