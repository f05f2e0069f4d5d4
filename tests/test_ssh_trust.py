"""ssh-trust end to end, in containers made from the image, on a network the test creates.

The network is internal and the containers' DNS upstream is their own loopback, so the
one host name that does not exist is looked up without any packet leaving the machine.
"""

from __future__ import annotations

import io
import socket
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import docker
import pytest
from conftest import RUN_ID, TEST_LABEL, free_port, inv, make_project

pytestmark = pytest.mark.slow

LABELS = {TEST_LABEL: RUN_ID}


@dataclass
class Lab:
    client: docker.DockerClient
    image: str
    network: str
    prefix: str
    passwords: dict[str, str] = field(default_factory=dict)
    containers: dict[str, object] = field(default_factory=dict)

    def start(self, name: str, password: str | None = None, command: list[str] | None = None,
              **environment: str):
        if password:
            environment["LOGIN_PASSWORD"] = password
            self.passwords[name] = password
        container = self.client.containers.run(
            self.image, command, detach=True, name=f"{self.prefix}-{name}", hostname=name,
            network=self.network, environment=environment, labels=LABELS, dns=["127.0.0.1"],
        )
        self.client.api.disconnect_container_from_network(container.id, self.network)
        self.client.api.connect_container_to_network(container.id, self.network, aliases=[name])
        self.containers[name] = container
        return container

    def sh(self, name: str, script: str) -> tuple[int, str]:
        code, output = self.containers[name].exec_run(["bash", "-c", script], demux=False)
        return code, output.decode()

    def put(self, name: str, path: str, text: str, mode: int = 0o600) -> None:
        data = text.encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(path.rsplit("/", 1)[1])
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        self.containers[name].put_archive(path.rsplit("/", 1)[0], buffer.getvalue())

    def wait_for_sshd(self, *names: str) -> None:
        for name in names:
            code, output = self.sh("client", f"for i in $(seq 50); do nc -z {name} 22 && exit 0; "
                                   "sleep 0.2; done; exit 1")
            assert code == 0, f"sshd on {name} did not come up: {output}"

    def logs(self) -> str:
        return "".join(c.logs().decode(errors="replace") for c in self.containers.values())


@pytest.fixture(scope="module")
def lab(client, base_image, tmp_path_factory) -> Iterator[Lab]:
    project = make_project(tmp_path_factory.mktemp("lab"), "lab")
    inv(project, "all")
    image = f"k8s-diag-test-{RUN_ID}-lab:latest"
    network = client.networks.create(f"k8s-diag-test-{RUN_ID}-net", internal=True,
                                     labels=LABELS)
    lab = Lab(client, image, network.name, f"k8s-diag-test-{RUN_ID}")
    try:
        for name in ("alpha", "bravo", "charlie", "delta"):
            lab.start(name, password=f"pw-{name}-{uuid.uuid4().hex[:10]}")
        lab.start("client")
        lab.wait_for_sshd("alpha", "bravo", "charlie", "delta")
        yield lab
    finally:
        for container in lab.containers.values():
            container.remove(force=True)
        network.remove()


def hosts_file(lab: Lab) -> str:
    return (
        "# the lab\n"
        f"default root {lab.passwords['alpha']} 22\n"
        "alpha\n"
        f"bravo root {lab.passwords['bravo']}\n"
        f"charlie - {lab.passwords['charlie']} 22\n"
        "delta root not-the-password\n"
        "\n"
        f"nosuchhost-{RUN_ID}\n"
        "this line has too many fields in it\n"
        "echo root pw notaport\n"
    )


def test_ssh_trust_trusts_the_good_hosts_and_reports_the_bad(lab):
    lab.put("client", "/root/hosts", hosts_file(lab))
    code, output = lab.sh("client", "ssh-trust -f /root/hosts 2>&1 & pid=$!; "
                          "while kill -0 $pid 2>/dev/null; do ps -eo args >>/tmp/ps.log; done; "
                          "wait $pid")
    assert code == 1, output
    lines = output.splitlines()
    for name in ("alpha", "bravo", "charlie"):
        assert any(line.split()[:2] == [f"root@{name}:22", "trusted"] for line in lines), output
    assert any("root@delta:22" in line and "failed: wrong password" in line for line in lines)
    assert any(f"nosuchhost-{RUN_ID}" in line and "failed: unreachable" in line
               for line in lines), output
    assert "/root/hosts:9: more than 4 fields" in output
    assert "/root/hosts:10: bad port 'notaport'" in output
    assert lines[-1] == "5 hosts: 3 trusted (0 already), 2 failed"

    for name in ("alpha", "bravo", "charlie"):
        code, out = lab.sh("client", f"ssh -o BatchMode=yes {name} hostname")
        assert (code, out.strip()) == (0, name)
    code, _ = lab.sh("client", "ssh -o BatchMode=yes -o ConnectTimeout=5 delta true")
    assert code != 0

    _, processes = lab.sh("client", "cat /tmp/ps.log")
    assert "sshpass" in processes, "the process listing did not catch the copy"
    for secret in lab.passwords.values():
        assert secret not in output
        assert secret not in processes, "a password showed on a command line"
        assert secret not in lab.logs()


def test_a_second_run_reports_already_trusted_and_adds_nothing(lab):
    lab.put("client", "/root/hosts", hosts_file(lab))
    code, output = lab.sh("client", "ssh-trust -f /root/hosts 2>&1")
    assert code == 1
    for name in ("alpha", "bravo", "charlie"):
        assert f"root@{name}:22" in output
        assert any(f"root@{name}:22" in line and "already trusted" in line
                   for line in output.splitlines())
        _, keys = lab.sh(name, "cat /root/.ssh/authorized_keys")
        assert len(keys.splitlines()) == 1, f"{name} has {keys}"
    assert output.splitlines()[-1] == "5 hosts: 3 trusted (3 already), 2 failed"


def test_check_copies_nothing_and_reports_key_login(lab):
    lab.put("client", "/root/check", f"alpha\ndelta root {lab.passwords['delta']}\n")
    code, output = lab.sh("client", "ssh-trust --check -f /root/check 2>&1")
    assert code == 1
    assert "root@alpha:22" in output and "already trusted" in output
    assert "root@delta:22" in output and "not trusted (key login refused)" in output
    _, keys = lab.sh("delta", "cat /root/.ssh/authorized_keys 2>/dev/null | wc -l")
    assert keys.strip() == "0"


def test_a_changed_host_key_is_refused(lab):
    lab.containers.pop("charlie").remove(force=True)
    lab.start("charlie", password=lab.passwords["charlie"])
    lab.wait_for_sshd("charlie")
    lab.put("client", "/root/one", f"charlie root {lab.passwords['charlie']}\n")
    code, output = lab.sh("client", "ssh-trust -f /root/one 2>&1")
    assert code == 1
    assert "failed: host key changed" in output
    _, keys = lab.sh("charlie", "cat /root/.ssh/authorized_keys 2>/dev/null | wc -l")
    assert keys.strip() == "0"


def test_a_refusing_and_a_silent_host_are_reported_as_such(lab):
    lab.start("nosshd", command=["sleep", "infinity"])
    lab.start("silent", command=["nc", "-lk", "-p", "22"])
    lab.wait_for_sshd("silent")  # listening, but it will never say a word
    lab.put("client", "/root/bad", "nosshd root pw\nsilent root pw\n")
    code, output = lab.sh("client", "ssh-trust -t 2 -f /root/bad 2>&1")
    assert code == 1
    assert any("root@nosshd:22" in line and line.endswith("failed: refused")
               for line in output.splitlines()), output
    assert any("root@silent:22" in line and line.endswith("failed: timed out")
               for line in output.splitlines()), output


@pytest.mark.parametrize(("args", "code", "message"), [
    (["-j", "0"], 2, "ssh-trust: -j takes a whole number from 1, not '0'"),
    (["--bogus"], 2, "ssh-trust: unknown argument '--bogus'"),
    (["-f", "/nonexistent"], 1, "ssh-trust: cannot read hosts file /nonexistent"),
    (["-f", "/root/empty"], 1, "ssh-trust: no hosts in /root/empty"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(lab, args, code, message):
    lab.put("client", "/root/empty", "# nothing here\n\n")
    status, output = lab.sh("client", " ".join(["ssh-trust", *args]) + " 2>&1")
    assert status == code
    assert output.splitlines()[0].startswith(message)


def test_a_hosts_file_readable_by_others_is_warned_about(lab):
    lab.put("client", "/root/open", "alpha\n", mode=0o644)
    code, output = lab.sh("client", "ssh-trust -f /root/open 2>&1")
    assert code == 0
    assert "/root/open is readable by others (mode 644) and holds passwords: chmod 600" in output


def test_supervisord_runs_in_the_foreground_under_tini_and_stops_cleanly(lab):
    _, init = lab.sh("alpha", "cat /proc/1/cmdline | tr '\\0' ' '")
    assert init.startswith("/usr/bin/tini -- ")
    _, children = lab.sh("alpha", "ps -o args= --ppid 1")
    assert children.splitlines()[0].endswith("supervisord -c /etc/k8s-diagnose/supervisord.conf")
    _, listening = lab.sh("alpha", "ss -ltn")
    assert ":22 " in listening and ":9001 " not in listening, "the web console is on by default"
    running = lab.start("echo", password="pw-echo-" + uuid.uuid4().hex[:6])
    lab.wait_for_sshd("echo")
    starting = lab.start("foxtrot")
    for container in (running, starting):
        container.stop(timeout=10)
        container.reload()
    assert running.attrs["State"]["ExitCode"] == 0, "supervisord did not stop on SIGTERM"
    assert starting.attrs["State"]["ExitCode"] in (0, 143), "a starting container was killed"


def test_the_web_console_needs_the_credentials_given_at_run_time(lab):
    secret = uuid.uuid4().hex
    lab.start("console", SUPERVISOR_USERNAME="ops", SUPERVISOR_PASSWORD=secret)
    probe = (  # the password goes in a file, never on a command line
        "import base64, time, urllib.error, urllib.request\n"
        "def get(auth):\n"
        "    request = urllib.request.Request('http://127.0.0.1:9001/')\n"
        "    if auth:\n"
        "        request.add_header('Authorization', 'Basic ' + base64.b64encode(auth).decode())\n"
        "    try:\n"
        "        return urllib.request.urlopen(request, timeout=5).status\n"
        "    except urllib.error.HTTPError as error:\n"
        "        return error.code\n"
        "for _ in range(50):\n"
        "    try:\n"
        f"        print(get(None), get(b'ops:{secret}'), get(b'ops:not-it'))\n"
        "        break\n"
        "    except OSError:\n"
        "        time.sleep(0.2)\n"
    )
    lab.put("console", "/tmp/probe.py", probe)
    code, output = lab.sh("console", "python3 /tmp/probe.py")
    assert (code, output.split()) == (0, ["401", "200", "401"])
    _, environ = lab.sh("console", "for p in $(pgrep 'supervisord|sshd'); do "
                        "tr '\\0' '\\n' </proc/$p/environ; done")
    assert "HOME=" in environ
    assert secret not in environ, "the console password stayed in supervisord's environment"
    assert secret not in lab.logs()



def test_up_publishes_on_loopback_mounts_the_hosts_file_read_only_and_down_is_idempotent(
        client, tmp_path, base_image):
    port = free_port()
    project = make_project(tmp_path / "up", "up", UP_SSH_PORT=str(port))
    (project / "conf" / "hosts-auth.txt").write_text("alpha root secret\n")
    (project / "conf" / "hosts-auth.txt").chmod(0o600)
    done = inv(project, "up")
    name = f"k8s-diag-test-{RUN_ID}-up"
    assert f"{name} is up on k8s-diag-test-{RUN_ID}-up:latest (127.0.0.1:{port}->22/tcp)" \
        in done.stdout
    assert "already up" in inv(project, "up").stdout
    bindings = client.api.inspect_container(name)["HostConfig"]["PortBindings"]
    assert bindings == {"22/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    banner = b""
    for _ in range(50):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as ssh:
                banner = ssh.recv(64)
            if banner:
                break
        except OSError:
            pass
        time.sleep(0.2)
    assert banner.startswith(b"SSH-2.0-OpenSSH")

    shell = inv(project, "shell", "--command",
                "cat /k8s-diagnose/conf/hosts-auth.txt; touch /k8s-diagnose/conf/hosts-auth.txt",
                check=False)
    assert "alpha root secret" in shell.stdout
    assert "Read-only file system" in shell.stderr

    assert "stopped and removed" in inv(project, "down").stdout
    assert "nothing to stop" in inv(project, "down").stdout
    refused = inv(project, "shell", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"shell: {name} is not running: start it with `inv up`"
