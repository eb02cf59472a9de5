"""The scoring service behind `gamma-iqa serve`: HTTP on FastAPI and uvicorn, Prometheus metrics, dynamic batching.

Needs the optional extra `gamma-iqa[serve]` (fastapi, uvicorn, python-multipart, prometheus-client); nothing else in
the package imports this subpackage (the command line does, when `serve` runs). The routes, the path of an image and
the status codes are described in `app`.

Modules, each owning one concern:
    limits: `Limits`, `ServiceError`, and which hosts need a token (`is_loopback`, `check_host`).
    options: a request's options (scene, crops, seed, details), checked as `gamma-iqa score` checks its flags.
    metrics: the Prometheus metrics (prometheus_client).
    worker: the device worker thread that merges the images of all requests into the model's forwards.
    app: `Service`, the ASGI application (FastAPI): refusals, admission to the queue, the routes.
    server: the uvicorn server (`bind`, `make_server`, `serve`) and its drain on SIGTERM or SIGINT.
"""

from __future__ import annotations

from .app import Service
from .limits import Limits, ServiceError, check_host, is_loopback
from .server import bind, make_server, serve

__all__ = ["Limits", "Service", "ServiceError", "bind", "check_host", "is_loopback", "make_server", "serve"]
