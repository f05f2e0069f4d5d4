"""The two steps: a pre image rebuilt only when its recipe changes, and a final image FROM it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import docker
from docker.errors import APIError, ImageNotFound

from . import base, context
from .errors import Failure
from .settings import Settings

Say = Callable[[str], None]

PRE_DOCKERFILE = "docker/Dockerfile.pre"
FINAL_DOCKERFILE = "docker/Dockerfile"
ROLE = "io.k8s-diagnose.role"
RECIPE = "io.k8s-diagnose.recipe"
INPUTS = "io.k8s-diagnose.inputs"
RECIPE_PARTS = {
    "io.k8s-diagnose.recipe.dockerfile": "docker/Dockerfile.pre changed",
    "io.k8s-diagnose.recipe.files": "files that Dockerfile.pre copies changed",
    "io.k8s-diagnose.recipe.args": "its build arguments changed",
    "io.k8s-diagnose.recipe.base": "the base image changed",
}
TAIL = 15  # lines of a failed step's output shown
STEP_WIDTH = 100  # a step line's length in compact output


@dataclass(frozen=True)
class Outcome:
    reference: str
    image_id: str
    action: str  # built, reused, pulled, up to date

    def __str__(self) -> str:
        return f"{self.reference} {self.action} ({short(self.image_id)})"


def short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def inspect(client: docker.DockerClient, reference: str) -> dict | None:
    try:
        return client.api.inspect_image(reference)
    except ImageNotFound:
        return None


def _sha(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def pre_recipe(settings: Settings, base_image: dict) -> tuple[context.Context, dict[str, str]]:
    """The pre image's context and the labels that record what it was built from."""
    ctx = context.collect(settings.root, PRE_DOCKERFILE)
    dockerfile = dict((path, data) for path, data, _ in ctx.files)[PRE_DOCKERFILE]
    identity = (base_image.get("RepoDigests") or [base_image["Id"]])[0]
    parts = dict(zip(RECIPE_PARTS, (
        hashlib.sha256(dockerfile).hexdigest(),
        ctx.digest(include_dockerfile=False),
        _sha(pre_buildargs(settings)),
        identity,
    ), strict=True))
    return ctx, {ROLE: "pre", RECIPE: _sha(parts), **parts}


def pre_buildargs(settings: Settings) -> dict[str, str]:
    return {"BASE_IMAGE": settings["BASE_IMAGE"]}


def pre_reference(settings: Settings, recipe: str) -> str:
    return f"{settings['PRE_IMAGE_NAME']}:{recipe[:16]}"


def stale_reason(client: docker.DockerClient, settings: Settings, labels: dict[str, str]) -> str:
    """Why an existing pre image does not match this recipe, or '' when there is none."""
    reasons: list[str] = []
    for image in client.api.images(name=settings["PRE_IMAGE_NAME"]):
        old = image.get("Labels") or {}
        reasons += [why for key, why in RECIPE_PARTS.items()
                    if old.get(key) != labels[key] and why not in reasons]
    return ", ".join(reasons)


def ensure_pre(
    client: docker.DockerClient,
    settings: Settings,
    *,
    force: bool = False,
    verbose: bool = False,
    say: Say = print,
    pull: Callable[[str], bool] | None = None,
) -> Outcome:
    """Reuse the pre image of this recipe; else pull it (when `pull` is given) or build it."""
    base_image = base.ensure(client, settings["BASE_IMAGE"], say)
    ctx, labels = pre_recipe(settings, base_image)
    reference = pre_reference(settings, labels[RECIPE])
    existing = inspect(client, reference)
    if existing and not force:
        return Outcome(reference, existing["Id"], "reused")
    if force:
        say(f"{reference}: rebuilding, as --force asks")
    else:
        why = stale_reason(client, settings, labels)
        if why:
            say(f"{reference}: the pre image is out of date ({why}); rebuilding it. "
                "The old one stays until the new one is built")
        if pull is not None and pull(reference):
            image = inspect(client, reference)
            if image and (image["Config"].get("Labels") or {}).get(RECIPE) == labels[RECIPE]:
                _drop_stale_pre(client, settings, reference, say)
                return Outcome(reference, image["Id"], "pulled")
            say(f"{reference}: the pulled image records another recipe; not using it")
        say(f"{reference}: building the pre image from {PRE_DOCKERFILE} "
            f"on {settings['BASE_IMAGE']} (slow: OS packages)")
    image_id = build(client, ctx, buildargs=pre_buildargs(settings), nocache=force,
                     labels={**settings.labels, **labels}, verbose=verbose, say=say)
    retag(client, image_id, reference, say)
    _drop_stale_pre(client, settings, reference, say)
    return Outcome(reference, image_id, "built")


def _drop_stale_pre(client: docker.DockerClient, settings: Settings, keep: str, say: Say) -> None:
    """Remove the pre images this one replaces; one still in use stays, with a word why."""
    for image in client.api.images(name=settings["PRE_IMAGE_NAME"]):
        for tag in image.get("RepoTags") or []:
            if tag != keep and (image.get("Labels") or {}).get(ROLE) == "pre":
                try:
                    remove(client, tag, say)
                except Failure as kept:
                    say(f"kept the replaced pre image: {kept}")


def final_inputs(settings: Settings, pre: Outcome) -> tuple[context.Context, dict[str, str]]:
    """The final image's context and build args; INPUTS digests everything that goes in.

    docker/Dockerfile turns the build args into labels in one step; the creation time
    is added at build time and is not an input.
    """
    ctx = context.collect(settings.root, FINAL_DOCKERFILE)
    buildargs = {
        "PRE_IMAGE": pre.reference,
        "IMAGE_NAME": settings["IMAGE_NAME"],
        "VERSION": settings["VERSION"],
        "REVISION": git_revision(settings, [path for path, _, _ in ctx.files]),
    }
    buildargs["INPUTS"] = _sha([ctx.digest(), pre.image_id, buildargs, settings.labels])
    return ctx, buildargs


def ensure_final(
    client: docker.DockerClient,
    settings: Settings,
    pre: Outcome,
    *,
    verbose: bool = False,
    say: Say = print,
) -> Outcome:
    """Build the final image unless the one tagged already has exactly these inputs."""
    ctx, buildargs = final_inputs(settings, pre)
    existing = inspect(client, settings.image)
    if existing and (existing["Config"].get("Labels") or {}).get(INPUTS) == buildargs["INPUTS"]:
        return Outcome(settings.image, existing["Id"], "up to date")
    buildargs["CREATED"] = datetime.now(UTC).isoformat(timespec="seconds")
    image_id = build(client, ctx, buildargs=buildargs, labels=settings.labels,
                     verbose=verbose, say=say)
    retag(client, image_id, settings.image, say)
    return Outcome(settings.image, image_id, "built")


def git_revision(settings: Settings, paths: Iterable[str]) -> str:
    """HEAD's commit, marked -dirty when a file that goes into the image differs from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(settings.root), *args],
                              capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--verify", "-q", "HEAD")
    if head and git("status", "--porcelain", "--untracked-files=all", "--", *paths):
        head += "-dirty"
    return head


def build(
    client: docker.DockerClient,
    ctx: context.Context,
    *,
    buildargs: dict[str, str],
    labels: dict[str, str],
    verbose: bool,
    say: Say,
    nocache: bool = False,
) -> str:
    """Build untagged, streaming the steps; return the image ID. A failure removes what it made."""
    before = {image["Id"] for image in client.api.images(filters={"dangling": True})}
    stream = client.api.build(
        fileobj=ctx.tar(), custom_context=True, dockerfile=ctx.dockerfile, buildargs=buildargs,
        labels=labels, nocache=nocache, rm=True, forcerm=True, decode=True,
    )
    try:
        return _follow(stream, verbose=verbose, say=say)
    except Failure:
        for image in client.api.images(filters={"dangling": True}):
            if image["Id"] not in before:
                _try_remove(client, image["Id"])
        raise


def _follow(stream: Iterable[dict], *, verbose: bool, say: Say) -> str:
    step, tail, image_id = "", deque(maxlen=TAIL), ""
    for chunk in stream:
        if "errorDetail" in chunk or "error" in chunk:
            message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error", "")
            if not verbose:
                for line in tail:
                    say(f"  | {line}")
            raise Failure(f"build failed at {step or 'the start'}: {message.strip()}")
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        for line in chunk.get("stream", "").splitlines():
            line = line.rstrip()
            if line.startswith("Step "):
                whole = " ".join(line.split())
                step = whole if len(whole) <= STEP_WIDTH else whole[:STEP_WIDTH - 3] + "..."
                tail.clear()
                say(whole if verbose else step)
            elif line:
                tail.append(line)
                if verbose:
                    say(line)
    if not image_id:
        raise Failure(f"the engine ended the build at {step or 'the start'} without an image")
    return image_id


def retag(client: docker.DockerClient, image_id: str, reference: str, say: Say) -> None:
    """Point `reference` at `image_id`; remove the image it pointed at if nothing else names it."""
    previous = inspect(client, reference)
    name, _, tag = reference.rpartition(":")
    client.api.tag(image_id, name, tag, force=True)
    if previous and previous["Id"] != image_id:
        old = inspect(client, previous["Id"])
        if old and not old.get("RepoTags"):
            _try_remove(client, previous["Id"], say)


def _try_remove(client: docker.DockerClient, image_id: str, say: Say | None = None) -> None:
    try:
        client.api.remove_image(image_id)
    except ImageNotFound:
        pass
    except APIError as exc:
        if say:
            say(f"kept the replaced image {short(image_id)}: {exc.explanation}")


def remove(client: docker.DockerClient, reference: str, say: Say) -> bool:
    """Remove a tagged image unless a container uses it; True when it was there and went."""
    image = inspect(client, reference)
    if image is None:
        return False
    users = [c for c in client.api.containers(all=True) if c["ImageID"] == image["Id"]]
    if users:
        names = ", ".join(c["Names"][0].lstrip("/") for c in users)
        raise Failure(f"{reference} is used by container {names}: stop and remove it first "
                      f"(inv down, or docker rm -f {names}), then run this again")
    say(f"removing {reference} ({short(image['Id'])})")
    try:
        client.api.remove_image(reference)
    except ImageNotFound:
        return False
    except APIError as exc:
        raise Failure(f"{reference} was not removed: {exc.explanation}") from None
    return True
