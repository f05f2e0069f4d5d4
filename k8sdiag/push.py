"""Release: push to the registry, read the stream to the end, and verify the digest there."""

from __future__ import annotations

import ipaddress
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

import docker
import requests
from docker.errors import APIError, ImageNotFound

from .build import RECIPE, Outcome, Say, inspect, short
from .errors import Failure
from .settings import Settings

MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
VERIFY_TIMEOUT = 15


@dataclass(frozen=True)
class Pushed:
    reference: str
    digest: str


def host_of(registry: str) -> str:
    return registry.split("/", 1)[0]


def credentials(settings: Settings) -> dict | None:
    """REGISTRY_USERNAME/PASSWORD when set, else the user's `docker login` for the host."""
    user, password = settings["REGISTRY_USERNAME"], settings["REGISTRY_PASSWORD"]
    if bool(user) != bool(password):
        missing = "REGISTRY_PASSWORD" if user else "REGISTRY_USERNAME"
        raise Failure(f"{missing} is not set, but its pair is: set both, or neither "
                      "to use your `docker login`")
    if user:
        return {"username": user, "password": password}
    found = docker.auth.load_config().resolve_authconfig(host_of(settings["REGISTRY"]))
    return found or None


def push(client: docker.DockerClient, settings: Settings, image: Outcome, reference: str,
         say: Say, out: TextIO = sys.stdout) -> Pushed:
    """Tag `image` as `reference` in the registry, push it and verify the registry's digest."""
    auth = credentials(settings)
    name, _, tag = reference.rpartition(":")
    tagged_before = inspect(client, reference) is not None
    client.api.tag(image.image_id, name, tag, force=True)
    say(f"pushing {reference} ({short(image.image_id)})")
    progress = Progress(out)
    try:
        stream = client.api.push(name, tag, stream=True, decode=True, auth_config=auth)
        digest = follow(stream, progress, settings)
    except BaseException:
        if not tagged_before:  # leave no registry name behind for a push that did not happen
            client.api.remove_image(reference)
        raise
    if not digest:
        raise Failure(f"the engine ended the push of {reference} without a digest; "
                      "run `inv push` again")
    remote = registry_digest(client, settings, name, tag, auth)
    if remote != digest:
        raise Failure(f"{reference}: the registry answers {remote} for this tag, not the "
                      f"pushed {digest}; someone pushed meanwhile? run `inv push` again")
    return Pushed(reference, digest)


def follow(stream: Iterable[dict], progress: Progress, settings: Settings) -> str:
    """Read the push stream to its end; errors come inside it, not as exceptions."""
    digest = ""
    try:
        for chunk in stream:
            if "errorDetail" in chunk or "error" in chunk:
                message = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                raise explain(message, settings)
            aux = chunk.get("aux") or {}
            digest = aux.get("Digest", digest)
            if chunk.get("id") and chunk.get("status"):
                detail = chunk.get("progressDetail") or {}
                progress.update(chunk["id"], chunk["status"], detail.get("current"),
                                detail.get("total"))
    except requests.exceptions.ConnectionError:
        raise Failure("the engine stopped answering during the push; run `inv push` "
                      "again: layers already pushed are not sent twice") from None
    finally:
        progress.finish()
    return digest


def explain(message: str, settings: Settings) -> Failure:
    registry = settings["REGISTRY"]
    text = message.lower()
    if "unauthorized" in text or "no basic auth credentials" in text or "authentication" in text:
        source = (f"REGISTRY_USERNAME from {settings.source('REGISTRY_USERNAME')}"
                  if settings["REGISTRY_USERNAME"] else "your `docker login`")
        return Failure(f"{registry} refused the credentials ({source}): check them, "
                       "or `docker login` again")
    if any(word in text for word in ("denied", "forbidden", " 405 ", "method not allowed",
                                     "unsupported", "read-only", "readonly")):
        return Failure(f"{registry} refused the write ({message.strip()[:160]}): is it "
                       "read-only, or may this account not push to that name?")
    if any(word in text for word in ("connection refused", "no such host", "i/o timeout",
                                     "dial tcp", "connection reset", "eof", "broken pipe")):
        return Failure(f"registry {registry} is unreachable ({message.strip()[:160]}); "
                       "check REGISTRY and that it is up, then run `inv push` again")
    return Failure(f"push to {registry} failed: {message.strip()}")


class Progress:
    """Per-layer progress: bars redrawn in place on a TTY, one line per state change otherwise."""

    def __init__(self, out: TextIO):
        self.out = out
        self.tty = out.isatty()
        self.layers: dict[str, tuple[str, int | None, int | None]] = {}
        self.drawn = 0
        self.last = 0.0

    def update(self, layer: str, status: str, current: int | None, total: int | None) -> None:
        before = self.layers.get(layer, ("", None, None))[0]
        self.layers[layer] = (status, current, total)
        if self.tty:
            now = time.monotonic()
            if now - self.last > 0.1 or status != before:
                self.last = now
                self.draw()
        elif status != before:
            self.out.write(f"  {layer}: {status}\n")
            self.out.flush()

    def draw(self) -> None:
        lines = []
        for layer, (status, current, total) in self.layers.items():
            if current is not None and total:
                filled = int(30 * min(current, total) / total)
                lines.append(f"  {layer}: {status} [{'#' * filled}{'.' * (30 - filled)}] "
                             f"{current / 1e6:6.1f}/{total / 1e6:.1f} MB")
            else:
                lines.append(f"  {layer}: {status}")
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)

    def finish(self) -> None:
        if self.tty and self.layers:
            self.draw()


def registry_digest(client: docker.DockerClient, settings: Settings, name: str, tag: str,
                    auth: dict | None) -> str:
    """The digest the registry gives for name:tag, asked over its HTTP API."""
    host, _, repository = name.partition("/")
    session = requests.Session()
    basic = (auth["username"], auth["password"]) if auth and auth.get("username") else None
    for scheme in schemes(client, host):
        url = f"{scheme}://{host}/v2/{repository}/manifests/{tag}"
        try:
            answer = _get(session, url, basic)
        except requests.exceptions.SSLError:
            continue
        except requests.exceptions.ConnectionError as exc:
            raise Failure(f"pushed, but {host} did not answer the check ({exc.__class__.__name__})"
                          "; run `inv push` again to verify") from None
        if answer.status_code == 200:
            return answer.headers.get("Docker-Content-Digest", "")
        raise Failure(f"pushed, but {host} answers {answer.status_code} for {repository}:{tag}")
    raise Failure(f"pushed, but {host} could not be asked over https (nor http, which the "
                  "engine would refuse for it too)")


def schemes(client: docker.DockerClient, host: str) -> list[str]:
    """https, then http where the engine itself treats the registry as insecure."""
    config = client.api.info().get("RegistryConfig") or {}
    index = (config.get("IndexConfigs") or {}).get(host) or {}
    insecure = index.get("Secure") is False or _in_cidrs(
        host.rsplit(":", 1)[0], config.get("InsecureRegistryCIDRs") or [])
    return ["https", "http"] if insecure else ["https"]


def _in_cidrs(hostname: str, cidrs: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(socket.gethostbyname(hostname.strip("[]")))
    except (OSError, ValueError):
        return False
    return any(address in ipaddress.ip_network(cidr) for cidr in cidrs)


def _get(session: requests.Session, url: str, basic: tuple[str, str] | None):
    headers = {"Accept": MANIFEST_TYPES}
    answer = session.head(url, headers=headers, auth=basic, timeout=VERIFY_TIMEOUT)
    challenge = answer.headers.get("WWW-Authenticate", "")
    if answer.status_code == 401 and challenge.lower().startswith("bearer "):
        fields = dict(
            part.split("=", 1) for part in challenge[7:].replace('"', "").split(",") if "=" in part
        )
        realm = fields.pop("realm", "")
        token = session.get(realm, params=fields, auth=basic, timeout=VERIFY_TIMEOUT).json()
        headers["Authorization"] = f"Bearer {token.get('token') or token.get('access_token')}"
        answer = session.head(url, headers=headers, timeout=VERIFY_TIMEOUT)
    return answer


def pull_pre(client: docker.DockerClient, settings: Settings, reference: str, say: Say) -> bool:
    """Fetch this recipe's pre image from the registry; False (and why) when it cannot."""
    remote = settings.registry_name(reference)
    name, _, tag = remote.rpartition(":")
    try:
        client.api.pull(name, tag, auth_config=credentials(settings))
    except (APIError, ImageNotFound) as exc:
        reason = (getattr(exc, "explanation", None) or str(exc)).splitlines()[0][:160]
        say(f"{remote}: not pulled ({reason}); building it here")
        return False
    image = inspect(client, remote)
    local, _, local_tag = reference.rpartition(":")
    client.api.tag(image["Id"], local, local_tag, force=True)
    client.api.remove_image(remote)
    recipe = (image["Config"].get("Labels") or {}).get(RECIPE, "")
    say(f"{reference}: pulled from {remote} (recipe {recipe[:16]})")
    return True
