"""What every view shares: the view unit (``unit``), the URL codec (``url``) and the page's one
state (``state``), the shared controls (``controls``), the runs selected and the filter
(``selection``, ``runfilter``), the run table (``runtable``), the page (``page``), its components
(``components``) and the figure exports (``export``, ``images``).

The shell never imports a view: app.create_app hands it the registry (app.views).
"""
