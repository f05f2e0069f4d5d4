"""The one function that makes the Docker client, honouring DOCKER_HOST and Docker contexts."""

from __future__ import annotations

import docker
from docker.context import ContextAPI
from docker.utils import kwargs_from_env

from .errors import explain

# Long enough for a quiet apt-get step inside a build; a dead engine fails at connect.
TIMEOUT = 600
LOCAL_SOCKET = "unix:///var/run/docker.sock"


def connection() -> dict:
    """Client arguments as the Docker CLI would choose them: DOCKER_HOST, then the context."""
    params = kwargs_from_env()
    if "base_url" not in params:
        params.update(ContextAPI.kwargs_from_context())
    params.setdefault("base_url", LOCAL_SOCKET)
    return params


def address() -> str:
    return connection()["base_url"]


def client() -> docker.DockerClient:
    """A client that has already spoken to the engine once (API version negotiation)."""
    params = connection()
    try:
        return docker.DockerClient(timeout=TIMEOUT, **params)
    except Exception as exc:
        failure = explain(exc, params["base_url"])
        if failure is None:
            raise
        raise failure from None
