"""The uvicorn server of a `Service`: binding its socket, starting it, and draining it on SIGTERM or SIGINT."""

from __future__ import annotations

import errno
import socket
import sys
import threading
from typing import Any

import uvicorn

from .app import Service
from .limits import check_host

__all__ = ["bind", "make_server", "serve"]

ABORT_GRACE = 5.0  # seconds a second signal leaves the requests in flight to be answered 503 before it stops anyway


class _Server(uvicorn.Server):
    """uvicorn's server, whose first SIGTERM or SIGINT drains: new requests get 503 while admitted ones finish.

    Once none is left (or after the drain timeout) it stops as uvicorn does. A second signal stops it at once: the
    requests in flight are answered 503 (`Service.abort`) and the server closes without waiting for the device
    worker. The signal is not raised again afterwards (uvicorn's default would), so `run` returns either way.
    """

    def __init__(self, config: uvicorn.Config, service: Service, drain_timeout: float) -> None:
        """A server of `service`, draining for at most `drain_timeout` seconds."""
        super().__init__(config)
        self.service, self.drain_timeout = service, drain_timeout

    def handle_exit(self, sig: int, frame: Any) -> None:
        """Begin the drain (first signal) or stop at once (second)."""
        if self.service.draining:
            if not self.service.aborted:
                self.service.abort()
                threading.Thread(target=self._exit_when_answered, name="gamma-iqa-abort", daemon=True).start()
            return
        self.service.draining = True
        print(
            "gamma-iqa serve: stopping: finishing the requests in flight, refusing new ones (again to stop at once)",
            file=sys.stderr,
        )
        threading.Thread(target=self._exit_when_idle, name="gamma-iqa-drain", daemon=True).start()

    def _exit_when_idle(self) -> None:
        """Stop the server once no request is in flight."""
        self.service.idle.wait(self.drain_timeout)
        self.should_exit = True

    def _exit_when_answered(self) -> None:
        """Stop once the requests in flight have their 503; after `ABORT_GRACE` seconds without waiting for them."""
        self.should_exit = True
        if not self.service.idle.wait(ABORT_GRACE):
            self.force_exit = True

    def bound(self) -> str:
        """The URL the server listens at (the port it was given, or the one bound for port 0)."""
        host, port = self.config.host, self.config.port
        sockets = [sock for server in getattr(self, "servers", []) for sock in server.sockets or ()]
        if sockets:
            port = sockets[0].getsockname()[1]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def startup(self, sockets: list | None = None) -> None:
        """Start, and say where the service listens."""
        await super().startup(sockets)
        if self.started:
            info = self.service.info
            print(
                f"gamma-iqa serve: {info['model']} on {info['device']} at {self.bound()} "
                "(Ctrl-C or SIGTERM stops it after the requests in flight)",
                file=sys.stderr,
            )


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A socket bound to `host`:`port` as uvicorn binds one, for `serve` (checked before a model is loaded).

    Raises:
        ValueError: the port is in use, or the address cannot be listened on (one line naming them).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is in use") from None
        raise ValueError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "warning") -> _Server:
    """A uvicorn server of `service` on `host`:`port` (not started: call its `run`, or `serve`).

    Raises:
        ValueError: a host reachable from other machines without the service's token (`check_host`).
    """
    check_host(host, service.token)
    config = uvicorn.Config(service, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")
    return _Server(config, service, drain_timeout=service.limits.timeout + 5)


def serve(service: Service, host: str = "127.0.0.1", port: int = 8000, sock: socket.socket | None = None) -> bool:
    """Serve until SIGTERM or SIGINT, then drain (see `_Server`) and return.

    Args:
        service: the service.
        host: the address to listen on.
        port: its TCP port (0: any free one; the one bound is printed).
        sock: a socket bound to them already (`bind`); None: bound now.

    Returns:
        True after a drain, False when a second signal stopped it at once.

    Raises:
        ValueError: as `make_server` and `bind`.
    """
    server = make_server(service, host, port)
    server.run(sockets=[sock or bind(host, port)])
    return not service.aborted
