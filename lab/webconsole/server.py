"""Run the console: a threaded WSGI server (Werkzeug's) on 127.0.0.1 only."""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

from werkzeug.serving import BaseWSGIServer, make_server

from lab.webconsole.config import HOST, ConsoleConfig
from lab.webconsole.errors import ConsoleSetupError
from lab.webconsole.sources import Sources
from lab.webconsole.users import UserStore

logger = logging.getLogger(__name__)


def check_port(port: int) -> int:
    """``port`` if it is one (0: any free port).

    Raises
    ------
    ConsoleSetupError
        Outside 0-65535.
    """
    if not 0 <= port <= 65535:
        raise ConsoleSetupError(f"--port {port} is not a TCP port; use 1-65535 (or 0: any free)")
    return port


def build_server(config: ConsoleConfig, port: int) -> tuple[BaseWSGIServer, Sources]:
    """The server bound to ``127.0.0.1:port`` (not yet serving) and its data sources.

    Raises
    ------
    ConsoleSetupError
        No home, no users, or the port is taken.
    """
    from lab.webconsole.app import create_app

    if not config.home.is_dir():
        raise ConsoleSetupError(
            f"no lab home at {config.home}: pass --home DIR (or set LAB_HOME) to a home that "
            "exists, e.g. the demo's after `make demo` (~/.lab)"
        )
    users = UserStore(config.users_dir)
    sources = Sources(config)
    app = create_app(config, users, sources)
    try:
        server = make_server(HOST, check_port(port), app, threaded=True)
    except OSError as exc:
        raise ConsoleSetupError(
            f"cannot listen on {HOST}:{port} ({exc.strerror}); choose another --port"
        ) from exc
    return server, sources


def serve(config: ConsoleConfig, port: int) -> None:
    """Serve until SIGINT or SIGTERM; warm the audit index and start verifying the chain first."""
    server, sources = build_server(config, port)
    sources.index.refresh()
    sources.verifier.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(
        f"lab console on http://{HOST}:{server.server_port} (home {config.home}; users of "
        f"{config.users_dir}; pid {os.getpid()}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
