"""Two-step build against one Dockerfile holding both steps, on the project's own image.

Usage: .venv/bin/python benchmarks/build.py [--runs N] [--cold-runs N] [--no-registry]

Works on a copy of the project (with its .git, without .venv) under test-only image names,
and removes what it made at the end. Every figure is a median of several runs of a whole
command, Python start-up included: `inv all` for the two steps; for the single
Dockerfile, the seed's way (`docker build .` on the project folder) through the same
docker-py call. "cold" means the base image is here and nothing else is: a line unique to
this run in front of the package step keeps the engine's cache out of it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker
from docker.utils import tar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from k8sdiag import base, context, settings  # noqa: E402

INV = Path(sys.executable).with_name("inv")
RUN_ID = uuid.uuid4().hex[:8]
LABEL = f"io.k8s-diagnose.bench={RUN_ID}"
SINGLE = "docker/Dockerfile.single"
SINGLE_BUILD = """
import sys, docker
client = docker.from_env()
path, dockerfile, tag, key, value = sys.argv[1:]
for chunk in client.api.build(path=path, dockerfile=dockerfile, tag=tag, rm=True,
                              forcerm=True, decode=True, labels={key: value}):
    if "error" in chunk:
        sys.exit(chunk["error"])
"""


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def copy_project(where: Path, suffix: str) -> Path:
    project = where / suffix
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".env", "hosts-auth.txt"))
    (project / ".env").write_text(
        f"IMAGE_NAME=k8s-diag-bench-{RUN_ID}-{suffix}\n"
        f"PRE_IMAGE_NAME=k8s-diag-bench-{RUN_ID}-{suffix}-pre\n"
        f"IMAGE_LABELS={LABEL}\n")
    return project


def make_cold(project: Path, dockerfile: str, token: str) -> None:
    """Put a line unique to this run before the package step, so no cache serves it."""
    path = project / dockerfile
    text = path.read_text()
    path.write_text(text.replace("\nRUN ", f"\nENV K8S_DIAG_BENCH={token}\nRUN ", 1))


def single_dockerfile(project: Path) -> None:
    pre = (project / "docker" / "Dockerfile.pre").read_text()
    final = (project / "docker" / "Dockerfile").read_text()
    after_from = final.split("FROM ${PRE_IMAGE}\n", 1)[1]
    (project / SINGLE).write_text(pre + after_from)


def edit_script(project: Path, n: int) -> None:
    with (project / "bin" / "ssh-trust").open("a") as script:
        script.write(f"# edit {n}\n")


def cleanup(client: docker.DockerClient) -> None:
    for image in client.api.images(filters={"label": LABEL}):
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_image(image["Id"], force=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def registry_row(client, work: Path, runs: int) -> list[float]:
    """Cold `inv all` when the registry has this recipe's pre image: pulled, not built."""
    port = free_port()
    storage = work / "registry"
    storage.mkdir()
    (storage / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {storage / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    server = subprocess.Popen(["docker-registry", "serve", str(storage / "config.yml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        project = copy_project(work, "shared")
        make_cold(project, "docker/Dockerfile.pre", uuid.uuid4().hex)
        env = {**clean_env(), "REGISTRY": f"127.0.0.1:{port}"}
        timed([str(INV), "push", "--pre"], project, env)
        times = []
        for _ in range(runs):
            timed([str(INV), "cleanup"], project, env)
            times.append(timed([str(INV), "all"], project, env))
        return times
    finally:
        server.kill()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in settings.BY_NAME}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of the quick figures")
    parser.add_argument("--cold-runs", type=int, default=3, help="runs of the cold builds")
    parser.add_argument("--no-registry", action="store_true", help="skip the registry row")
    args = parser.parse_args()
    client = docker.from_env()
    base.ensure(client, settings.load(ROOT, environ={})["BASE_IMAGE"], print)
    env = clean_env()
    rows: dict[str, tuple[list[float], list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="k8s-diag-bench-") as tmp:
        work = Path(tmp)
        try:
            two = copy_project(work, "two")
            one = copy_project(work, "one")
            single_dockerfile(one)
            single_tag = f"k8s-diag-bench-{RUN_ID}-one:latest"
            single = [sys.executable, "-c", SINGLE_BUILD, str(one), SINGLE, single_tag,
                      *LABEL.split("=")]
            with tar(str(one)) as archive:
                single_context = len(archive.read())

            cold_two, cold_one = [], []
            for _ in range(args.cold_runs):
                token = uuid.uuid4().hex
                for project, dockerfile in ((two, "docker/Dockerfile.pre"), (one, SINGLE)):
                    original = (project / dockerfile).read_text()
                    make_cold(project, dockerfile, token)
                    if project is two:
                        cold_two.append(timed([str(INV), "all"], two, env))
                        timed([str(INV), "cleanup"], two, env)
                    else:
                        cold_one.append(timed(single, one, env))
                        client.api.remove_image(single_tag)
                    (project / dockerfile).write_text(original)
            rows["cold build (pre + final, base present)"] = (cold_two, cold_one)
            print(f"cold: {cold_two} / {cold_one}", file=sys.stderr)

            timed([str(INV), "all"], two, env)
            timed(single, one, env)
            rows["no-op `inv all` / rebuild, nothing changed"] = (
                [timed([str(INV), "all"], two, env) for _ in range(args.runs)],
                [timed(single, one, env) for _ in range(args.runs)],
            )
            edit_two, edit_one = [], []
            for n in range(args.runs):
                edit_script(two, n)
                edit_two.append(timed([str(INV), "all"], two, env))
                edit_script(one, n)
                edit_one.append(timed(single, one, env))
            rows["rebuild after editing one bin/ script"] = (edit_two, edit_one)
            if not args.no_registry:
                pulled = registry_row(client, work, args.cold_runs)
                rows["cold, pre image pulled from a registry on 127.0.0.1"] = (pulled, [])

            two_image = client.api.inspect_image(f"k8s-diag-bench-{RUN_ID}-two:latest")
            one_image = client.api.inspect_image(single_tag)
            final_context = context.collect(two, "docker/Dockerfile").size
            pre_context = context.collect(two, "docker/Dockerfile.pre").size
        finally:
            cleanup(client)

    print(f"\n{'':52} {'two steps':>12} {'one Dockerfile':>15}")
    for name, (two_times, one_times) in rows.items():
        left = f"{statistics.median(two_times):.2f} s"
        right = f"{statistics.median(one_times):.2f} s" if one_times else "-"
        print(f"{name:52} {left:>12} {right:>15}")
    print(f"{'final image size':52} {two_image['Size'] / 1e6:10.1f} MB "
          f"{one_image['Size'] / 1e6:13.1f} MB")
    print(f"{'bytes of build context (final; pre)':52} "
          f"{f'{final_context:,}; {pre_context:,}':>12} {single_context:>15,}")
    print(f"\nmedians of {args.runs} runs ({args.cold_runs} for the cold rows), "
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")

if __name__ == "__main__":
    main()
