"""Running the image the way the seed's docker-compose did: one container, ports on loopback."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import docker
from docker.errors import APIError, NotFound

from .build import ROLE, Outcome
from .errors import Failure
from .settings import Settings

HOSTS_IN_CONTAINER = "/k8s-diagnose/conf/hosts-auth.txt"
RUNTIME_SECRETS = ("UP_LOGIN_PASSWORD", "UP_SUPERVISOR_USERNAME", "UP_SUPERVISOR_PASSWORD")


def container(client: docker.DockerClient, settings: Settings) -> dict | None:
    try:
        return client.api.inspect_container(settings["UP_CONTAINER_NAME"])
    except NotFound:
        return None


def up(client: docker.DockerClient, settings: Settings, image: Outcome,
       say: Callable[[str], None]) -> None:
    """Start the container from `image`, replacing one that runs an older image."""
    name = settings["UP_CONTAINER_NAME"]
    current = container(client, settings)
    if current and current["Image"] == image.image_id and current["State"]["Running"]:
        say(f"{name} is already up on {image.reference}")
        return
    if current:
        say(f"{name}: replacing the container (its image changed or it is stopped)")
        client.api.remove_container(current["Id"], force=True)
    environment = {key.removeprefix("UP_"): settings[key]
                   for key in RUNTIME_SECRETS if settings[key]}
    ports = {"22/tcp": (settings["UP_BIND_ADDRESS"], int(settings["UP_SSH_PORT"]))}
    if settings["UP_SUPERVISOR_USERNAME"] and settings["UP_SUPERVISOR_PASSWORD"]:
        ports["9001/tcp"] = (settings["UP_BIND_ADDRESS"], int(settings["UP_SUPERVISOR_PORT"]))
    binds = {}
    hosts = Path(settings.root, settings["UP_HOSTS_FILE"])
    if hosts.is_file():
        binds[str(hosts.resolve())] = {"bind": HOSTS_IN_CONTAINER, "mode": "ro"}
    else:
        say(f"no hosts file at {settings['UP_HOSTS_FILE']}: copy conf/hosts-auth.sample.txt "
            "there (chmod 600) to use ssh-trust inside")
    created = client.api.create_container(
        image.reference, name=name, hostname=name, environment=environment,
        labels={**settings.labels, ROLE: "container"}, ports=list(ports),
        host_config=client.api.create_host_config(port_bindings=ports, binds=binds),
    )
    try:
        client.api.start(created["Id"])
    except APIError as exc:
        client.api.remove_container(created["Id"], force=True)
        raise Failure(f"{name} did not start: {exc.explanation}; "
                      "a port in use? set UP_SSH_PORT or UP_BIND_ADDRESS") from None
    published = ", ".join(f"{address}:{port}->{inner}"
                          for inner, (address, port) in ports.items())
    say(f"{name} is up on {image.reference} ({published}); `inv shell` for a shell inside")


def down(client: docker.DockerClient, settings: Settings, say: Callable[[str], None]) -> None:
    current = container(client, settings)
    if current is None:
        say(f"{settings['UP_CONTAINER_NAME']} is not there, nothing to stop")
        return
    client.api.stop(current["Id"], timeout=10)
    client.api.remove_container(current["Id"], v=True)
    say(f"{settings['UP_CONTAINER_NAME']} stopped and removed")


def shell(client: docker.DockerClient, settings: Settings, command: str = "") -> None:
    """Replace this process with `docker exec` into the running container."""
    current = container(client, settings)
    if current is None or not current["State"]["Running"]:
        raise Failure(f"{settings['UP_CONTAINER_NAME']} is not running: start it with `inv up`")
    cli = shutil.which("docker")
    if cli is None:
        raise Failure("the docker command is needed for a shell: apt-get install docker.io")
    flags = "-it" if sys.stdin.isatty() else "-i"
    inside = ["bash", "-lc", command] if command else ["bash", "-l"]
    sys.stdout.flush()
    os.execv(cli, [cli, "exec", flags, settings["UP_CONTAINER_NAME"], *inside])
