"""The base image: present, pulled, or made with debootstrap from the machine's Debian mirror."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound

from .errors import Failure

SOURCES_DIR = Path("/etc/apt/sources.list.d")
SOURCES_LIST = Path("/etc/apt/sources.list")
# What the official slim images leave out; keeps the pre image's package layer small.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""


def ensure(client: docker.DockerClient, reference: str, say: Callable[[str], None]) -> dict:
    """Inspect the base image, pulling or making it first when it is not here."""
    try:
        return client.api.inspect_image(reference)
    except ImageNotFound:
        pass
    say(f"base image {reference} is not here; pulling it")
    try:
        client.api.pull(reference)
        return client.api.inspect_image(reference)
    except (APIError, ImageNotFound) as exc:
        reason = getattr(exc, "explanation", None) or str(exc)
        say(f"cannot pull {reference} ({reason.splitlines()[0][:120]})")
    return make(client, reference, say)


def suite_of(reference: str) -> str:
    """The Debian suite a reference names: debian:bookworm-slim -> bookworm."""
    match = re.fullmatch(r"(?:[^/]+/)*debian:([a-z]+)(?:-slim)?", reference)
    if not match:
        raise Failure(f"BASE_IMAGE {reference} is not here and cannot be pulled; only "
                      "debian:SUITE[-slim] can be made here: set BASE_IMAGE, or load the image")
    return match.group(1)


def stanzas(suite: str) -> list[dict[str, str]]:
    """The machine's apt sources for `suite` and its -updates/-security, as deb822 fields."""
    found = []
    for path in sorted(SOURCES_DIR.glob("*.sources")):
        for block in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(
                (key.strip(), value.strip())
                for key, _, value in (
                    line.partition(":") for line in block.splitlines()
                    if line.strip() and not line.lstrip().startswith("#") and ":" in line
                )
            )
            suites = [s for s in fields.get("Suites", "").split() if s.split("-")[0] == suite]
            if fields.get("Types", "deb").split()[0] == "deb" and fields.get("URIs") and suites:
                fields["Suites"] = " ".join(suites)
                found.append(fields)
    if not found and SOURCES_LIST.is_file():
        for line in SOURCES_LIST.read_text().splitlines():
            words = line.split()
            if len(words) >= 4 and words[0] == "deb" and words[2].split("-")[0] == suite:
                found.append({"Types": "deb", "URIs": words[1], "Suites": words[2],
                              "Components": " ".join(words[3:])})
    return found


def mirror(suite: str) -> tuple[str, list[dict[str, str]]]:
    sources = stanzas(suite)
    for fields in sources:
        if suite in fields["Suites"].split():
            return fields["URIs"].split()[0], sources
    raise Failure(f"no Debian mirror for {suite} in {SOURCES_DIR}: add one, "
                  "or set BASE_IMAGE to an image you have")


def make(client: docker.DockerClient, reference: str, say: Callable[[str], None]) -> dict:
    """debootstrap a minimal Debian and import it as `reference`."""
    suite = suite_of(reference)
    url, sources = mirror(suite)
    if os.geteuid() != 0:
        raise Failure(f"making {reference} with debootstrap needs root: run as root, "
                      "or load a base image and set BASE_IMAGE")
    if not shutil.which("debootstrap"):
        raise Failure("debootstrap is not installed: apt-get install debootstrap "
                      "(scripts/bootstrap does it)")
    say(f"making {reference} with debootstrap from {url} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="k8s-diag-base-", dir="/var/tmp") as tmp:
        root = Path(tmp, "rootfs")
        _run(["debootstrap", "--variant=minbase", suite, str(root), url], "debootstrap")
        _configure(root, sources)
        tarball = Path(tmp, "rootfs.tar")
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."],
             "tar")
        name, _, tag = reference.rpartition(":")
        client.api.import_image(src=str(tarball), repository=name, tag=tag, changes=[
            'CMD ["bash"]',
            f"LABEL io.k8s-diagnose.base=debootstrap-{suite}",
        ])
    say(f"made {reference}")
    return client.api.inspect_image(reference)


def _configure(root: Path, sources: list[dict[str, str]]) -> None:
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    text = "\n".join("".join(f"{key}: {value}\n" for key, value in fields.items())
                     for fields in sources)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(text)
    (root / "etc/dpkg/dpkg.cfg.d/docker-slim").write_text(DPKG_EXCLUDES)
    for leftover in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
        for path in (root / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    (root / "etc/hostname").write_text("localhost\n")


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise Failure(f"{what} failed ({done.returncode}): {' / '.join(tail)}")
