"""Build contexts that hold only what a Dockerfile copies, and digests of what goes into them."""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .errors import Failure

# Files that hold passwords: never sent to the engine, whatever a Dockerfile asks for.
SECRETS = frozenset({".env", "conf/hosts-auth.txt"})


@dataclass(frozen=True)
class Context:
    """The files of one build, as (path relative to the project, bytes, mode)."""

    dockerfile: str
    files: tuple[tuple[str, bytes, int], ...]

    def digest(self, *, include_dockerfile: bool = True) -> str:
        sha = hashlib.sha256()
        for path, data, mode in self.files:
            if include_dockerfile or path != self.dockerfile:
                sha.update(f"{path}\0{mode:o}\0{len(data)}\0".encode())
                sha.update(data)
        return sha.hexdigest()

    @property
    def size(self) -> int:
        return len(self.tar())

    def tar(self) -> bytes:
        """A reproducible tar: fixed owner and time, so the engine's cache sees only content."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for path, data, mode in self.files:
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(data), mode, 0
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    result, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def sources(dockerfile_text: str) -> list[str]:
    """The context paths that COPY and ADD read (not those copied from another stage)."""
    found = []
    for word, rest in instructions(dockerfile_text):
        if word not in ("COPY", "ADD"):
            continue
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if any(arg.startswith("--from") for arg in args):
            continue
        args = [arg for arg in args if not arg.startswith("--")]
        found += args[:-1]
    return found


def collect(root: Path, dockerfile: str) -> Context:
    """The context for `dockerfile` (relative to root): it and the files its COPY/ADD name."""
    path = root / dockerfile
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise Failure(f"{dockerfile} is missing: it is part of the project, restore it") from None
    files = {dockerfile: path}
    for source in sources(text):
        source = source.lstrip("/").removeprefix("./")
        if source in SECRETS:
            raise Failure(f"{dockerfile} copies {source}, which holds passwords: "
                          "it never goes into an image; copy the sample instead")
        matches = sorted(root.glob(source)) if any(c in source for c in "*?[") else [root / source]
        if not matches or not all(match.exists() for match in matches):
            raise Failure(f"{dockerfile} copies {source}, which does not exist")
        for match in matches:
            for file in sorted(match.rglob("*")) if match.is_dir() else [match]:
                relative = file.relative_to(root).as_posix()
                if file.is_file() and relative not in SECRETS and "__pycache__" not in relative:
                    files[relative] = file
    return Context(dockerfile, tuple(
        (relative, file.read_bytes(), 0o755 if file.stat().st_mode & 0o111 else 0o644)
        for relative, file in sorted(files.items())
    ))
