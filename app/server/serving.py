"""Serving the app: waitress, quiet, with the guard's rules on every answer.

Werkzeug's development server prints a red banner and one log line per
request (a page fires a dozen callbacks every refresh), and says itself that it
is not for production. waitress is a production WSGI server in pure Python:
threads for the callbacks, nothing printed. Request logs, one line each, only
with ``--verbose``.

waitress reads a request's whole body before the app sees it, so the body
limit is waitress's own ``max_request_body_size`` (app.guard.MAX_BODY): a
larger declared body is refused from its headers. The answers waitress makes
itself (413, 400 for a malformed request, 500 for an app error) carry the
guard's security headers too.

Slow clients: waitress serves at most ``connection_limit`` connections (100 by
default, and 101 connections sending their headers a byte at a time stopped the
server answering anyone) and closes only idle ones. Here the limit is
``MAX_CONNECTIONS``, far above what a browser opens (a few per page), waitress
polls (``select`` stops at 1,024 descriptors), and a request whose headers are not
complete ``HEADER_TIMEOUT`` s after its first byte, or whose body is not complete
``BODY_TIMEOUT`` s after it, is closed: holding a connection costs a slow client its
connection, not the others their answers.

Slow requests: the callbacks share one Python lock (the GIL), which a thread holding it
gives up after ``sys.getswitchinterval()``, 5 ms by default, and a cheap request gives it
up at each read or write of its socket: beside a slow request, each hand-back cost it up to
5 ms, so a request of a few milliseconds took several times more than its share of the lock
(half, beside one). The server switches every ``SWITCH_INTERVAL`` s instead, so a request
beside k slow ones takes about k + 1 times as long, its share (benchmarks/slow_request_share.py
measures it; the README gives the numbers).
"""

from __future__ import annotations

import sys
import time

from app.server import guard

THREADS = 8  # callbacks of one page load run side by side; reads release the GIL in h5py
MAX_CONNECTIONS = 500   # a browser opens a few per page; waitress's own 100 was a slowloris' target
HEADER_TIMEOUT = 10.0   # seconds from a request's first byte to the end of its headers
BODY_TIMEOUT = 60.0     # seconds from a request's first byte to the end of its body (at most 16 MiB)
IDLE_TIMEOUT = 60       # seconds an idle kept-alive connection is kept (waitress: 120)
SWITCH_INTERVAL = 0.001  # seconds a thread holds the GIL while others wait for it (Python: 0.005)


class AccessLog:
    """WSGI middleware: one line per request on stderr (``--verbose``)."""

    def __init__(self, wsgi_app, stream=None):
        self.wsgi_app = wsgi_app
        self.stream = stream

    def __call__(self, environ, start_response):
        start = time.monotonic()
        seen = {}

        def recording(status, headers, exc_info=None):
            seen["status"] = status.split(" ", 1)[0]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        body = self.wsgi_app(environ, recording)
        try:
            size = 0
            for chunk in body:
                size += len(chunk)
                yield chunk
        finally:
            if hasattr(body, "close"):
                body.close()
            query = environ.get("QUERY_STRING")
            path = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
            print(f"{environ.get('REMOTE_ADDR', '-')} {environ.get('REQUEST_METHOD', '-')} {path} "
                  f"{seen.get('status', '-')} {size} B {1000 * (time.monotonic() - start):.0f} ms",
                  file=self.stream or sys.stderr, flush=True)


def make_server(dash_app, host: str, port: int, verbose: bool = False, threads: int = THREADS,
                max_connections: int = MAX_CONNECTIONS, header_timeout: float = HEADER_TIMEOUT,
                body_timeout: float = BODY_TIMEOUT):
    """A waitress server for ``dash_app`` (already guarded by app.guard.protect), not yet running.

    ``server.run()`` serves until Ctrl+C and returns; ``server.close()`` stops it
    from another thread. ``max_connections``, ``header_timeout`` and ``body_timeout``:
    see the module's docstring (the tests shorten the timeouts).
    """
    import waitress

    sys.setswitchinterval(SWITCH_INTERVAL)  # this process is the server (see the module's docstring)
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer
    from waitress.task import ErrorTask

    headers = list(dash_app.server.wsgi_app.headers)  # the Guard's security headers

    class GuardedErrorTask(ErrorTask):
        def execute(self):
            self.response_headers.extend(headers)
            super().execute()

    class GuardedChannel(HTTPChannel):
        error_task_class = GuardedErrorTask
        request_started = None  # time.monotonic() of the first byte of the request being received

        def received(self, data):
            fresh = self.request is None
            result = super().received(data)
            if self.request is None:  # every request received is complete
                self.request_started = None
            elif fresh or self.request_started is None:
                self.request_started = time.monotonic()
            return result

    wsgi_app = AccessLog(dash_app.server) if verbose else dash_app.server
    server = waitress.create_server(
        wsgi_app, host=host, port=port, threads=threads, ident="scoreviz",
        max_request_body_size=guard.MAX_BODY, clear_untrusted_proxy_headers=True,
        connection_limit=max_connections, channel_timeout=IDLE_TIMEOUT, asyncore_use_poll=True,
        cleanup_interval=1)  # the late requests are looked for every second
    listeners = [server] if isinstance(server, BaseWSGIServer) else [
        s for s in server.map.values() if isinstance(s, BaseWSGIServer)]
    for listener in listeners:  # connections are accepted only once run() starts
        listener.channel_class = GuardedChannel
        listener.maintenance = _closing_late(listener.maintenance, listener, header_timeout, body_timeout)
    if not verbose:
        import logging

        # waitress warns on stderr when callbacks queue up ("Task queue depth is 3"):
        # a page load does that by design.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    return server


def _closing_late(maintenance, listener, header_timeout: float, body_timeout: float):
    """waitress's maintenance (closing idle connections), then closing the connections whose
    request's headers or body are late."""
    def closing(now):
        maintenance(now)
        clock = time.monotonic()
        for channel in list(listener.active_channels.values()):
            started, request = getattr(channel, "request_started", None), channel.request
            if started is None or request is None:
                continue
            limit = body_timeout if request.headers_finished else header_timeout
            if clock - started > limit:
                channel.will_close = True  # closed by waitress's loop at its next turn
    return closing
