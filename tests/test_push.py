"""`inv push` against a real registry (Debian's docker-registry, htpasswd) on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import INV, RUN_ID, TEST_LABEL, clean_environ, free_port, image_id, inv, make_project

pytestmark = pytest.mark.slow

USER = "release"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"



class Registry:
    """docker-registry on a free loopback port, with htpasswd auth and its own storage."""

    def __init__(self, root: Path, *, read_only: bool = False):
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.password = uuid.uuid4().hex
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["htpasswd", "-i", "-B", "-c", str(root / "htpasswd"), USER],
                       input=self.password, text=True, check=True, capture_output=True)
        maintenance = "  maintenance:\n    readonly:\n      enabled: true\n" if read_only else ""
        (root / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n{maintenance}"
            f"http:\n  addr: {self.address}\n  secret: {uuid.uuid4().hex}\n"
            f"auth:\n  htpasswd:\n    realm: test\n    path: {root / 'htpasswd'}\n"
        )
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(self.root / "config.yml")],
            stdout=(self.root / "log").open("ab"), stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not start: {(self.root / 'log').read_text()}")

    def stop(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()
            self.process = None

    def digest(self, repository: str, tag: str) -> str:
        answer = requests.head(f"http://{self.address}/v2/{repository}/manifests/{tag}",
                               headers={"Accept": MANIFEST_V2}, auth=(USER, self.password),
                               timeout=10)
        answer.raise_for_status()
        return answer.headers["Docker-Content-Digest"]

    def env(self, **extra: str) -> dict[str, str]:
        return {"REGISTRY": self.address, "REGISTRY_USERNAME": USER,
                "REGISTRY_PASSWORD": self.password, **extra}


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[Registry]:
    server = Registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture
def docker_config(tmp_path) -> Path:
    """An empty Docker client config, so the user's own logins play no part."""
    path = tmp_path / "docker-config"
    path.mkdir()
    return path


def final_name(project: Path) -> str:
    return dict(line.split("=", 1) for line in (project / ".env").read_text().splitlines())[
        "IMAGE_NAME"]


def test_push_verifies_the_digest_and_the_image_comes_back(client, project, registry,
                                                           docker_config):
    done = inv(project, "push", env=registry.env(DOCKER_CONFIG=str(docker_config)))
    name = final_name(project)
    reference = f"{registry.address}/{name}:latest"
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(f"pushed {reference}@sha256:")
    assert last.endswith("(verified in the registry)")
    assert last.split("@")[1].split()[0] == registry.digest(name, "latest")
    assert registry.password not in done.stdout + done.stderr
    assert list(docker_config.iterdir()) == [], "credentials were written to the Docker config"

    local = image_id(client, f"{name}:latest")
    client.api.remove_image(reference)
    client.api.remove_image(f"{name}:latest")
    client.api.pull(f"{registry.address}/{name}", "latest",
                    auth_config={"username": USER, "password": registry.password})
    assert image_id(client, reference) == local
    output = client.containers.run(reference, ["ssh-trust", "--help"], entrypoint=[],
                                   remove=True, labels={TEST_LABEL: RUN_ID})
    assert output.startswith(b"Usage: ssh-trust")
    client.api.remove_image(reference)


def test_push_uses_the_existing_docker_login(project, registry, docker_config):
    token = base64.b64encode(f"{USER}:{registry.password}".encode()).decode()
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {registry.address: {"auth": token}}}))
    done = inv(project, "push", "--registry", registry.address,
               env={"DOCKER_CONFIG": str(docker_config)})
    assert "(verified in the registry)" in done.stdout


def test_wrong_password_is_one_line_and_loses_nothing(client, project, registry, docker_config):
    inv(project, "all")
    before = image_id(client, f"{final_name(project)}:latest")
    wrong = f"wrong-{uuid.uuid4().hex}"
    done = inv(project, "push", check=False, env=registry.env(
        REGISTRY_PASSWORD=wrong, DOCKER_CONFIG=str(docker_config)))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"push: {registry.address} refused the credentials (REGISTRY_USERNAME from the "
        "environment): check them, or `docker login` again")
    assert wrong not in done.stdout + done.stderr
    assert image_id(client, f"{final_name(project)}:latest") == before


def test_registry_down_is_one_line(client, project, docker_config):
    port = free_port()
    done = inv(project, "push", "--registry", f"127.0.0.1:{port}", check=False,
               env={"REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": "x",
                    "DOCKER_CONFIG": str(docker_config)})
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"push: registry 127.0.0.1:{port} is unreachable (")
    assert "connection refused" in line
    assert image_id(client, f"{final_name(project)}:latest")
    assert image_id(client, f"127.0.0.1:{port}/{final_name(project)}:latest") is None


def test_a_registry_refusing_the_write_is_one_line(project, tmp_path, docker_config):
    read_only = Registry(tmp_path / "read-only", read_only=True)
    try:
        done = inv(project, "push", check=False,
                   env=read_only.env(DOCKER_CONFIG=str(docker_config)))
    finally:
        read_only.stop()
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"push: {read_only.address} refused the write (")
    assert line.endswith("is it read-only, or may this account not push to that name?")


def test_a_push_interrupted_midway_completes_when_run_again(project, tmp_path, docker_config):
    server = Registry(tmp_path / "flaky")
    try:
        command = subprocess.Popen(
            [str(INV), "push"], cwd=project, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_environ(**server.env(DOCKER_CONFIG=str(docker_config))))
        for line in command.stdout:
            if line.strip().endswith(": Pushing"):
                server.stop()
                break
        rest, errors = command.communicate(timeout=300)
        assert command.returncode == 1, rest + errors
        assert "is unreachable" in errors or "failed" in errors
        server.start()
        done = inv(project, "push", env=server.env(DOCKER_CONFIG=str(docker_config)))
        assert "(verified in the registry)" in done.stdout
        digest = done.stdout.strip().splitlines()[-1].split("@")[1].split()[0]
        assert digest == server.digest(final_name(project), "latest")
    finally:
        server.stop()


def test_an_interrupted_push_says_how_to_finish(project, registry, docker_config):
    command = subprocess.Popen(
        [str(INV), "push"], cwd=project, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_environ(**registry.env(DOCKER_CONFIG=str(docker_config))))
    for line in command.stdout:
        if line.startswith("pushing "):
            command.send_signal(signal.SIGINT)
            break
    _, errors = command.communicate(timeout=120)
    assert command.returncode == 130
    assert errors.strip() == "push: interrupted; run it again to finish"


def test_the_pre_image_is_pulled_instead_of_built(client, tmp_path, registry, docker_config,
                                                  base_image):
    env = registry.env(DOCKER_CONFIG=str(docker_config))
    project = make_project(tmp_path / "shared", "shared")
    inv(project, "push", "--pre", env=env)
    inv(project, "cleanup")

    done = inv(project, "all", env=env)
    before_pull, _, after_pull = done.stdout.partition(" pulled from ")
    assert after_pull, done.stdout
    assert "Step " not in before_pull, "the pre image was built, not pulled"
    assert re.search(r" built \(\w+\) on \S+ pulled, in ", done.stdout.splitlines()[-1])

    dockerfile = project / "docker" / "Dockerfile.pre"
    dockerfile.write_text(dockerfile.read_text() + "ENV K8S_DIAG_UNSHARED=1\n")
    done = inv(project, "all", env=env)
    assert "not pulled (" in done.stdout and "building it here" in done.stdout
    assert "Step " in done.stdout


def test_an_unreachable_registry_still_builds_the_pre_image(tmp_path, docker_config, base_image):
    project = make_project(tmp_path / "offline", "offline")
    done = inv(project, "pre-build-image", env={
        "REGISTRY": f"127.0.0.1:{free_port()}", "DOCKER_CONFIG": str(docker_config)})
    assert "not pulled (" in done.stdout and "building it here" in done.stdout
