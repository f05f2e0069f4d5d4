"""Build, run and release the k8s-diagnose image: `inv --list`, `inv --help TASK`."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import invoke
from invoke import Collection, Exit

from k8sdiag import base, build, engine, errors, push, run, settings

ROOT = Path(__file__).resolve().parent


def task(*args, **kwargs):
    """invoke.task with long flags only: -v would mean --version here, --verbose there."""
    return invoke.task(*args, auto_shortflags=False, **kwargs)


def say(line: str) -> None:
    print(line, flush=True)


def handled(body):
    """Show expected failures (bad settings, no engine, a failed step) as one line, exit 1."""

    name = body.__name__.rstrip("_").replace("_", "-")

    @functools.wraps(body)
    def wrapper(c, *args, **kwargs):
        try:
            return body(c, *args, **kwargs)
        except Exit:
            raise
        except KeyboardInterrupt:
            raise Exit(f"{name}: interrupted; run it again to finish", 130) from None
        except Exception as exc:
            failure = errors.explain(exc, engine.address())
            if failure is None:
                raise
            raise Exit(f"{name}: {failure}", 1) from None

    return wrapper


def load(**flags: str | None) -> settings.Settings:
    return settings.load(ROOT, flags)


def pre_image(client, config: settings.Settings, *, force: bool = False, verbose: bool = False):
    """The pre image of this recipe: here already, pulled from REGISTRY, or built."""
    pull = None
    if config["REGISTRY"] and config.flag("PULL_PRE"):
        def pull(reference: str) -> bool:
            return push.pull_pre(client, config, reference, say)
    return build.ensure_pre(client, config, force=force, verbose=verbose, say=say, pull=pull)


def images(client, config: settings.Settings, *, verbose: bool = False):
    pre = pre_image(client, config, verbose=verbose)
    return pre, build.ensure_final(client, config, pre, verbose=verbose, say=say)


@task(help={
    "force": "rebuild even when the pre image of this recipe exists",
    "verbose": "show every line of build output",
    "base-image": "image to start FROM (default: BASE_IMAGE)",
})
@handled
def pre_build_image(c, force=False, verbose=False, base_image=None):
    """Build the pre image (OS packages) unless one of the same recipe exists."""
    config = load(BASE_IMAGE=base_image)
    say(str(pre_image(engine.client(), config, force=force, verbose=verbose)))


@task(name="all", default=True, help={
    "version": "tag of the final image (default: VERSION)",
    "verbose": "show every line of build output",
})
@handled
def all_(c, version=None, verbose=False):
    """Build the pre image if needed, then the final image unless it is up to date."""
    started = time.perf_counter()
    config = load(VERSION=version)
    pre, final = images(engine.client(), config, verbose=verbose)
    say(f"{final} on {pre.reference} {pre.action}, "
        f"in {time.perf_counter() - started:.2f} s")


def remove_final(client, config: settings.Settings) -> bool:
    """Remove the final image's tag, and its registry name when REGISTRY is set."""
    names = [config.image]
    if config["REGISTRY"]:
        names.append(config.registry_name(config.image))
    return any([build.remove(client, name, say) for name in names])


@task(help={"version": "tag of the final image (default: VERSION)"})
@handled
def cleanup_diag(c, version=None):
    """Remove the final image; nothing to remove is fine."""
    config = load(VERSION=version)
    if not remove_final(engine.client(), config):
        say(f"{config.image}: not here, nothing to remove")


@task(help={"version": "tag of the final image (default: VERSION)"})
@handled
def cleanup(c, version=None):
    """Remove the final image, then every pre image (when the base image changed)."""
    config = load(VERSION=version)
    client = engine.client()
    removed = remove_final(client, config)
    for image in client.api.images(name=config["PRE_IMAGE_NAME"]):
        for tag in image.get("RepoTags") or []:
            removed = build.remove(client, tag, say) or removed
    if not removed:
        say("nothing to remove")


@task(help={"base-image": "the reference to make (default: BASE_IMAGE)"})
@handled
def base_image(c, base_image=None):
    """Make sure the base image is here: pull it, or debootstrap it from the apt mirror."""
    config = load(BASE_IMAGE=base_image)
    image = base.ensure(engine.client(), config["BASE_IMAGE"], say)
    say(f"{config['BASE_IMAGE']} is here ({build.short(image['Id'])})")


@task(name="push", help={
    "registry": "host[:port][/namespace] to push to (default: REGISTRY)",
    "version": "tag to push (default: VERSION)",
    "pre": "also push the pre image under its recipe tag (default: PUSH_PRE)",
    "verbose": "show every line of build output, when it builds",
})
@handled
def push_(c, registry=None, version=None, pre=False, verbose=False):
    """Build if needed, push the final image to REGISTRY and verify its digest there."""
    config = load(REGISTRY=registry, VERSION=version, PUSH_PRE="true" if pre else None)
    if not config["REGISTRY"]:
        raise errors.Failure("no registry: set REGISTRY=host[:port][/namespace] in .env, "
                             "or give --registry")
    push.credentials(config)
    client = engine.client()
    pre_built, final = images(client, config, verbose=verbose)
    for image in [pre_built, final] if config.flag("PUSH_PRE") else [final]:
        done = push.push(client, config, image, config.registry_name(image.reference), say)
        say(f"pushed {done.reference}@{done.digest} (verified in the registry)")


@task(help={"verbose": "show every line of build output, when it builds"})
@handled
def up(c, verbose=False):
    """Build if needed, then start the container: sshd published on 127.0.0.1."""
    config = load()
    client = engine.client()
    _, final = images(client, config, verbose=verbose)
    run.up(client, config, final, say)


@task
@handled
def down(c):
    """Stop and remove the container `inv up` started; nothing running is fine."""
    run.down(engine.client(), load(), say)


@task(help={"command": "run this instead of an interactive login shell"})
@handled
def shell(c, command=""):
    """Open a shell inside the running container (docker exec)."""
    run.shell(engine.client(), load(), command)


@task(help={"pytest-args": "arguments passed to pytest, e.g. '-k settings -x'"})
def test(c, pytest_args=""):
    """Run the test suite against the real engine (installs the tools the tests use)."""
    c.run(f"{ROOT}/scripts/bootstrap test-tools")
    c.run(f"{sys.executable} -m pytest {pytest_args}", pty=sys.stdout.isatty())


namespace = Collection(
    all_, pre_build_image, cleanup, cleanup_diag, push_, base_image, up, down, shell, test,
)
