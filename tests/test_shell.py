"""Every shell script of the project is ShellCheck clean, with no blanket disable."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shell_scripts() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    return [ROOT / name for name in tracked
            if (ROOT / name).is_file() and (ROOT / name).read_bytes()[:64].startswith(b"#!")
            and b"sh" in (ROOT / name).read_bytes().split(b"\n", 1)[0]]


def test_the_scripts_are_found():
    names = {path.relative_to(ROOT).as_posix() for path in shell_scripts()}
    assert {"bin/ssh-trust", "docker/entrypoint", "scripts/bootstrap", "inv", ".ci/run"} <= names


def test_shellcheck_finds_nothing():
    scripts = shell_scripts()
    done = subprocess.run(["shellcheck", "--severity=style", *map(str, scripts)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    for script in scripts:
        assert "shellcheck disable=all" not in script.read_text()
        assert "# shellcheck shell=" not in script.read_text()
