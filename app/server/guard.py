"""Who may talk to the server, and what it answers with: WSGI middleware.

The app serves every run's config and scores to whoever can reach it, so:

- the ``Host`` header must name this server (``localhost``, ``127.0.0.1``,
  ``[::1]``, the address it was bound to, and for a non-loopback bind this
  machine's name and IP addresses). A web page that rebinds its own domain
  name to 127.0.0.1 (DNS rebinding) sends its own name as ``Host`` and gets
  403 with no data;
- a request body larger than ``MAX_BODY`` is refused with 413 before a byte
  of it is read;
- a callback request (``POST /_dash-update-component``) is checked against the
  app's callbacks (app.server.body) before Dash sees it: anything else is a
  400 with the reason;
- every response carries ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY`` and a Content-Security-Policy that allows only
  this server's own scripts (plus the hash of Dash's one inline script).

It is WSGI middleware around the Flask app's ``wsgi_app``, so it works the same
under Werkzeug's server, waitress, gunicorn or a test client.
"""

from __future__ import annotations

import io
import ipaddress
import json
import socket

from app.server import body as callback_body

# Callback bodies carry the figure of an export request: the largest measured, the
# curves of 50 runs, is 3.2 MB, a 1000-layer gradient heatmap 2.2 MB
# (benchmarks/request_sizes.py). 16 MiB is well above that and far below what would hurt.
MAX_BODY = 16 * 1024 * 1024
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


def content_security_policy(script_hashes) -> str:
    """The CSP the page works under: everything from this server, nothing from elsewhere.

    plotly.js sets inline styles (and injects a stylesheet), so styles may be
    inline; scripts may not, except Dash's one inline bootstrap script, allowed
    by its hash. Images may be data:/blob: URLs (plotly's PNG download, logos).
    """
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'", *script_hashes],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


# ---- hosts --------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True when binding ``host`` serves this machine only (localhost, 127.x, ::1)."""
    name = _strip_brackets(host).lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:  # a host name: loopback only if every address it resolves to is
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback
                               for info in infos)


def allowed_hosts(bind_host: str, extra=()) -> frozenset:
    """Host names the server answers to when bound to ``bind_host``.

    Loopback names always; the bind address itself; ``extra`` (``--allow-host``).
    A non-loopback bind is meant to be reached from other machines, by this
    machine's name or address, so those are added too (IP addresses are checked
    in :func:`host_allowed`: no DNS rebinding can produce an IP literal).
    """
    names = {*LOOPBACK_NAMES, _strip_brackets(bind_host).lower(), *(h.lower().rstrip(".") for h in extra)}
    if not is_loopback(bind_host):
        for name in (socket.gethostname(), socket.getfqdn()):
            names.add(name.lower().rstrip("."))
    names.discard("")
    return frozenset(names)


def host_allowed(header, allowed: frozenset, any_ip: bool) -> bool:
    """Whether a ``Host`` header (``name``, ``name:port``, ``[v6]:port``) names this server."""
    name = host_name(header)
    if name is None:
        return False
    if name in allowed:
        return True
    if any_ip:
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False
    return False


def host_name(header) -> str | None:
    """The name part of a Host header, lower case, without port or trailing dot; None if malformed."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        name, rest = header[1:end], header[end + 1:]
        if end < 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, colon, port = header.partition(":")
        if colon and not port.isdigit():
            return None
    name = name[:-1] if name.endswith(".") else name
    return name or None


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


# ---- the middleware ---------------------------------------------------------------


class Guard:
    """WSGI middleware applying the rules in this module's docstring to every request."""

    def __init__(self, wsgi_app, dash_app, bind_host: str = "127.0.0.1", extra_hosts=(),
                 max_body: int = MAX_BODY, kinds=None):
        self.wsgi_app = wsgi_app
        self.kinds = dict(kinds or {})
        self.dash_app = dash_app
        self.allowed = allowed_hosts(bind_host, extra_hosts)
        self.any_ip = not is_loopback(bind_host)
        self.max_body = max_body
        self.callback_path = dash_app.config.routes_pathname_prefix + "_dash-update-component"
        self.headers = list(SECURITY_HEADERS) + [
            ("Content-Security-Policy", content_security_policy(dash_app.csp_hashes()))]

    def __call__(self, environ, start_response):
        def with_headers(status, headers, exc_info=None):
            present = {name.lower() for name, _ in headers}
            headers = list(headers) + [h for h in self.headers if h[0].lower() not in present]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        if not host_allowed(environ.get("HTTP_HOST"), self.allowed, self.any_ip):
            return _refuse(with_headers, 403, "Forbidden",
                           "this server answers only to the host names it serves "
                           "(localhost, 127.0.0.1, [::1] and its --host / --allow-host)")
        length = _content_length(environ)
        if length == -1:
            return _refuse(with_headers, 400, "Bad Request", "malformed Content-Length")
        if length is not None and length > self.max_body:
            return _refuse(with_headers, 413, "Request Entity Too Large",
                           f"request body over {self.max_body} bytes")
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO") == self.callback_path:
            body = _read_body(environ, length, self.max_body)
            if body is None:
                return _refuse(with_headers, 413, "Request Entity Too Large",
                               f"request body over {self.max_body} bytes")
            try:
                callback_body.check(body, self.dash_app.callback_map, self.kinds)
            except callback_body.BadCallback as err:
                return _refuse(with_headers, 400, "Bad Request", f"bad callback request: {err}")
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ["wsgi.input_terminated"] = False
        return self.wsgi_app(environ, with_headers)


def protect(dash_app, bind_host: str = "127.0.0.1", extra_hosts=(), max_body: int = MAX_BODY, kinds=None):
    """Put :class:`Guard` in front of ``dash_app``'s Flask server (call after the callbacks exist);
    ``kinds`` declares what each component property a callback reads holds (app.server.body)."""
    server = dash_app.server
    server.config["MAX_CONTENT_LENGTH"] = max_body  # a second fence, for Flask's own parsing
    server.wsgi_app = Guard(server.wsgi_app, dash_app, bind_host, extra_hosts, max_body, kinds)
    return dash_app


def _content_length(environ):
    """The declared body length; None when there is none (chunked or no body); -1 if malformed."""
    raw = environ.get("CONTENT_LENGTH")
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        return -1
    return value if value >= 0 else -1


def _read_body(environ, length, limit):
    """The body, read with ``limit`` enforced as it arrives; None when it is over the limit."""
    stream = environ["wsgi.input"]
    if length is not None:
        return stream.read(length)
    chunks, total = [], 0
    while True:  # chunked: only as much as the limit allows
        chunk = stream.read(min(65536, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            return None


def _refuse(start_response, code: int, reason: str, message: str):
    body = json.dumps({"error": message}).encode()
    start_response(f"{code} {reason}", [("Content-Type", "application/json"),
                                        ("Content-Length", str(len(body)))])
    return [body]
