"""``python -m lab.deploy.superlink``: Flower's SuperLink, its Control and Runtime APIs local only.

Flower 1.41 serves the Fleet API (SuperNodes), the Control API (register nodes, start and stop
runs) and the Runtime API (the ServerApp's link) on one HTTPS ``host:port``. Without an
account-authentication plugin (an enterprise feature) the Control API trusts whoever reaches
it, so a SuperLink listening on a network address would let any peer on that network register
a SuperNode key or start a run. This launcher runs the unchanged ``flower-superlink`` entry
point after adding one ASGI filter to its app: a request from another host may reach only
``/v1/fleet/...`` (what a SuperNode needs); every other path answers 403 unless the request
comes from this host (loopback or the listen address itself, which a remote peer cannot
complete a TCP handshake from). Jobs from other hosts arrive through the coordinator's job
endpoint (:mod:`lab.deploy.jobs_endpoint`), which authenticates the submitting bank.

What it gives up: nothing Flower does; the patch is tied to Flower 1.41's module layout
(``flwr.superlink.main.create_app``) and fails loudly if it changes.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

#: The only path prefix a remote peer may reach: the Fleet API of SuperNodes.
PEER_PREFIXES = ("/v1/fleet/",)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_local(host: str | None, listen: str) -> bool:
    """Whether a request from ``host`` comes from this machine (loopback or ``listen``)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.is_loopback:
        return True
    try:
        return address == ipaddress.ip_address(listen)
    except ValueError:
        return False


def allowed(host: str | None, path: str, listen: str) -> bool:
    """Whether the SuperLink serves ``path`` to a request from ``host``."""
    return path.startswith(PEER_PREFIXES) or is_local(host, listen)


class PeerFilter:
    """ASGI middleware: remote peers reach the Fleet API only (see the module docstring)."""

    def __init__(self, app: App, listen: str) -> None:
        self.app = app
        self.listen = listen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 403 to a remote peer's request outside the Fleet API; pass the rest on."""
        if scope["type"] == "http":
            client = scope.get("client")
            host = client[0] if client else None
            if not allowed(host, str(scope.get("path", "")), self.listen):
                body = b"this SuperLink serves only its Fleet API to other hosts\n"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def patch(listen: str) -> None:
    """Make every SuperLink app this process creates filter remote peers."""
    from flwr.superlink import main as superlink_main

    create = getattr(superlink_main, "create_app", None)
    if create is None:
        raise RuntimeError(
            "flwr.superlink.main no longer has create_app (Flower 1.41 layout); this launcher "
            "cannot restrict the Control API to this host"
        )

    def create_filtered(*args: Any, **kwargs: Any) -> Any:
        app = create(*args, **kwargs)
        app.add_middleware(PeerFilter, listen=listen)
        return app

    superlink_main.create_app = create_filtered


def main(argv: list[str] | None = None) -> None:
    """Patch the SuperLink app, then run ``flower-superlink`` with the arguments after ``--``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    flower_args = argv[split + 1 :]
    parser = argparse.ArgumentParser(prog="python -m lab.deploy.superlink")
    parser.parse_args(argv[:split])
    host = "127.0.0.1"
    if "--host" in flower_args:
        host = flower_args[flower_args.index("--host") + 1]
    patch(host)
    from flwr.superlink.cli.flower_superlink import flower_superlink

    sys.argv = ["flower-superlink", *flower_args]
    flower_superlink()


if __name__ == "__main__":
    main()
