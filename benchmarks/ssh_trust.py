"""How long ssh-trust takes to trust 12 hosts, one at a time (-j 1) and at its default.

Usage: .venv/bin/python benchmarks/ssh_trust.py [--hosts N] [--runs N]

Builds the project's image (`inv all`), starts N targets and a client from it on an
internal network this script creates, and times `ssh-trust` in the client from a clean
state each run (no key on any target, no known_hosts). Removes everything at the end.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from k8sdiag import settings  # noqa: E402

RUN_ID = uuid.uuid4().hex[:8]
LABELS = {"io.k8s-diagnose.bench": RUN_ID}


def put(container, path: str, text: str) -> None:
    data = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(Path(path).name)
        info.size, info.mode = len(data), 0o600
        archive.addfile(info, io.BytesIO(data))
    container.put_archive(str(Path(path).parent), buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    subprocess.run([str(Path(sys.executable).with_name("inv")), "all"], cwd=ROOT, check=True,
                   capture_output=True)
    image = settings.load(ROOT).image
    client = docker.from_env()
    network = client.networks.create(f"k8s-diag-bench-{RUN_ID}", internal=True, labels=LABELS)
    containers = []
    try:
        password = uuid.uuid4().hex
        names = [f"node{n:02d}" for n in range(args.hosts)]
        for name in names:
            containers.append(client.containers.run(
                image, detach=True, name=f"k8s-diag-bench-{RUN_ID}-{name}", hostname=name,
                network=network.name, environment={"LOGIN_PASSWORD": password},
                labels=LABELS, dns=["127.0.0.1"]))
        runner = client.containers.run(image, detach=True, name=f"k8s-diag-bench-{RUN_ID}-c",
                                       network=network.name, labels=LABELS, dns=["127.0.0.1"])
        containers.append(runner)
        hosts = "".join(f"{target.name}\n" for target in containers[:-1])
        put(runner, "/root/hosts", f"default root {password} 22\n{hosts}")
        runner.exec_run(["bash", "-c", "for h in $(grep -v default /root/hosts); do "
                         "until nc -z $h 22; do sleep 0.2; done; done"])
        results = {}
        for jobs in ("1", "default"):
            times = []
            for _ in range(args.runs):
                for target in containers[:-1]:
                    target.exec_run(["rm", "-f", "/root/.ssh/authorized_keys"])
                runner.exec_run(["rm", "-f", "/root/.ssh/known_hosts"])
                command = ["ssh-trust", "-f", "/root/hosts"]
                if jobs != "default":
                    command += ["-j", jobs]
                started = time.perf_counter()
                code, output = runner.exec_run(command)
                times.append(time.perf_counter() - started)
                if code != 0:
                    sys.exit(output.decode())
            results[jobs] = times
        print(f"\nssh-trust, {args.hosts} hosts, median of {args.runs} runs:")
        for jobs, times in results.items():
            print(f"  -j {jobs:8} {statistics.median(times):6.2f} s   "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times)})")
    finally:
        for container in containers:
            container.remove(force=True)
        network.remove()


if __name__ == "__main__":
    main()
