"""Shared pure plotting helpers of the views: reductions (``reduce``), axes and figure text
(``axes``), run and group colours (``palette``), stacked line subplots (``lines``) and one
panel per run (``panels``).

Nothing here reads files or knows about Dash. ``reduce`` uses numpy and pandas only (the data
access, app.runs, reduces what it caches with it); the others build plotly figures.
"""
