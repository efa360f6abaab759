"""The Dash front end of scoreviz: ``create_app(runs_dir)`` and ``serve(...)``.

Runs are read only through ``scoreviz.find_runs`` / ``scoreviz.open_run``.
Everything the page needs (Dash's scripts, plotly.js, app/assets/style.css)
is served by the app itself, so it works on machines with no internet.

Importing this package is light: Dash is loaded by ``create_app``, so the
scoreviz CLI can register ``serve``/``export`` (app.cli_commands) without it.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"


def create_app(runs_dir, refresh: float = 5.0, warm: bool = True, host: str = "127.0.0.1",
               allow_hosts=()):
    """The ``dash.Dash`` app for every run below ``runs_dir``, re-read every ``refresh`` s.

    ``runs_dir`` may be a folder, a glob, or a list of them (app.data.RunData).

    With ``warm`` (the default) runs are read into the cache in the background
    once listed (step counts) and selected (their data), so figures come from memory.
    ``host`` is the address the server will bind: requests must name it, a
    loopback name or one of ``allow_hosts`` in their Host header (app.guard).
    """
    import inspect

    import dash

    from app import figures, callbacks, guard, layout
    from app.data import RunData

    # With ``warm``, every run's header is read in the background once the page is up (and kept
    # in the header index, app.headers, for the next start): the page lists the runs found on
    # disk at once and fills in their config as the headers arrive.
    data = RunData(runs_dir, warm=warm, hold=True)
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

    def page():
        # A function, so each page load lists the runs (and tags) that exist now: every run
        # found, and the tags, config keys and scalars of the headers read so far (the
        # callbacks add those of the selected runs).
        run_ids = data.run_ids()
        tags, keys, scalars = {}, set(), {}
        for info in data.listed_infos(run_ids).values():
            tags.update(dict.fromkeys(info.get("tags", [])))
            keys.update(info.get("config", {}))
            scalars.update(dict.fromkeys(info.get("scalars", [])))
        # the statistics picker lists the scalars from the start, so a link's ?stats=loss is kept
        stats = list(figures.SCORE_COLUMNS) + [s for s in scalars if s not in figures.SCORE_COLUMNS]
        return layout.build(_describe(runs_dir), run_ids, list(tags), sorted(keys), refresh, stats)

    # Dash checks a layout function's ids when it is set, by calling it, unless a validation layout
    # is given: the page without runs has the same components (a listing of 1,000 runs saved).
    dash_app.validation_layout = layout.build(_describe(runs_dir), [], [], [], refresh, list(figures.SCORE_COLUMNS))
    dash_app.layout = page
    # Background reads wait while a request is answered: the page comes first.
    dash_app.server.before_request(data.request_started)
    dash_app.server.teardown_request(lambda _exc: _finished(data))
    callbacks.register(dash_app, data)
    guard.protect(dash_app, host, allow_hosts)  # after the callbacks: it checks requests against them
    dash_app.scoreviz_data = data  # for tests and the latency benchmark
    return dash_app


def _finished(data) -> None:
    """A request has been answered; once it was a callback (the page is up and has asked for its
    run table), background reading may start (app.data.RunData(hold=True))."""
    import flask

    data.request_finished()
    if flask.request.path.endswith("/_dash-update-component"):
        data.page_up()


def serve(runs_dir, host: str = "127.0.0.1", port: int = 8050, refresh: float = 5.0,
          debug: bool = False, allow_hosts=(), verbose: bool = False, on_start=None) -> None:
    """Serve the app until interrupted (Ctrl+C returns). Binds 127.0.0.1 unless ``host`` says otherwise.

    Prints one line, the URL; request logs only with ``verbose``. Served by
    waitress; ``debug`` uses Dash's debug server instead (loopback only).
    Raises ScorevizError for ``debug`` on a non-loopback host and for an
    address that cannot be bound; warns on stderr when ``host`` is not loopback.
    ``on_start(url)``, if given, is called once the address is bound, before serving.
    """
    from app import binding

    binding.check(host, port, debug)
    dash_app = create_app(runs_dir, refresh=refresh, host=host, allow_hosts=allow_hosts)
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{port}/"
    if debug:
        print(f"scoreviz: serving {_describe(runs_dir)} on {url} (Ctrl+C to stop)", flush=True)
        if on_start:
            on_start(url)
        dash_app.run(host=host, port=port, debug=True)
        return
    from app.server import make_server

    server = make_server(dash_app, host, port, verbose=verbose)
    print(f"scoreviz: serving {_describe(runs_dir)} on {url} (Ctrl+C to stop)", flush=True)
    if on_start:
        on_start(url)
    server.run()


def _describe(runs_dir) -> str:
    """The run folders as the page and the console name them."""
    if isinstance(runs_dir, (str, Path)):
        return str(runs_dir)
    return ", ".join(str(r) for r in runs_dir)
