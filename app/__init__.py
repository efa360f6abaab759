"""The Dash front end of scoreviz: ``create_app(runs_dir)`` and ``serve(...)``.

Runs are read only through ``scoreviz.find_runs`` / ``scoreviz.open_run``.
Everything the page needs (Dash's scripts, plotly.js, app/assets/style.css)
is served by the app itself, so it works on machines with no internet.

The app is built from one unit, the view (app.shell.unit): one folder per view under
app/views/, listed by the registry app/views/__init__.py. Around the views: app.shell (the URL
as the page's one state, the run table, the shared controls), app.runs (the data access),
app.plot (shared plotting helpers), app.server (request guard, body checks, binding) and
app.report (the offline report, from the views' report sections).

Importing this package is light: Dash is loaded by ``create_app``.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"


def create_app(runs_dir, refresh: float = 5.0, warm: bool = True, host: str = "127.0.0.1",
               allow_hosts=(), views=None, label=None):
    """The ``dash.Dash`` app for every run below ``runs_dir``, re-read every ``refresh`` s.

    ``runs_dir`` may be a folder, a glob, or a list of them (app.runs.RunData). The page is built
    from ``views`` (default: the registry, app.views.VIEWS): its tabs, its URL keys, the checks of
    every request, what the background reads.

    With ``warm`` (the default) runs are read into the cache in the background
    once listed (step counts) and selected (their data), so figures come from memory.
    ``host`` is the address the server will bind: requests must name it, a
    loopback name or one of ``allow_hosts`` in their Host header (app.server.guard).
    ``label``: how the page's header names the runs (default: ``runs_dir``), e.g. the URL of a
    bucket whose runs ``runs_dir`` holds local copies of.
    """
    import inspect

    import dash

    from app.runs import RunData
    from app.server import guard
    from app.shell import export, page, runtable, state
    from app.views import VIEWS

    views = tuple(views or VIEWS)
    # With ``warm``, every run's header is read in the background once the page is up (and kept
    # in the header index, app.runs.headers, for the next start): the page lists the runs found on
    # disk at once and fills in their config as the headers arrive.
    data = RunData(runs_dir, warm=warm, hold=True, warm_reads=page.warm_reads(views))
    options = {}
    if "enable_mcp" in inspect.signature(dash.Dash).parameters:
        options["enable_mcp"] = False  # no second endpoint, whatever DASH_MCP_ENABLED says
    dash_app = dash.Dash(
        __name__,
        title="scoreviz",
        assets_folder=str(ASSETS),
        serve_locally=True,  # Dash's and plotly's JS from this server, never a CDN
        update_title=None,
        **options,
    )
    # One layout for every page load: the controls start at their defaults and the state
    # callback (app.shell.state) sets them, and the runs, from the URL.
    dash_app.layout = page.build(label or describe_runs(runs_dir), refresh, views)
    # Background reads wait while a request is answered: the page comes first.
    if data.background is not None:
        dash_app.server.before_request(data.background.request_started)
        dash_app.server.teardown_request(lambda _exc: _finished(data.background))
    runtable.register(dash_app, data, refresh)
    state.register(dash_app, data, views)
    page.register(dash_app, views)
    for view in views:
        for name in view.graphs:
            export.register(dash_app, name)
    # after the callbacks: the guard checks requests against them
    guard.protect(dash_app, host, allow_hosts, kinds=page.property_kinds(views))
    dash_app.scoreviz_data = data  # for tests and the latency benchmark
    return dash_app


def _finished(background) -> None:
    """A request has been answered; once it was a callback (the page is up and has asked for its
    state), background reading may start (app.runs.background: hold=True)."""
    import flask

    background.request_finished()
    if flask.request.path.endswith("/_dash-update-component"):
        background.page_up()


def serve(runs_dir, host: str = "127.0.0.1", port: int = 8050, refresh: float = 5.0,
          debug: bool = False, allow_hosts=(), verbose: bool = False, on_start=None, label=None,
          **limits) -> None:
    """Serve the app until interrupted (Ctrl+C returns). Binds 127.0.0.1 unless ``host`` says otherwise.

    Prints one line, the URL; request logs only with ``verbose``. Served by
    waitress; ``debug`` uses Dash's debug server instead (loopback only).
    Raises ScorevizError for ``debug`` on a non-loopback host and for an
    address that cannot be bound; warns on stderr when ``host`` is not loopback.
    ``on_start(url)``, if given, is called once the address is bound, before serving.
    ``label``: how the page and the console name the runs (create_app).
    ``limits``: max_connections, header_timeout, body_timeout (app.server.serving).
    """
    from app.server import binding

    binding.check(host, port, debug)
    dash_app = create_app(runs_dir, refresh=refresh, host=host, allow_hosts=allow_hosts, label=label)
    label = label or describe_runs(runs_dir)
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{port}/"
    if debug:
        print(f"scoreviz: serving {label} on {url} (Ctrl+C to stop)", flush=True)
        if on_start:
            on_start(url)
        dash_app.run(host=host, port=port, debug=True)
        return
    from app.server.serving import make_server

    server = make_server(dash_app, host, port, verbose=verbose, **limits)
    print(f"scoreviz: serving {label} on {url} (Ctrl+C to stop)", flush=True)
    if on_start:
        on_start(url)
    server.run()


def describe_runs(runs_dir) -> str:
    """The run folders as the page and the console name them (a URL without any credentials in it)."""
    from scoreviz.store.objects import is_url, shown

    items = [runs_dir] if isinstance(runs_dir, (str, Path)) else list(runs_dir)
    return ", ".join(shown(r) if is_url(r) else str(r) for r in items)
