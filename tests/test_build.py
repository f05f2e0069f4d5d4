"""The two-step build against the real engine: reuse, rebuilds, no-ops, failures, cleanup."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess

import pytest
from conftest import RUN_ID, TEST_LABEL, dangling, image_id, inv, make_project

pytestmark = pytest.mark.slow


def names(project) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (project / ".env").read_text().splitlines())


def pre_images(client, project) -> list[str]:
    return [tag for image in client.api.images(name=names(project)["PRE_IMAGE_NAME"])
            for tag in image["RepoTags"]]


def test_all_builds_both_steps_then_reuses_the_pre_image(client, project):
    first = inv(project, "all")
    final = f"{names(project)['IMAGE_NAME']}:latest"
    assert re.search(rf"^{re.escape(final)} built \(\w+\) on .*-pre:\w+ (built|reused), in ",
                     first.stdout.splitlines()[-1])
    [pre] = pre_images(client, project)
    pre_id = image_id(client, pre)

    again = inv(project, "pre-build-image")
    assert "Step " not in again.stdout
    assert again.stdout.strip() == f"{pre} reused ({pre_id[7:19]})"
    assert image_id(client, pre) == pre_id


def test_a_noop_all_says_up_to_date_and_builds_nothing(client, project):
    inv(project, "all")
    final = f"{names(project)['IMAGE_NAME']}:latest"
    before = image_id(client, final)
    again = inv(project)  # `all` is the default task
    assert "Step " not in again.stdout
    assert f"{final} up to date" in again.stdout
    assert image_id(client, final) == before


def test_a_script_edit_rebuilds_only_the_final_image_and_leaves_no_dangling_image(
        client, project):
    inv(project, "all")
    final = f"{names(project)['IMAGE_NAME']}:latest"
    before, spare = image_id(client, final), dangling(client)
    with (project / "bin" / "ssh-trust").open("a") as script:
        script.write("# edited\n")
    done = inv(project, "all")
    assert "reused" in done.stdout and " built (" in done.stdout
    assert image_id(client, final) != before
    assert image_id(client, before) is None, "the replaced final image is left behind"
    assert dangling(client) <= spare
    output = client.containers.run(final, ["tail", "-n1", "/k8s-diagnose/bin/ssh-trust"],
                                   entrypoint=[], remove=True, labels={TEST_LABEL: RUN_ID})
    assert output == b"# edited\n"


def test_the_final_image_carries_oci_labels_and_no_secret(client, project):
    (project / "conf" / "hosts-auth.txt").write_text("node1 root hunter2\n")
    inv(project, "all", "--version", "1.2.3")
    final = f"{names(project)['IMAGE_NAME']}:1.2.3"
    labels = client.api.inspect_image(final)["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "1.2.3"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00",
                        labels["org.opencontainers.image.created"])
    assert "org.opencontainers.image.revision" in labels
    listing = client.containers.run(
        final, ["sh", "-c", "ls /k8s-diagnose/conf; grep -rl hunter2 / --exclude-dir=proc "
                "--exclude-dir=sys 2>/dev/null; ls /etc/ssh"],
        entrypoint=[], remove=True, labels={TEST_LABEL: RUN_ID}).decode()
    assert "hosts-auth.sample.txt" in listing
    assert "hosts-auth.txt\n" not in listing and "hunter2" not in listing
    assert "ssh_host_" not in listing, "host keys are baked into the image"


def test_the_revision_label_follows_git(client, project):
    def git(*args):
        return subprocess.run(["git", *args], cwd=project, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x")
    git("add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "y")
    inv(project, "all")
    final = f"{names(project)['IMAGE_NAME']}:latest"
    head = git("rev-parse", "HEAD")
    labels = client.api.inspect_image(final)["Config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == head
    (project / "bin" / "ssh-trust").write_text("#!/bin/sh\n")
    inv(project, "all")
    labels = client.api.inspect_image(final)["Config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == f"{head}-dirty"


def test_a_recipe_change_rebuilds_the_pre_image_and_says_why(client, project):
    inv(project, "all")
    [old] = pre_images(client, project)
    dockerfile = project / "docker" / "Dockerfile.pre"
    dockerfile.write_text(dockerfile.read_text() + "ENV K8S_DIAG_TEST=1\n")
    done = inv(project, "all")
    assert "the pre image is out of date (docker/Dockerfile.pre changed); rebuilding" in done.stdout
    [new] = pre_images(client, project)
    assert new != old
    env = client.api.inspect_image(f"{names(project)['IMAGE_NAME']}:latest")["Config"]["Env"]
    assert "K8S_DIAG_TEST=1" in env


def test_another_base_image_setting_rebuilds_the_pre_image(client, project, base_image):
    inv(project, "all")
    other = f"k8s-diag-test-{RUN_ID}-base:one"
    client.api.tag(base_image, *other.split(":"))
    try:
        done = inv(project, "pre-build-image", "--base-image", other)
        assert "out of date (its build arguments changed); rebuilding" in done.stdout
    finally:
        client.api.remove_image(other)


def test_a_changed_base_image_is_never_used_silently(client, project, base_image):
    moving = f"k8s-diag-test-{RUN_ID}-base:moving"
    client.api.tag(base_image, *moving.split(":"))
    project.joinpath(".env").write_text(
        project.joinpath(".env").read_text() + f"BASE_IMAGE={moving}\n")
    inv(project, "pre-build-image")
    [old] = pre_images(client, project)
    update = client.containers.create(base_image, ["true"], labels={TEST_LABEL: RUN_ID})
    try:
        update.commit(*moving.split(":"), changes=[f"LABEL {TEST_LABEL}={RUN_ID}"])
    finally:
        update.remove()
    done = inv(project, "pre-build-image")
    assert "out of date (the base image changed); rebuilding" in done.stdout
    [new] = pre_images(client, project)
    assert new != old
    parent_chain = client.api.history(new)
    assert any(layer["Id"] == image_id(client, moving) for layer in parent_chain)


def test_force_rebuilds_regardless(client, project):
    inv(project, "pre-build-image")
    done = inv(project, "pre-build-image", "--force")
    assert "rebuilding, as --force asks" in done.stdout
    assert "Step " in done.stdout


def test_a_failing_step_shows_its_output_and_keeps_the_working_images(client, project):
    inv(project, "all")
    final = f"{names(project)['IMAGE_NAME']}:latest"
    [pre] = pre_images(client, project)
    kept = {final: image_id(client, final), pre: image_id(client, pre)}
    spare = dangling(client)
    dockerfile = project / "docker" / "Dockerfile.pre"
    dockerfile.write_text(dockerfile.read_text()
                          + "RUN echo 'E: Unable to locate package nosuchpkg' && exit 100\n")
    done = inv(project, "all", check=False)
    assert done.returncode == 1
    assert "Unable to locate package nosuchpkg" in done.stdout
    [message] = done.stderr.strip().splitlines()
    assert message.startswith("all: build failed at Step ")
    assert "RUN echo" in message and "returned a non-zero code: 100" in message
    assert "Traceback" not in done.stderr
    assert {ref: image_id(client, ref) for ref in kept} == kept
    assert dangling(client) <= spare
    run = client.containers.run(final, ["true"], entrypoint=[], remove=True,
                                labels={TEST_LABEL: RUN_ID})
    assert run == b""


def test_a_failing_final_step_keeps_the_previous_final_image(client, project):
    inv(project, "all")
    final = f"{names(project)['IMAGE_NAME']}:latest"
    before = image_id(client, final)
    dockerfile = project / "docker" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace(
        "COPY bin/", "COPY bin/ssh-trust /etc/hostname/impossible/\nCOPY bin/"))
    done = inv(project, "all", check=False)
    assert done.returncode == 1
    assert "build failed at Step" in done.stderr
    assert image_id(client, final) == before


@pytest.mark.parametrize("task", ["all", "pre-build-image", "cleanup", "cleanup-diag",
                                  "base-image", "up", "down", "shell"])
def test_no_engine_is_one_line_naming_the_address(project, task):
    done = inv(project, task, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
               check=False)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "unix:///nonexistent/docker.sock" in line
    assert "is it running?" in line and "DOCKER_HOST" in line


def test_a_bad_setting_is_refused_before_anything_runs(client, project):
    inv(project, "all")
    final = f"{names(project)['IMAGE_NAME']}:latest"
    before = image_id(client, final)
    done = inv(project, "all", env={"VERSION": "no good"}, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "all: VERSION='no good' from the environment is not a valid tag "
        "(letters, digits, '_', '.', '-'; at most 128)")
    assert done.stdout == ""
    assert image_id(client, final) == before


def test_a_remote_engine_via_docker_host_and_via_a_context(client, project, forwarder, tmp_path):
    inv(project, "all")
    address = f"tcp://127.0.0.1:{forwarder.port}"
    done = inv(project, "all", env={"DOCKER_HOST": address})
    assert "up to date" in done.stdout
    assert forwarder.connections > 0

    config = tmp_path / "docker-config"
    meta = config / "contexts" / "meta" / hashlib.sha256(b"k8s-diag-test").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({
        "Name": "k8s-diag-test", "Metadata": {},
        "Endpoints": {"docker": {"Host": address, "SkipTLSVerify": False}},
    }))
    (config / "config.json").write_text(json.dumps({"currentContext": "k8s-diag-test"}))
    seen = forwarder.connections
    done = inv(project, "cleanup-diag", env={"DOCKER_CONFIG": str(config)})
    assert "removing" in done.stdout
    assert forwarder.connections > seen
    assert image_id(client, f"{names(project)['IMAGE_NAME']}:latest") is None


def test_cleanup_is_idempotent_and_spares_images_in_use(client, project):
    inv(project, "all")
    final = f"{names(project)['IMAGE_NAME']}:latest"
    container = client.containers.create(final, ["sleep", "60"], entrypoint=[],
                                         name=f"k8s-diag-test-{RUN_ID}-user",
                                         labels={TEST_LABEL: RUN_ID})
    refused = inv(project, "cleanup-diag", check=False)
    assert refused.returncode == 1
    assert f"is used by container k8s-diag-test-{RUN_ID}-user" in refused.stderr
    assert image_id(client, final) is not None
    container.remove(force=True)

    assert "removing" in inv(project, "cleanup-diag").stdout
    assert image_id(client, final) is None
    assert "nothing to remove" in inv(project, "cleanup-diag").stdout
    assert pre_images(client, project)
    inv(project, "cleanup")
    assert pre_images(client, project) == []
    assert "nothing to remove" in inv(project, "cleanup").stdout


def test_a_project_elsewhere_builds_its_own_names(client, tmp_path, base_image):
    other = make_project(tmp_path / "elsewhere", "elsewhere", VERSION="v9")
    inv(other, "all")
    assert image_id(client, f"k8s-diag-test-{RUN_ID}-elsewhere:v9")


def test_a_replaced_pre_image_in_use_is_kept_and_the_build_goes_on(client, project):
    inv(project, "all")
    [old] = pre_images(client, project)
    user = client.containers.create(old, ["true"], entrypoint=[], labels={TEST_LABEL: RUN_ID},
                                    name=f"k8s-diag-test-{RUN_ID}-pre-user")
    try:
        dockerfile = project / "docker" / "Dockerfile.pre"
        dockerfile.write_text(dockerfile.read_text() + "ENV K8S_DIAG_TEST=2\n")
        done = inv(project, "all")
        assert f"kept the replaced pre image: {old} is used by container " \
               f"k8s-diag-test-{RUN_ID}-pre-user" in done.stdout
        assert old in pre_images(client, project) and len(pre_images(client, project)) == 2
    finally:
        user.remove(force=True)


def test_a_missing_docker_context_is_named_not_ignored(project):
    done = inv(project, "all", env={"DOCKER_CONTEXT": f"k8s-diag-test-{RUN_ID}-nope"},
               check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"all: Docker context 'k8s-diag-test-{RUN_ID}-nope' (from DOCKER_CONTEXT) does not "
        "exist: see `docker context ls`, or unset DOCKER_CONTEXT")
