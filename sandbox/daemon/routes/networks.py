"""``/networks/...``: list, inspect, create, remove, connect, disconnect, prune.

Docker's paths and JSON shapes, for the docker CLI's ``docker network`` and
docker-py's ``client.networks``. A network is a bridge in a namespace of its
own (sandbox/engine/networks.py); the only driver is ``bridge``, with one
IPv4 subnet whose first address is the gateway, and every network is
internal: it reaches its own containers and nothing else.

Who may do what (see access.py):

- Networks are shared by every user of the daemon, as Docker's are: anyone
  lists and inspects them, and connects their own containers to them.
- Only the user who made a network, or root, removes it; `lab` and `none`
  nobody does. A network some container runs on is not removed (403, as
  Docker answers "has active endpoints").
- A network's ``Containers`` lists only the containers the caller may see:
  someone else's container is not there at all, as everywhere else. On the
  network itself, though, containers meet: each one's /etc/hosts names the
  others on it, whoever runs them, and they reach each other (that is what
  a shared network is for; a class that wants its students apart gives
  each one a network of their own).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web

from sandbox.daemon import access, params
from sandbox.daemon.params import field, json_reply
from sandbox.daemon.routes import Route, supervisor
from sandbox.engine import views
from sandbox.engine.networks import Endpoint
from sandbox.errors import InvalidArgument, NotFound, PermissionDenied
from sandbox.store.networks import NetworkRecord, parse_subnet

LIST_FILTERS = ("name", "id", "driver", "label", "type")
DRIVERS = ("", "bridge")


# -- what the caller sees ------------------------------------------------------------


def _visible_endpoints(request: web.Request, network: NetworkRecord) -> list[Endpoint]:
    """The containers on ``network`` now, those the caller may see only."""
    endpoints = supervisor(request).engine.networks.endpoints(network.id)
    if access.is_admin(access.caller(request)):
        return endpoints
    mine = {record.id for record in access.containers(request)}
    return [e for e in endpoints if e.cid in mine]


def _view(request: web.Request, network: NetworkRecord) -> dict[str, Any]:
    return views.network_view(network, _visible_endpoints(request, network))


def _label_matches(wanted: str, labels: dict[str, str]) -> bool:
    key, eq, value = wanted.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _matches(network: NetworkRecord, filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key not in LIST_FILTERS:
            raise InvalidArgument(f"invalid filter {key!r}: use {', '.join(LIST_FILTERS)}")
        if not values:
            continue
        if key == "name" and not any(params.name_matches(v, network.name) for v in values):
            return False
        if key == "id" and not any(network.id.startswith(v) for v in values):
            return False
        if key == "driver" and network.driver not in values:
            return False
        if key == "label" and not all(_label_matches(v, network.labels) for v in values):
            return False
        if key == "type" and ("builtin" if network.builtin else "custom") not in values:
            return False
    return True


async def list_networks(request: web.Request) -> web.StreamResponse:
    """``GET /networks?filters=``: every network (filters: name, id, driver, label, type).

    Each item is the network's inspect, live containers included (Docker
    leaves them out of the list; the sandbox's `network ls` counts them).
    """
    filters = params.filters(request)
    networks = supervisor(request).engine.networks.list()
    return json_reply([_view(request, n) for n in networks if _matches(n, filters)])


async def inspect(request: web.Request) -> web.StreamResponse:
    """``GET /networks/{id}``: by name, ID or unique ID prefix; 404 if none."""
    network = supervisor(request).engine.networks.find(request.match_info["id"])
    return json_reply(_view(request, network))


# -- create --------------------------------------------------------------------------


def _refuse_set(body: dict[str, Any], key: str, what: str, where: str = "") -> None:
    """A 400 if ``key`` holds anything (a feature the sandbox does not have)."""
    if body.get(key) not in (None, "", False, {}, []):
        raise InvalidArgument(f"{where}{key} is not supported: {what}")


def _subnet(ipam: dict[str, Any]) -> str | None:
    """The one IPv4 subnet of Docker's IPAM block (None: pick a free one), checked.

    Raises:
        InvalidArgument: another IPAM driver, several subnets, a range, or a
            gateway other than the subnet's first address.
    """
    driver = field(ipam, "Driver", str, "", "IPAM.")
    if driver not in ("", "default"):
        raise InvalidArgument(
            f'IPAM driver "{driver}" is not supported: leave it out (the default one)'
        )
    _refuse_set(ipam, "Options", "leave them out", "IPAM.")
    configs = field(ipam, "Config", list, [], "IPAM.")
    if len(configs) > 1:
        raise InvalidArgument(
            f"a network has one subnet, and {len(configs)} were given: give one --subnet"
        )
    if not configs:
        return None
    config = configs[0]
    if not isinstance(config, dict):
        raise InvalidArgument("invalid IPAM.Config[0]: expected an object")
    where = "IPAM.Config[0]."
    _refuse_set(config, "IPRange", "containers get addresses from the whole subnet", where)
    _refuse_set(config, "AuxiliaryAddresses", "leave them out", where)
    subnet = field(config, "Subnet", str, "", where)
    gateway = field(config, "Gateway", str, "", where)
    if not subnet:
        if gateway:
            raise InvalidArgument(f"gateway {gateway} needs a subnet: give --subnet too")
        return None
    first = str(next(parse_subnet(subnet).hosts()))
    if gateway:
        try:
            given = str(ipaddress.IPv4Address(gateway.strip()))
        except ValueError:
            raise InvalidArgument(
                f"invalid gateway {gateway!r}: write an IPv4 address such as {first}"
            ) from None
        if given != first:
            raise InvalidArgument(
                f"gateway {gateway} is not supported for {subnet}: a network's gateway is "
                f"its subnet's first address ({first}); leave --gateway out"
            )
    return subnet


def _labels(body: dict[str, Any]) -> dict[str, str]:
    labels = field(body, "Labels", dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise InvalidArgument("invalid Labels: every key and value must be a string")
    return dict(labels)


async def create(request: web.Request) -> web.StreamResponse:
    """``POST /networks/create``: 201 ``{"Id", "Warning"}``; 409 for a name or subnet in use.

    ``Internal`` is accepted either way: every sandbox network is internal.
    ``CheckDuplicate`` too: a name is always checked.
    """
    body = await params.json_body(request)
    name = field(body, "Name", str, "").strip()
    if not name:
        raise InvalidArgument("a network needs a Name: sandbox network create NAME")
    driver = field(body, "Driver", str, "")
    if driver not in DRIVERS:
        raise InvalidArgument(
            f'network driver "{driver}" is not supported: the sandbox makes bridge networks '
            "only (leave --driver out)"
        )
    for key, what in (
        ("EnableIPv6", "networks are IPv4 only"),
        ("Ingress", "there is no swarm"),
        ("ConfigOnly", "every network is a real one"),
        ("Options", "bridge driver options cannot be set; leave them out"),
    ):
        _refuse_set(body, key, what)
    _refuse_set(field(body, "ConfigFrom", dict, {}), "Network", "give the subnet itself",
                "ConfigFrom.")  # fmt: skip
    scope = field(body, "Scope", str, "")
    if scope not in ("", "local"):
        raise InvalidArgument(f'network scope "{scope}" is not supported: networks are local')
    field(body, "Internal", bool, True)  # checked, and true either way
    subnet = _subnet(field(body, "IPAM", dict, {}))
    engine = supervisor(request).engine
    network = engine.networks.create(name, subnet, _labels(body), owner=access.caller(request))
    engine.events.network("create", network)
    return json_reply({"Id": network.id, "Warning": ""}, status=201)


# -- remove ----------------------------------------------------------------------------


def _remove(request: web.Request, network: NetworkRecord) -> None:
    """Remove a network: 403 for someone else's, a built-in or a busy one (the engine's)."""
    engine = supervisor(request).engine
    if not network.builtin:
        access.check_network_owner(request, network, "remove")
    visible = {e.cid for e in _visible_endpoints(request, network)}
    engine.networks.remove(network.id, shown=visible.__contains__)
    engine.events.network("destroy", network)


async def remove(request: web.Request) -> web.StreamResponse:
    """``DELETE /networks/{id}``: 204; 403 for a built-in, someone else's or a busy network."""
    network = supervisor(request).engine.networks.find(request.match_info["id"])
    _remove(request, network)
    return web.Response(status=204)


async def prune(request: web.Request) -> web.StreamResponse:
    """``POST /networks/prune?filters=``: remove the caller's networks no container is on.

    "On" means configured: a stopped container that would join the network
    at its next start keeps it. Filters: ``label`` (``key`` or ``key=value``).
    """
    filters = params.filters(request)
    for key in filters:
        if key != "label":
            raise InvalidArgument(f"invalid filter {key!r} for prune: use label")
    engine = supervisor(request).engine
    uid = access.caller(request)
    used = {name for c in engine.store.containers.list() for name in c.networks}
    deleted = []
    for network in engine.networks.list():
        unused = network.name not in used and not engine.networks.endpoints(network.id)
        labelled = all(_label_matches(v, network.labels) for v in filters.get("label", []))
        if network.builtin or not unused or not labelled or not access.may_see(uid, network.owner):
            continue
        try:
            _remove(request, network)
        except (NotFound, PermissionDenied):  # [should never happen] one thread, no await
            continue
        deleted.append(network.name)
    return json_reply({"NetworksDeleted": deleted})


# -- connect, disconnect ---------------------------------------------------------------


def _endpoint_config(body: dict[str, Any]) -> tuple[list[str], str]:
    """The aliases and fixed IPv4 address of Docker's EndpointConfig, checked."""
    config = field(body, "EndpointConfig", dict, {})
    where = "EndpointConfig."
    for key, what in (
        ("Links", "containers on a network reach each other by name"),
        ("MacAddress", "a container's MAC address follows its IP address"),
        ("DriverOpts", "leave them out"),
    ):
        _refuse_set(config, key, what, where)
    aliases = params.string_list(config, "Aliases", where) or []
    ipam = field(config, "IPAMConfig", dict, {}, where)
    where += "IPAMConfig."
    _refuse_set(ipam, "IPv6Address", "networks are IPv4 only", where)
    _refuse_set(ipam, "LinkLocalIPs", "leave them out", where)
    return aliases, field(ipam, "IPv4Address", str, "", where).strip()


def _container_ref(body: dict[str, Any]) -> str:
    ref = field(body, "Container", str, "").strip()
    if not ref:
        raise InvalidArgument("missing Container: name the container to connect or disconnect")
    return ref


async def connect(request: web.Request) -> web.StreamResponse:
    """``POST /networks/{id}/connect`` ``{Container, EndpointConfig}``: 200.

    A running container gets its next interface (eth1, ...) at once; a
    stopped one joins when it starts.
    """
    engine = supervisor(request).engine
    network = engine.networks.find(request.match_info["id"])
    body = await params.json_body(request)
    container = access.container(request, _container_ref(body))
    aliases, address = _endpoint_config(body)
    await supervisor(request).settled(container.id)  # not in the middle of its start
    await engine.connect(container.id, network.name, aliases=aliases, address=address)
    return web.Response(status=200)


async def disconnect(request: web.Request) -> web.StreamResponse:
    """``POST /networks/{id}/disconnect`` ``{Container, Force}``: 200.

    ``Force`` is accepted and changes nothing: a container that is not on
    the network is a 409 either way.
    """
    engine = supervisor(request).engine
    network = engine.networks.find(request.match_info["id"])
    body = await params.json_body(request)
    container = access.container(request, _container_ref(body))
    field(body, "Force", bool, False)
    await supervisor(request).settled(container.id)
    await engine.disconnect(container.id, network.name)
    return web.Response(status=200)


ROUTES: list[Route] = [
    ("GET", "/networks", list_networks),
    ("POST", "/networks/create", create),
    ("POST", "/networks/prune", prune),
    ("GET", "/networks/{id}", inspect),
    ("DELETE", "/networks/{id}", remove),
    ("POST", "/networks/{id}/connect", connect),
    ("POST", "/networks/{id}/disconnect", disconnect),
]
