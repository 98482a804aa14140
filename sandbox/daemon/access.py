"""Who may see and touch what: every route asks here, and only here.

The daemon learns each client's uid from the kernel (SO_PEERCRED on the unix
socket), so a client cannot claim to be someone else. The rules:

- Containers belong to the uid that created them. A user lists, inspects,
  attaches to, waits for, stops, removes, diffs and commits only their own.
  Someone else's container is answered exactly as a container that does not
  exist (404 ``No such container``): nothing about it leaks, not even that
  it exists. Container names are one namespace for everyone, as in Docker;
  a name taken by another user is refused without naming its container.
- Images owned by root (uid 0: the default image ``base``, anything root
  commits) are shared: everyone lists, inspects and runs them. A user's
  committed image belongs to that user: only they (and root) see it, run
  it, tag it and remove it; to everyone else it does not exist.
- Tags are one namespace too, and a tag belongs to the owner of the image it
  points at. So a user may put a tag only on an image of their own, and may
  not take a tag that points at an image they do not own (``base:latest``
  cannot be moved onto a user's image); the refusal is a 409 that names the
  tag only. A shared image is visible but read-only: untagging or removing it
  is a 403 for everyone but root.
- Networks are shared by everyone, as Docker's are: every user lists and
  inspects them and connects their own containers to them. A network
  belongs to the uid that made it, and only that user (and root) removes it
  (403 for anyone else: the network is no secret). A network's list of
  containers shows each user only the containers they may see.
- Root sees and touches everything, and so does the daemon's own user (a
  daemon a user runs for themselves serves their store).

Routes written later (exec, stats, events) use `container` for a container
named in the path, and `may_see` to filter what they list or stream.
"""

from __future__ import annotations

import os

from aiohttp import web

from sandbox.daemon.routes import peer_uid, supervisor
from sandbox.errors import Conflict, ContainerNotFound, ImageNotFound, PermissionDenied
from sandbox.store.containers import ContainerRecord
from sandbox.store.images import Image
from sandbox.store.networks import NetworkRecord
from sandbox.store.references import parse

SHARED = 0  # the owner of shared images


def caller(request: web.Request) -> int:
    """The uid of the client that sent ``request`` (from the kernel, not the client)."""
    return peer_uid(request)


def is_admin(uid: int) -> bool:
    """Root, or the user the daemon runs as: they see everything."""
    return uid in (0, os.geteuid())


def may_see(uid: int, owner: int) -> bool:
    """True if ``uid`` may see and touch a container owned by ``owner``."""
    return is_admin(uid) or uid == owner


def may_use_image(uid: int, image: Image) -> bool:
    """True if ``uid`` may see and run ``image`` (shared, or its own)."""
    return image.owner == SHARED or may_see(uid, image.owner)


def container(request: web.Request, ref: str) -> ContainerRecord:
    """The caller's container named by ``ref`` (ID, name or unique ID prefix).

    A prefix is unique among the caller's own containers: one of someone
    else's that happens to share it neither makes it ambiguous nor is found.

    Raises:
        ContainerNotFound: no such container, or it is someone else's.
    """
    uid = caller(request)
    store = supervisor(request).engine.store.containers
    if is_admin(uid):
        return store.find(ref)
    try:
        record = store.find(ref)
        if record.owner == uid:
            return record
    except ContainerNotFound:
        pass
    prefix = ref.strip().lstrip("/")
    mine = [r for r in store.list() if r.owner == uid and prefix and r.id.startswith(prefix)]
    if len(mine) == 1:
        return mine[0]
    raise ContainerNotFound(ref)


def containers(request: web.Request) -> list[ContainerRecord]:
    """Every container the caller may see, newest first."""
    uid = caller(request)
    records = supervisor(request).engine.store.containers.list()
    return [r for r in records if may_see(uid, r.owner)]


def check_image(request: web.Request, image: Image, ref: str) -> Image:
    """``image`` if the caller may use it.

    Raises:
        ImageNotFound: it is someone else's (named as the caller named it).
    """
    if not may_use_image(caller(request), image):
        raise ImageNotFound(ref)
    return image


def image(request: web.Request, ref: str) -> Image:
    """An image the caller may use, by name, ID or unique ID prefix.

    Raises:
        ImageNotFound: no such image, or it is someone else's.
    """
    uid = caller(request)
    images = supervisor(request).engine.store.images
    try:
        found = images.resolve(ref)
        if may_use_image(uid, found):
            return found
    except ImageNotFound:
        pass
    prefix = ref.strip().removeprefix("sha256:")
    if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
        usable = [i for i in images.list() if i.id.startswith(prefix) and may_use_image(uid, i)]
        if len(usable) == 1:
            return usable[0]
    raise ImageNotFound(ref)


def images(request: web.Request) -> list[Image]:
    """Every image the caller may use, newest first."""
    uid = caller(request)
    return [i for i in supervisor(request).engine.store.images.list() if may_use_image(uid, i)]


def own_image(request: web.Request, ref: str, what: str) -> Image:
    """An image the caller may change (``what``: "tag", "remove"): their own.

    Raises:
        ImageNotFound: no such image, or it is someone else's.
        PermissionDenied: it is a shared image and the caller is not root.
    """
    found = image(request, ref)
    uid = caller(request)
    if not may_see(uid, found.owner):
        raise PermissionDenied(
            f"you cannot {what} the shared image {ref}: only root can; "
            "commit a container to make an image of your own"
        )
    return found


def check_network_owner(request: web.Request, network: NetworkRecord, what: str) -> None:
    """Refuse to let the caller ``what`` (remove, prune) a network someone else made.

    Raises:
        PermissionDenied: it is another user's network and the caller is not root.
    """
    if not may_see(caller(request), network.owner):
        raise PermissionDenied(
            f"you cannot {what} the network {network.name}: another user made it, and only "
            "they or root can"
        )


def check_new_tag(request: web.Request, repo_tag: str) -> None:
    """Refuse to point ``repo_tag`` anywhere if it is on an image the caller does not own.

    Raises:
        Conflict: the tag is someone else's, or a shared image's.
    """
    uid = caller(request)
    if is_admin(uid):
        return
    name = str(parse(repo_tag))
    images = supervisor(request).engine.store.images
    target = images.refs().get(name)
    if target is None:
        return
    try:
        owner = images.load(target).owner
    except ImageNotFound:  # removed meanwhile: the tag is free
        return
    if owner != uid:
        raise Conflict(
            f"the tag {name} is in use by an image that is not yours: choose another name"
        )


def name_visible(request: web.Request, name: str) -> bool:
    """True if the container called ``name`` is one the caller may see (or none is)."""
    try:
        record = supervisor(request).engine.store.containers.find(name)
    except ContainerNotFound:
        return True
    return may_see(caller(request), record.owner)
