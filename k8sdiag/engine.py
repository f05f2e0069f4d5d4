"""The one function that makes the Docker client, honouring DOCKER_HOST and Docker contexts."""

from __future__ import annotations

import os

import docker
from docker.context import ContextAPI
from docker.utils import kwargs_from_env

from .errors import Failure, explain

# Long enough for a quiet apt-get step inside a build; a dead engine fails at connect.
TIMEOUT = 600
LOCAL_SOCKET = "unix:///var/run/docker.sock"


def connection() -> dict:
    """Client arguments as the Docker CLI would choose them: DOCKER_HOST, then the context."""
    params = kwargs_from_env()
    if "base_url" not in params:
        name = os.environ.get("DOCKER_CONTEXT")
        if name and name != "default" and ContextAPI.get_context(name) is None:
            raise Failure(f"Docker context {name!r} (from DOCKER_CONTEXT) does not exist: "
                          "see `docker context ls`, or unset DOCKER_CONTEXT")
        params.update(ContextAPI.kwargs_from_context())
    params.setdefault("base_url", LOCAL_SOCKET)
    return params


def address() -> str:
    try:
        return connection()["base_url"]
    except Failure:
        return f"context {os.environ.get('DOCKER_CONTEXT')}"


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
