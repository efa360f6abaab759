"""The server's data access, one job per module: run ids and confinement (``ids``), the bounded
cache (``cache``), the background reader (``background``), typed reads (``reads``), the header
index on disk (``headers``), put together by ``RunData`` (``data``).

Views never open a file: they read through a RunData. Nothing here imports figure code (the
reductions it caches with are app.plot.reduce: numpy only). Runs are found and opened through
scoreviz.find_runs and scoreviz.open_run only.
"""

from app.runs.data import RunData
from app.runs.ids import RefusedRunId

__all__ = ["RefusedRunId", "RunData"]
