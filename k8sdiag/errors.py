"""Expected failures, and the one place that turns engine errors into a line a user can act on."""

from __future__ import annotations

import docker.errors
import requests.exceptions


class Failure(Exception):
    """A failure the user can fix; shown as one line, never as a traceback."""


def engine_unreachable(address: str) -> Failure:
    return Failure(
        f"Cannot connect to the Docker engine at {address}: is it running? "
        "Start it (as root on Debian: scripts/bootstrap engine), "
        "or point DOCKER_HOST or `docker context use` at one that is."
    )


def explain(exc: BaseException, address: str) -> Failure | None:
    """Map a docker-py/requests error to a Failure, or None when it is a bug to report."""
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return engine_unreachable(address)
    if isinstance(exc, docker.errors.DockerException) and not isinstance(
        exc, docker.errors.APIError
    ):
        text = str(exc)
        if "Error while fetching server API version" in text or "Connection" in text:
            return engine_unreachable(address)
        return Failure(text)
    if isinstance(exc, docker.errors.APIError):
        return Failure(f"Docker engine at {address} refused: {exc.explanation or exc}")
    return None
