"""Settings: defaults < .env < process environment < task flags, validated once, up front."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from .errors import Failure

# The grammar of docker/distribution's reference package, without the tag or digest.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*"
_DOMAIN = rf"(?:{_HOST}|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
NAME_RE = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(_TAG)
REFERENCE_RE = re.compile(rf"{NAME_RE.pattern}(?::{_TAG})?(?:@sha256:[0-9a-f]{{64}})?")
REGISTRY_RE = re.compile(rf"{_DOMAIN}(?:/{_COMPONENT})*")
LABEL_KEY_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._/-]*")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _name(value: str) -> str | None:
    if NAME_RE.fullmatch(value) and len(value) <= 255:
        return None
    return "is not a valid image name (lower-case letters, digits, '.', '_', '-', '/'; no tag)"


def _tag(value: str) -> str | None:
    if TAG_RE.fullmatch(value):
        return None
    return "is not a valid tag (letters, digits, '_', '.', '-'; at most 128)"


def _reference(value: str) -> str | None:
    return None if REFERENCE_RE.fullmatch(value) else "is not a valid image reference (name[:tag])"


def _registry(value: str) -> str | None:
    if value == "" or REGISTRY_RE.fullmatch(value):
        return None
    return "is not a valid registry (host[:port][/namespace])"


def _boolean(value: str) -> str | None:
    return None if value.lower() in TRUE + FALSE else "is not a boolean (true or false)"


def _port(value: str) -> str | None:
    ok = value.isdigit() and 0 < int(value) < 65536
    return None if ok else "is not a TCP port (1-65535)"


def _labels(value: str) -> str | None:
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, _ = item.partition("=")
        if not sep or not LABEL_KEY_RE.fullmatch(key):
            return f"has {item!r}, not a key=value label"
    return None


def _anything(value: str) -> str | None:
    return None


@dataclass(frozen=True)
class Key:
    name: str
    default: str
    help: str
    check: Callable[[str], str | None] = _anything
    secret: bool = False


KEYS = (
    Key("IMAGE_NAME", "k8s-diagnose", "final image name, without tag", _name),
    Key("VERSION", "latest", "tag of the final image, and of the pushed one", _tag),
    Key("PRE_IMAGE_NAME", "k8s-diag-pre", "pre image name; its tag names its recipe", _name),
    Key("BASE_IMAGE", "debian:bookworm-slim", "image the pre image starts FROM", _reference),
    Key("REGISTRY", "", "registry to push to and pull pre images from: host[:port][/namespace]",
        _registry),
    Key("REGISTRY_USERNAME", "", "registry user; empty: use the existing `docker login`"),
    Key("REGISTRY_PASSWORD", "", "registry password or token; never printed", secret=True),
    Key("PUSH_PRE", "false", "`inv push` also pushes the pre image under its recipe tag",
        _boolean),
    Key("PULL_PRE", "true", "pre-build-image first tries the registry for this recipe's pre image",
        _boolean),
    Key("IMAGE_LABELS", "", "extra labels for every image and container made: k=v,k=v", _labels),
    Key("UP_CONTAINER_NAME", "k8s-diagnose", "name of the container `inv up` starts", _name),
    Key("UP_BIND_ADDRESS", "127.0.0.1", "host address `inv up` publishes ports on"),
    Key("UP_SSH_PORT", "2222", "host port published for the container's sshd", _port),
    Key("UP_SUPERVISOR_PORT", "9001", "host port of the supervisord console, when on", _port),
    Key("UP_HOSTS_FILE", "conf/hosts-auth.txt", "hosts list mounted read-only by `inv up`"),
    Key("UP_LOGIN_PASSWORD", "", "container's root login password; empty: key login only",
        secret=True),
    Key("UP_SUPERVISOR_USERNAME", "", "supervisord web console user; console off unless both set"),
    Key("UP_SUPERVISOR_PASSWORD", "", "supervisord web console password", secret=True),
)
BY_NAME = {key.name: key for key in KEYS}


class Settings:
    """Resolved settings; `source(NAME)` tells where a value came from."""

    def __init__(self, root: Path, values: dict[str, str], sources: dict[str, str]):
        self.root = root
        self._values = values
        self._sources = sources

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def flag(self, name: str) -> bool:
        return self._values[name].lower() in TRUE

    def source(self, name: str) -> str:
        return self._sources[name]

    @property
    def image(self) -> str:
        return f"{self['IMAGE_NAME']}:{self['VERSION']}"

    @property
    def labels(self) -> dict[str, str]:
        pairs = (part.strip().partition("=") for part in self["IMAGE_LABELS"].split(","))
        return {key: value for key, _, value in pairs if key}

    def registry_name(self, name: str) -> str:
        """`name` as it is known in the registry: REGISTRY/last-component-of-name."""
        if not self["REGISTRY"]:
            raise Failure("REGISTRY is not set: put REGISTRY=host[:port][/namespace] in .env")
        return f"{self['REGISTRY']}/{name.rsplit('/', 1)[-1]}"


def load(
    root: Path,
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every key; raise Failure naming the first bad key and where its value came from."""
    environ = os.environ if environ is None else environ
    env_path = root / ".env"
    values = {key.name: key.default for key in KEYS}
    sources = dict.fromkeys(values, "default")
    if env_path.is_file():
        lines = _line_numbers(env_path)
        for name, value in dotenv_values(env_path).items():
            where = f"{env_path.name} line {lines.get(name, '?')}"
            if name not in BY_NAME:
                guess = difflib.get_close_matches(name, BY_NAME, n=1)
                hint = f" (did you mean {guess[0]}?)" if guess else ""
                raise Failure(f"unknown key {name} in {where}{hint}; see .env.example")
            values[name], sources[name] = value or "", where
    for name in BY_NAME:
        if name in environ:
            values[name], sources[name] = environ[name], "the environment"
    for name, value in (flags or {}).items():
        if value is not None:
            values[name], sources[name] = str(value), "the command line"
    for key in KEYS:
        problem = key.check(values[key.name])
        if problem:
            shown = "(hidden)" if key.secret else repr(values[key.name])
            raise Failure(f"{key.name}={shown} from {sources[key.name]} {problem}")
    return Settings(root, values, sources)


def _line_numbers(path: Path) -> dict[str, int]:
    numbers = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        name = line.strip().removeprefix("export ").split("=", 1)[0].strip()
        if name and not name.startswith("#"):
            numbers[name] = number
    return numbers


def example() -> str:
    """The text of .env.example: every key, its default and what it is for."""
    lines = ["# Copy to .env and change what you need. Precedence:",
             "# defaults < .env < process environment < task flags.", ""]
    for key in KEYS:
        lines += [f"# {key.help}", f"{key.name}={key.default}", ""]
    return "\n".join(lines)
