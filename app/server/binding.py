"""Checks before `scoreviz serve` binds: a clear line instead of a traceback or a silent risk.

- ``--debug`` turns on Werkzeug's interactive debugger, which runs any Python a
  visitor types: refused unless the server listens on loopback only;
- a non-loopback ``--host`` (``0.0.0.0``) gets a warning on stderr: every run
  below RUNS_DIR becomes readable by anyone who reaches the port;
- a port that is taken, not allowed, or a host that cannot be resolved is a
  ScorevizError naming it, before Dash starts.
"""

from __future__ import annotations

import errno
import socket
import sys

from app.server.guard import is_loopback
from scoreviz.errors import ScorevizError


def public_warning(host: str, port: int) -> str | None:
    """The warning to print before serving on ``host``; None for a loopback address."""
    if is_loopback(host):
        return None
    return (f"scoreviz: warning: --host {host} is not a loopback address: anyone who can reach this "
            f"machine on port {port} can read every run below the runs folder, configs included (there "
            f"is no login). Where you can, keep the default 127.0.0.1 and use an SSH tunnel: "
            f"ssh -L {port}:127.0.0.1:{port} THIS_MACHINE")


def check(host: str, port: int, debug: bool = False) -> None:
    """Raise ScorevizError if serving on ``host:port`` (with ``debug``) is refused or impossible;
    print the non-loopback warning on stderr."""
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ScorevizError(f"--port {port}: a port is a number from 1 to 65535")
    warning = public_warning(host, port)
    if warning and debug:
        raise ScorevizError(f"--debug with --host {host} refused: debug mode lets anyone who reaches the "
                            "page run code on this machine; use --debug only with a loopback --host "
                            "(127.0.0.1, localhost or ::1)")
    if warning:
        print(warning, file=sys.stderr, flush=True)
    _try_bind(host, port)


def _try_bind(host: str, port: int) -> None:
    """Bind and release ``host:port`` as the server will, so its errors are one clear line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        raise ScorevizError(f"--host {host}: not an address of this machine ({err})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            sock.bind(address)
        except OSError as err:
            reason = {errno.EADDRINUSE: "the port is already in use (another server? pick another --port)",
                      errno.EACCES: "permission denied (ports below 1024 need root)",
                      errno.EADDRNOTAVAIL: "not an address of this machine"}.get(err.errno, err.strerror)
            raise ScorevizError(f"cannot listen on {host}:{port}: {reason}") from None
