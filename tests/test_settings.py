"""Settings precedence and validation: defaults < .env < environment < flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from k8sdiag import context, settings
from k8sdiag.errors import Failure

ROOT = Path(__file__).resolve().parents[1]


def write_env(tmp_path: Path, text: str) -> Path:
    (tmp_path / ".env").write_text(text)
    return tmp_path


def test_defaults_keep_the_seeds_names(tmp_path):
    config = settings.load(tmp_path, environ={})
    assert config.image == "k8s-diagnose:latest"
    assert config["PRE_IMAGE_NAME"] == "k8s-diag-pre"
    assert config.source("VERSION") == "default"


def test_each_layer_overrides_the_one_below(tmp_path):
    write_env(tmp_path, "VERSION=from-dotenv\nIMAGE_NAME=team/diag\nREGISTRY=127.0.0.1:5000\n")
    environ = {"VERSION": "from-env", "REGISTRY": "127.0.0.1:5001/ns"}
    config = settings.load(tmp_path, {"VERSION": "from-flag", "IMAGE_NAME": None}, environ)
    assert config["VERSION"] == "from-flag"
    assert config.source("VERSION") == "the command line"
    assert config["REGISTRY"] == "127.0.0.1:5001/ns"
    assert config.source("REGISTRY") == "the environment"
    assert config["IMAGE_NAME"] == "team/diag"
    assert config.source("IMAGE_NAME") == ".env line 2"


def test_dotenv_is_not_written_into_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("PRE_IMAGE_NAME", raising=False)
    write_env(tmp_path, "PRE_IMAGE_NAME=mine\n")
    assert settings.load(tmp_path)["PRE_IMAGE_NAME"] == "mine"
    assert "PRE_IMAGE_NAME" not in os.environ


@pytest.mark.parametrize(("text", "environ", "flags", "expected"), [
    ("VERSION=not a tag\n", {}, {}, "VERSION='not a tag' from .env line 1 is not a valid tag"),
    ("", {"IMAGE_NAME": "Upper/Case"}, {}, "IMAGE_NAME='Upper/Case' from the environment"),
    ("", {}, {"BASE_IMAGE": "debian::x"}, "BASE_IMAGE='debian::x' from the command line"),
    ("\n\nREGISTRY=http://host\n", {}, {}, "REGISTRY='http://host' from .env line 3"),
    ("PUSH_PRE=maybe\n", {}, {}, "PUSH_PRE='maybe' from .env line 1 is not a boolean"),
    ("IMGE_NAME=x\n", {}, {}, "unknown key IMGE_NAME in .env line 1 (did you mean IMAGE_NAME?)"),
    ("IMAGE_LABELS=a=b,oops\n", {}, {}, "IMAGE_LABELS='a=b,oops' from .env line 1 has 'oops'"),
])
def test_a_bad_value_names_its_key_and_source(tmp_path, text, environ, flags, expected):
    write_env(tmp_path, text)
    with pytest.raises(Failure) as caught:
        settings.load(tmp_path, flags, environ)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_a_bad_secret_is_not_shown(tmp_path):
    write_env(tmp_path, "REGISTRY_PASSWORD=hunter2\nUP_SSH_PORT=99999\n")
    with pytest.raises(Failure) as caught:
        settings.load(tmp_path, environ={})
    assert "hunter2" not in str(caught.value)


def test_env_example_lists_every_key_with_its_default():
    assert (ROOT / ".env.example").read_text() == settings.example()


@pytest.mark.parametrize("reference", [
    "k8s-diagnose", "127.0.0.1:5000/team/k8s-diagnose", "registry.example:443/a/b_c",
])
def test_valid_names(reference):
    assert settings.NAME_RE.fullmatch(reference)


def test_context_holds_only_what_the_dockerfile_copies(tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "big").write_bytes(b"x" * 100_000)
    (tmp_path / "bin" / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "tool").chmod(0o755)
    (tmp_path / "conf" / "hosts-auth.txt").write_text("host root secret\n")
    (tmp_path / "conf" / "hosts-auth.sample.txt").write_text("# sample\n")
    (tmp_path / ".env").write_text("REGISTRY_PASSWORD=secret\n")
    (tmp_path / "docker" / "Dockerfile").write_text(
        "FROM x\nCOPY bin/ /b/\nCOPY [\"conf/\", \"/c/\"]\nCOPY --from=other /x /y\n")
    ctx = context.collect(tmp_path, "docker/Dockerfile")
    assert [(path, mode) for path, _, mode in ctx.files] == [
        ("bin/tool", 0o755), ("conf/hosts-auth.sample.txt", 0o644), ("docker/Dockerfile", 0o644),
    ]
    assert ctx.size < 20_000  # tar's 10 KiB record; the 100 KB in .git is not in it


def test_a_dockerfile_that_copies_a_secret_is_refused(tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text("FROM x\nCOPY conf/hosts-auth.txt /c/\n")
    with pytest.raises(Failure, match="holds passwords"):
        context.collect(tmp_path, "docker/Dockerfile")
