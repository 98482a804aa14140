"""``GET /events?filters=&since=&until=``: the engine's events as a stream of JSON lines.

Each event is written (and flushed, one chunk) as it happens: container
create, start, kill, oom, die (with ``exitCode``), destroy and commit; image
tag, untag and delete. ``since`` and ``until`` are Unix times (``seconds`` or
``seconds.nanoseconds``, as the docker CLI sends them): ``since`` first
replays what the engine remembers from then on, and an ``until`` reached (or
already past) ends the stream. A user gets only the events of their own
containers and images (and of the shared ones).

Filters, as Docker reads them: ``type`` (container, image), ``event`` (the
action), ``container`` (an ID prefix or a name), ``image``, ``label`` and
``scope``. The docker CLI's ``stats`` (no arguments) follows
``type=container``; ``docker run`` below API 1.30 waits for ``die`` here.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable

from aiohttp import web

from sandbox.daemon import access, params
from sandbox.daemon.routes import Route, supervisor
from sandbox.engine.events import Event
from sandbox.errors import InvalidArgument

POLL = 0.5  # seconds between checks that the client or the daemon is still there
FILTERS = ("type", "event", "container", "image", "label", "scope")
_TIME = re.compile(r"(\d{1,12})(?:\.(\d{1,9}))?")

Matcher = Callable[[Event], bool]


def timestamp_ns(request: web.Request, name: str) -> int | None:
    """A ``since``/``until`` query parameter in ns since the epoch; None if absent.

    Raises:
        InvalidArgument: not ``seconds[.nanoseconds]``.
    """
    text = request.query.get(name, "").strip()
    if not text:
        return None
    found = _TIME.fullmatch(text)
    if found is None:
        raise InvalidArgument(
            f"invalid {name} {text!r}: use a Unix time in seconds, such as 1700000000.5"
        )
    seconds, fraction = found.groups()
    return int(seconds) * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def _image_names(event: Event) -> list[str]:
    attributes = event["Actor"]["Attributes"]
    if event["Type"] == "image":
        return [event["Actor"]["ID"], attributes.get("name", "")]
    return [attributes.get("image", "")]


def _image_matches(value: str, names: list[str]) -> bool:
    bare = value.removeprefix("sha256:")
    for name in filter(None, names):
        if value in (name, name.rpartition(":")[0]) or name == f"{value}:latest":
            return True
        if len(bare) >= 4 and name.removeprefix("sha256:").startswith(bare):
            return True
    return False


def _container_matches(values: list[str], event: Event) -> bool:
    """Docker's fuzzy match: an ID prefix or a name prefix, container events only."""
    if event["Type"] != "container":
        return False
    actor, name = event["Actor"]["ID"], event["Actor"]["Attributes"].get("name", "")
    return any(actor.startswith(v) or name.startswith(v) for v in values)


def _label_matches(value: str, attributes: dict[str, str]) -> bool:
    key, eq, wanted = value.partition("=")
    return key in attributes and (not eq or attributes[key] == wanted)


def matcher(filters: dict[str, list[str]]) -> Matcher:
    """A test of an event against Docker's event filters (all keys must match).

    Raises:
        InvalidArgument: an unknown filter key.
    """
    for key in filters:
        if key not in FILTERS:
            raise InvalidArgument(f"invalid filter {key!r}: use {', '.join(FILTERS)}")

    def matches(event: Event) -> bool:
        attributes = event["Actor"]["Attributes"]
        for key, values in filters.items():
            if not values:
                continue
            if key == "type" and event["Type"] not in values:
                return False
            if key == "scope" and event["scope"] not in values:
                return False
            if key == "event" and not any(
                event["Action"] == v or event["Action"].startswith(f"{v}:") for v in values
            ):
                return False
            if key == "container" and not _container_matches(values, event):
                return False
            if key == "image" and not any(_image_matches(v, _image_names(event)) for v in values):
                return False
            if key == "label" and not all(_label_matches(v, attributes) for v in values):
                return False
        return True

    return matches


def _visible(uid: int, owner: int, event: Event) -> bool:
    if event["Type"] == "image" and owner == access.SHARED:
        return True
    return access.may_see(uid, owner)


def _line(event: Event) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /events?filters=&since=&until=``: JSON lines, one per event, as they happen."""
    sup = supervisor(request)
    uid = access.caller(request)
    matches = matcher(params.filters(request))
    since, until = timestamp_ns(request, "since"), timestamp_ns(request, "until")
    bus = sup.engine.events
    # Subscribe and copy the history in one step (no await): no gap, no repeat.
    with bus.subscribe() as sub:
        past = list(bus.history()) if since is not None or until is not None else []
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)  # the headers now: clients wait for them

        def wanted(owner: int, event: Event) -> bool:
            return _visible(uid, owner, event) and matches(event)

        for owner, event in past:
            if since is not None and event["timeNano"] < since:
                continue
            if until is not None and event["timeNano"] > until:
                break
            if wanted(owner, event):
                await response.write(_line(event))
        while until is None or time.time_ns() < until:
            left = POLL if until is None else min(POLL, (until - time.time_ns()) / 1e9)
            try:
                owner, event = await asyncio.wait_for(sub.get(), max(left, 0))
            except TimeoutError:
                if sup.closing or request.transport is None or request.transport.is_closing():
                    break
                continue
            if until is not None and event["timeNano"] > until:
                break
            if wanted(owner, event):
                await response.write(_line(event))
    await response.write_eof()
    return response


ROUTES: list[Route] = [
    ("GET", "/events", events),
]
