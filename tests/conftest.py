"""Fixtures: a real engine, copies of the project to work in, and cleanup by label.

Every image and container the tests make carries the label TEST_LABEL=RUN_ID and a name
starting with `k8s-diag-test-`; the session ends by removing them by label, and checks
that no image the tests did not make was touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from k8sdiag import base, settings

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = uuid.uuid4().hex[:8]
TEST_LABEL = "io.k8s-diagnose.test"
PROJECT_FILES = ("tasks.py", "k8sdiag", "bin", "conf", "docker", "pyproject.toml", ".env.example")
INV = Path(sys.executable).with_name("inv")


@pytest.fixture(scope="session")
def client() -> Iterator[docker.DockerClient]:
    """The real engine; the session fails (never skips) when there is none."""
    try:
        engine = docker.from_env()
        engine.ping()
    except Exception as exc:
        pytest.exit(f"no Docker engine answers ({exc}); run scripts/bootstrap engine", 3)
    before = _tags(engine)
    yield engine
    _remove_labelled(engine)
    after = _tags(engine)
    changed = {tag for tag, image_id in before.items() if after.get(tag) != image_id}
    assert not changed, f"tests changed or removed images they did not make: {changed}"


def _tags(engine: docker.DockerClient) -> dict[str, str]:
    return {tag: image["Id"] for image in engine.api.images()
            for tag in image.get("RepoTags") or [] if not tag.startswith("k8s-diag-test-")}


def _remove_labelled(engine: docker.DockerClient) -> None:
    label = f"{TEST_LABEL}={RUN_ID}"
    for container in engine.api.containers(all=True, filters={"label": label}):
        engine.api.remove_container(container["Id"], force=True, v=True)
    for network in engine.api.networks(filters={"label": label}):
        engine.api.remove_network(network["Id"])
    pending = [image["Id"] for image in engine.api.images(filters={"label": label})]
    for _ in range(3):  # a parent goes only after its children: retry what was refused
        refused = []
        for image in pending:
            try:
                engine.api.remove_image(image, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                refused.append(image)
        pending = refused


@pytest.fixture(scope="session")
def base_image(client: docker.DockerClient) -> str:
    """The configured base image, made once if it is not here (never removed: it is shared)."""
    reference = settings.load(ROOT, environ={})["BASE_IMAGE"]
    base.ensure(client, reference, print)
    return reference


def make_project(path: Path, name: str, **env: str) -> Path:
    """A copy of the project's build files in `path`, with a .env naming test-only images."""
    path.mkdir(parents=True, exist_ok=True)
    for item in PROJECT_FILES:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, path / item, ignore=shutil.ignore_patterns(
                "__pycache__", "hosts-auth.txt"))
        else:
            shutil.copy2(source, path / item)
    values = {
        "IMAGE_NAME": f"k8s-diag-test-{RUN_ID}-{name}",
        "PRE_IMAGE_NAME": f"k8s-diag-test-{RUN_ID}-{name}-pre",
        "UP_CONTAINER_NAME": f"k8s-diag-test-{RUN_ID}-{name}",
        "IMAGE_LABELS": f"{TEST_LABEL}={RUN_ID}",
        **env,
    }
    (path / ".env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


@pytest.fixture
def project(tmp_path: Path, base_image: str, request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.removeprefix("test_").lower())
    name = name[:40].strip("-")
    return make_project(tmp_path / "project", name)


def clean_environ(**extra: str) -> dict[str, str]:
    """The environment minus every settings key, so the user's own cannot leak into a test."""
    environ = {key: value for key, value in os.environ.items() if key not in settings.BY_NAME}
    environ.update(extra)
    return environ


def inv(project: Path, *args: str, env: dict[str, str] | None = None,
        check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `inv ARGS` in `project` as a user would; with check, a failure shows its output."""
    done = subprocess.run([str(INV), *args], cwd=project, env=clean_environ(**(env or {})),
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"inv {' '.join(args)} exited {done.returncode}:\n"
                    f"{done.stdout}\n{done.stderr}")
    return done


def image_id(client: docker.DockerClient, reference: str) -> str | None:
    try:
        return client.api.inspect_image(reference)["Id"]
    except docker.errors.ImageNotFound:
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dangling(client: docker.DockerClient) -> set[str]:
    return {image["Id"] for image in client.api.images(filters={"dangling": True})}


class Forwarder:
    """The engine listening on a second address: 127.0.0.1:PORT relayed to its unix socket."""

    def __init__(self, target: str = "/var/run/docker.sock"):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                inbound, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            outbound = socket.socket(socket.AF_UNIX)
            outbound.connect(self.target)
            for source, sink in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    relay = Forwarder()
    yield relay
    relay.close()
