"""Push progress and credentials, without an engine: what the user sees on a TTY or in a log."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from k8sdiag import push, settings
from k8sdiag.errors import Failure


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_tty():
    out = io.StringIO()
    progress = push.Progress(out)
    for current in (0, 10, 20):
        progress.update("abc123", "Pushing", current, 40)
    progress.update("abc123", "Pushed", None, None)
    progress.finish()
    assert out.getvalue() == "  abc123: Pushing\n  abc123: Pushed\n"


def test_bars_redrawn_in_place_on_a_tty():
    out = Terminal()
    progress = push.Progress(out)
    progress.update("aaa", "Pushing", 5_000_000, 20_000_000)
    progress.update("bbb", "Layer already exists", None, None)
    progress.update("aaa", "Pushed", None, None)
    progress.finish()
    text = out.getvalue()
    assert "aaa: Pushing [#######.......................]    5.0/20.0 MB" in text
    assert "\x1b[2F" in text, "the second draw does not go back over the first"
    assert text.rstrip("\n").endswith("bbb: Layer already exists")


@pytest.mark.parametrize(("env", "message"), [
    ({"REGISTRY_USERNAME": "me"}, "REGISTRY_PASSWORD is not set, but its pair is"),
    ({"REGISTRY_PASSWORD": "pw"}, "REGISTRY_USERNAME is not set, but its pair is"),
])
def test_half_a_credential_pair_is_refused(tmp_path: Path, env, message):
    config = settings.load(tmp_path, environ={"REGISTRY": "127.0.0.1:5000", **env})
    with pytest.raises(Failure, match=message):
        push.credentials(config)


@pytest.mark.parametrize(("stream_error", "expected"), [
    ("unauthorized: authentication required", "refused the credentials"),
    ("denied: requested access to the resource is denied", "refused the write"),
    ('Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused',
     "is unreachable"),
    ("something new", "push to 127.0.0.1:5000 failed: something new"),
])
def test_errors_inside_the_stream_fail_the_push(tmp_path: Path, stream_error, expected):
    config = settings.load(tmp_path, environ={"REGISTRY": "127.0.0.1:5000"})
    stream = [{"status": "Preparing", "id": "abc"},
              {"errorDetail": {"message": stream_error}, "error": stream_error}]
    with pytest.raises(Failure, match=expected):
        push.follow(stream, push.Progress(io.StringIO()), config)
