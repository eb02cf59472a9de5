"""The service's limits and the errors it answers: `Limits`, `ServiceError`, and which hosts need a token.

Imports none of the serve extra's libraries (the command line checks the host before anything else loads).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["DEFAULT_CROPS", "Limits", "ServiceError", "TooLarge", "check_host", "is_loopback"]

DEFAULT_CROPS = 10  # the crops of an image as `--max-queue` counts images (the default of `crops`)


@dataclass(frozen=True)
class Limits:
    """The service's limits and batching settings.

    The queue is measured in crops, so that the admitted work is bounded whatever the requests' crop counts: it holds
    `max_queue` images at the default 10 crops (an image of n crops counts n, "center" 1, "none" its whole view's
    pixels / crop side squared, at least 1), and a request at most `max_queue` images. Once the device worker has
    measured its rate (seconds per crop, a moving average), a request whose expected wait passes `timeout` is refused
    at once instead of being admitted to time out.

    Attributes:
        max_body_mb: largest request body, in MiB (413 above).
        max_queue: images (at 10 crops each) admitted and not yet answered, all requests together (a request that
            would pass it gets 503; one with more images than this, or more crops than this many images', 413).
        timeout: seconds a request waits for its rows (504 after; 503 or 413 at once when the measured rate says it
            would).
        batch_size: most images the device worker takes from its queue for one round of forwards.
        max_wait_ms: milliseconds the device worker waits for more images when its last forward would be padded.
        retry_after: seconds a 503 asks the client to wait (its Retry-After header) before the rate is measured, and
            while the server drains.
        max_crops: most crops per image a request may ask for (422 above).
        max_pixels: most pixels (width x height) of an uploaded image; a larger one is not decoded (its row's error).
    """

    max_body_mb: float = 64.0
    max_queue: int = 256
    timeout: float = 60.0
    batch_size: int = 32
    max_wait_ms: float = 5.0
    retry_after: int = 1
    max_crops: int = 64
    max_pixels: int = 100_000_000

    def __post_init__(self) -> None:
        """Check the values.

        Raises:
            ValueError: a value out of range (names its parameter).
        """
        for name in ("max_body_mb", "timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}")
        for name in ("max_queue", "batch_size", "max_crops", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"`max_wait_ms` must be >= 0, got {self.max_wait_ms}")

    @property
    def max_body(self) -> int:
        """The body limit in bytes."""
        return int(self.max_body_mb * (1 << 20))


class ServiceError(Exception):
    """A request the service answers with an error: its HTTP status, one-line message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """An error answered with `status` and {"error": `message`}."""
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class TooLarge(Exception):
    """Raised while reading a body that passes the limit (a body without Content-Length, or a lying one)."""


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine: `localhost` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_host(host: str, token: str | None) -> None:
    """Refuse to serve on a host reachable from other machines without a bearer token.

    Raises:
        ValueError: `token` is given but blank (whitespace only: no client could send it), or `host` is not a loopback
            address and `token` is empty (names both).
    """
    if token is not None and token != "" and not token.strip():
        raise ValueError("`token` is blank: give a token of visible characters, or none on a loopback `host`")
    if not token and not is_loopback(host):
        raise ValueError(
            f"`host` {host} is reachable from other machines: give a `token` (or set GAMMA_IQA_TOKEN) that clients "
            "send as 'Authorization: Bearer TOKEN'"
        )
