"""``/images/...`` and ``/commit``: list, inspect, history, tag, remove, commit.

Image names in paths may hold slashes (the docker CLI sends
``docker.io/library/base``); the store's reference parser reads them as the
familiar ``base:latest``.

Who sees which image, and who may tag or remove it, is `sandbox.daemon.access`'s
rule: shared (root's) images for everyone, a user's commits for that user.
"""

from __future__ import annotations

import fnmatch
import json

from aiohttp import web

from sandbox.daemon import access, params
from sandbox.daemon.params import json_reply
from sandbox.daemon.routes import Route, supervisor
from sandbox.engine import views
from sandbox.errors import ImageNotFound, InvalidArgument, NotFound
from sandbox.store.images import Image
from sandbox.store.references import parse


def _name(request: web.Request) -> str:
    return request.match_info["name"]


def _reference_matches(image: Image, patterns: list[str]) -> bool:
    for tag in image.tags:
        name = tag.rpartition(":")[0]
        if any(fnmatch.fnmatchcase(tag, p) or fnmatch.fnmatchcase(name, p) for p in patterns):
            return True
    return False


async def list_images(request: web.Request) -> web.StreamResponse:
    """``GET /images/json?filters=``: filters ``reference`` (globs) and ``dangling``."""
    store = supervisor(request).engine.store
    filters = params.filters(request)
    for key in filters:
        if key not in ("reference", "dangling"):
            raise InvalidArgument(f"invalid filter {key!r}: use reference or dangling")
    images = access.images(request)
    if "reference" in filters:
        images = [i for i in images if _reference_matches(i, filters["reference"])]
    if "dangling" in filters:
        dangling = filters["dangling"][-1:] == ["true"]
        images = [i for i in images if (not i.tags) == dangling]
    return json_reply([views.image_summary(store, i) for i in images])


async def inspect(request: web.Request) -> web.StreamResponse:
    """``GET /images/{name}/json``."""
    store = supervisor(request).engine.store
    return json_reply(views.image_inspect(store, access.image(request, _name(request))))


async def history(request: web.Request) -> web.StreamResponse:
    """``GET /images/{name}/history``: newest first."""
    store = supervisor(request).engine.store
    return json_reply(views.image_history(store, access.image(request, _name(request))))


def _repo_tag(repo: str, tag: str) -> str:
    """``repo`` and ``tag`` query parameters as one checked ``name:tag``."""
    repo, tag = repo.strip(), tag.strip()
    text = f"{repo}:{tag}" if tag else repo
    return str(parse(text))


async def tag(request: web.Request) -> web.StreamResponse:
    """``POST /images/{name}/tag?repo=&tag=``: 201."""
    engine = supervisor(request).engine
    repo = request.query.get("repo", "")
    if not repo.strip():
        raise InvalidArgument("no repository given: set repo (and tag) in the query")
    image = access.own_image(request, _name(request), "tag")
    repo_tag = _repo_tag(repo, request.query.get("tag", ""))
    access.check_new_tag(request, repo_tag)
    engine.tag(image.id, repo_tag)  # and a "tag" event
    return web.Response(status=201)


async def remove(request: web.Request) -> web.StreamResponse:
    """``DELETE /images/{name}?force=``: 200 ``[{"Untagged"}, {"Deleted"}]``."""
    engine = supervisor(request).engine
    access.own_image(request, _name(request), "remove")
    removed = engine.remove_image(_name(request), force=params.flag(request, "force"))
    return json_reply(removed)


async def pull(request: web.Request) -> web.StreamResponse:
    """``POST /images/create?fromImage=&tag=``: only images already here "pull".

    Registries come later; until then a missing image is a 404 that says so.
    """
    source = request.query.get("fromImage", "")
    if not source:
        raise InvalidArgument("importing images (fromSrc) is not supported yet")
    ref = source
    if ":" not in source.rpartition("/")[2]:
        ref = f"{source}:{request.query.get('tag') or 'latest'}"
    try:
        image = access.image(request, ref)
    except ImageNotFound:
        raise NotFound(
            f"pull access denied for {ref}: the sandbox cannot pull from registries yet; "
            "use an image that is here (see `docker images`)"
        ) from None
    familiar = image.tags[0] if image.tags else ref
    lines = [{"status": f"Status: Image is up to date for {familiar}"}]
    return web.Response(text="".join(json.dumps(line) + "\r\n" for line in lines),
                        content_type="application/json")  # fmt: skip


async def commit(request: web.Request) -> web.StreamResponse:
    """``POST /commit?container=&repo=&tag=&comment=&author=``: 201 ``{"Id": "sha256:..."}``.

    ``created_by`` (a sandbox extension) is what the history says made the
    layer; Docker's is the container's command. The notebook kernel sets it
    to the cell, whose real command is its whole shell prelude.
    """
    engine = supervisor(request).engine
    container = request.query.get("container", "").strip()
    if not container:
        raise InvalidArgument("no container given: set container in the query")
    if any(c.strip() for c in request.query.getall("changes", [])):
        raise InvalidArgument("commit --change is not supported yet: commit without it")
    await params.json_body(request)  # a container config may come; only its form is checked
    repo = request.query.get("repo", "")
    repo_tag = _repo_tag(repo, request.query.get("tag", "")) if repo.strip() else None
    record = access.container(request, container)
    if repo_tag:
        access.check_new_tag(request, repo_tag)
    image = engine.commit(
        record.id,
        repo_tag,
        message=request.query.get("comment", ""),
        author=request.query.get("author", ""),
        created_by=request.query.get("created_by") or None,
        owner=access.caller(request),
    )
    return json_reply({"Id": f"sha256:{image.id}"}, status=201)


ROUTES: list[Route] = [
    ("GET", "/images/json", list_images),
    ("POST", "/images/create", pull),
    ("POST", "/commit", commit),
    ("GET", "/images/{name:.+}/json", inspect),
    ("GET", "/images/{name:.+}/history", history),
    ("POST", "/images/{name:.+}/tag", tag),
    ("DELETE", "/images/{name:.+}", remove),
]
