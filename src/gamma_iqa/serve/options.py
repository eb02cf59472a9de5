"""A request's options (scene, crops, seed, details) from its query parameters and form fields, checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..data.transforms import Crops, parse_crops, parse_seed
from .limits import ServiceError

__all__ = ["OPTIONS", "Options", "parse_options"]

OPTIONS = ("scene", "crops", "seed", "details")  # the request's parameters, as `gamma-iqa score`'s flags


@dataclass(frozen=True)
class Options:
    """A request's options, checked: scene (None: the model's default), crop mode, seed, and details."""

    scene: str | None = None
    crops: Crops = 10
    seed: int = 0
    details: bool = False


def _collect_options(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The option values of a request's query parameters and form fields, each given once.

    Raises:
        ServiceError: 422 for an unknown parameter or one given twice.
    """
    values: dict[str, str] = {}
    for key, value in pairs:
        if key not in OPTIONS:
            raise ServiceError(
                422,
                f"unknown parameter {key!r}: the options are {', '.join(OPTIONS)}; images go in file parts "
                "(with a filename) or as the raw body",
            )
        if key in values:
            raise ServiceError(422, f"`{key}` is given more than once")
        values[key] = value
    return values


def parse_options(pairs: Sequence[tuple[str, str]], max_crops: int) -> Options:
    """The checked options of (name, value) pairs, as `gamma-iqa score` checks its flags, at most `max_crops` crops.

    Raises:
        ServiceError: 422 with the message of the bad value.
    """
    values = _collect_options(pairs)
    if values.get("scene") == "":
        raise ServiceError(422, "`scene` is empty: give a scene name, or leave the parameter out for the default")
    try:
        crops = parse_crops(values.get("crops", "10"), most=None)  # the server's own limit, in its terms, below
    except ValueError as e:
        raise ServiceError(422, str(e)) from None
    if isinstance(crops, int) and crops > max_crops:
        raise ServiceError(
            422, f"`crops` {crops} is over the server's limit of {max_crops} crops per image (--max-crops)"
        )
    try:  # what `gamma-iqa score --seed` takes: "+5" and " 5" too, not "--5", "1.5", "7_0" or "²"
        number = parse_seed(values.get("seed", "0"))
    except ValueError as e:
        raise ServiceError(422, str(e)) from None
    details = values.get("details", "false").lower()
    if details not in ("1", "true", "yes", "0", "false", "no"):
        raise ServiceError(422, f"`details` must be true or false, got {values['details']!r}")
    return Options(values.get("scene") or None, crops, number, details in ("1", "true", "yes"))
