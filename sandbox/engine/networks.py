"""Networks at run time: bridges, addresses, names, for the containers one engine runs.

The records (`sandbox.store.networks`) say which networks exist; this module
makes them real when a container first needs one, and only in the engine's
own process: each bridge's namespace is held by an fd of the engine, so when
the engine ends (even killed) the namespaces, bridges and veth pairs go with
it, and with them every address it handed out. Nothing needs reconciling but
the containers' records, which the reconciler already marks exited.

Names: every container on a network finds the others by container name,
alias and short ID through its /etc/hosts, rewritten (in place: it is a bind
mount) whenever a container joins or leaves a network it is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sandbox.errors import Conflict, InvalidArgument, PermissionDenied, RuntimeFailure
from sandbox.runtime import links, netns
from sandbox.store.containers import ContainerRecord
from sandbox.store.networks import LAB, NONE, NetworkRecord, NetworkStore

log = logging.getLogger("sandboxd")
T = TypeVar("T")

# A bridge nobody is on goes down after this long (the next container on it
# brings it up again, in about 5 ms): a store with many networks costs nothing
# while they are not used.
IDLE_SECONDS = 1.0
# What ``--network`` accepts besides a network's name or ID, and what it means.
MODE_ALIASES = {"": NONE, "default": NONE, "bridge": LAB}
LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def loopback_hosts(hostname: str) -> str:
    """The /etc/hosts of a container on no network: its hostname is its loopback."""
    return f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass
class Endpoint:
    """One container on one network, while it runs."""

    cid: str
    name: str
    hostname: str
    aliases: list[str]
    network: NetworkRecord
    plug: links.Plug
    hosts_path: Path
    endpoint_id: str = field(default_factory=lambda: os.urandom(32).hex())

    def names(self) -> list[str]:
        """The names this container answers to on the network, in hosts-file order."""
        found: list[str] = []
        for name in (self.name, *self.aliases, self.cid[:12]):
            if name and name not in found:
                found.append(name)
        return found

    def settings(self) -> dict[str, Any]:
        """The endpoint as the container's record keeps it (for inspect)."""
        return {
            "NetworkID": self.network.id,
            "EndpointID": self.endpoint_id,
            "IPAddress": self.plug.address,
            "IPPrefixLen": self.plug.prefixlen,
            "Gateway": self.plug.gateway,
            "MacAddress": self.plug.mac,
            "Interface": self.plug.ifname,
            "Aliases": list(self.aliases),
            "DNSNames": self.names(),
        }


@dataclass
class LiveNetwork:
    """A network with its bridge up, and who is on it."""

    record: NetworkRecord
    bridge: links.Bridge
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    unplugging: int = 0  # veth removals still in flight on the bridge
    reserved: set[str] = field(default_factory=set)  # addresses of plugs in progress
    idle: asyncio.TimerHandle | None = None  # the bridge's scheduled shut-down

    def free_address(self, wanted: str = "") -> str:
        """The lowest free address of the subnet, or ``wanted`` if it is free.

        Raises:
            InvalidArgument: ``wanted`` is not a host address of the subnet.
            Conflict: ``wanted`` is taken, or no address is left.
        """
        subnet = ipaddress.ip_network(self.record.subnet)
        taken = {self.record.gateway, *self.reserved}
        taken.update(e.plug.address for e in self.endpoints.values())
        if wanted:
            try:
                address = ipaddress.ip_address(wanted)
            except ValueError:
                raise InvalidArgument(f"invalid IPv4 address {wanted!r}") from None
            if address not in subnet or address in (subnet.network_address,
                                                    subnet.broadcast_address):  # fmt: skip
                raise InvalidArgument(
                    f"address {wanted} is not a host address of network "
                    f"{self.record.name} ({subnet}): choose one inside it"
                )
            if wanted in taken:
                raise Conflict(
                    f"address {wanted} is already in use on network {self.record.name}: "
                    "choose another, or leave it out to get a free one"
                )
            return wanted
        for host in subnet.hosts():
            if str(host) not in taken:
                return str(host)
        raise Conflict(
            f"network {self.record.name} ({subnet}) has no free address left: stop a "
            "container on it, or make a network with a larger --subnet"
        )


class Networks:
    """The engine's networks: the records, and the bridges of those in use."""

    def __init__(self, root: Path) -> None:
        self.records = NetworkStore(root)
        self.live: dict[str, LiveNetwork] = {}
        self._bringing_up: dict[str, asyncio.Lock] = {}
        # Interface names being plugged or unplugged, per container: two
        # connects at once never both pick eth1.
        self._busy_ifnames: dict[str, set[str]] = {}
        # Netlink requests block in the kernel (see sandbox.runtime.links):
        # one thread of their own, so the event loop never waits on them.
        self._netlink: ThreadPoolExecutor | None = None

    async def _on_netlink(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking namespace or netlink call on the netlink thread."""
        if self._netlink is None:
            self._netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._netlink, functools.partial(call, *args, **kwargs))

    async def new_namespace(self) -> int:
        """A network namespace for a container, loopback up (its fd: close it when done)."""
        return await self._on_netlink(netns.create, links.SYSCTLS)

    async def adopt_namespace(self, ns_fd: int) -> None:
        """Give a namespace the engine did not make (a running container's) its settings."""
        await self._on_netlink(netns.set_sysctls, ns_fd, links.SYSCTLS)

    # -- configuration ------------------------------------------------------------

    def find(self, ref: str) -> NetworkRecord:
        """A network by name, ID or unique ID prefix (raises NetworkNotFound).

        ``bridge``, Docker's default network, is `lab`.
        """
        return self.records.find(LAB if ref == "bridge" else ref)

    def list(self) -> list[NetworkRecord]:
        return self.records.list()

    def create(self, name: str, subnet: str | None = None, labels: dict[str, str] | None = None,
               owner: int = 0) -> NetworkRecord:  # fmt: skip
        """Make a network (its bridge comes up when a container first joins it)."""
        return self.records.create(name, subnet, labels, owner)

    def remove(self, ref: str, shown: Callable[[str], bool] = lambda cid: True) -> NetworkRecord:
        """Forget a network nothing runs on.

        ``shown(cid)`` says whether the refusal may name a container (the
        caller's own); the others are counted.

        Raises:
            NetworkNotFound: no such network.
            PermissionDenied: `lab` and `none` always exist; a running container
                is still on it (Docker's 403 "has active endpoints").
        """
        record = self.records.find(ref)
        if record.builtin:
            raise PermissionDenied(f"{record.name} is a pre-defined network and cannot be removed")
        live = self.live.get(record.id)
        lock = self._bringing_up.get(record.id)
        joining = (live is not None and live.reserved) or (lock is not None and lock.locked())
        if (live is not None and live.endpoints) or joining:
            on = list(live.endpoints.values()) if live is not None else []
            named = sorted(e.name for e in on if shown(e.cid))
            if len(named) < len(on):
                named.append(f"{len(on) - len(named)} of other users")
            on_it = ", ".join(named) or "a container is joining it"
            raise PermissionDenied(
                f"error while removing network: network {record.name} id {record.id} has "
                f"active endpoints ({on_it}): stop those containers or disconnect them first "
                f"(`sandbox network disconnect {record.name} CONTAINER`)"
            )
        self.records.delete(record)
        if live is not None:
            self._shut(record.id)
        return record

    def endpoints(self, nid: str) -> list[Endpoint]:
        """Who is on the network now (empty when its bridge is down)."""
        live = self.live.get(nid)
        return list(live.endpoints.values()) if live is not None else []

    def resolve(self, mode: str, aliases: list[str] | None = None,
                endpoints: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
        """A container's networks, from ``--network`` and Docker's EndpointsConfig.

        Returns ``{network name: {"Aliases": [...], "IPv4Address": ""}}``,
        empty for loopback only.

        Raises:
            InvalidArgument: ``host`` or ``container:`` modes, or settings for
                a network the container is not on.
            NetworkNotFound: no such network.
        """
        given, mode = mode, MODE_ALIASES.get(mode, mode)
        if mode == "host" or mode.startswith("container:"):
            raise InvalidArgument(
                f"network mode {mode!r} is not supported: a container never shares the "
                "host's network or another container's; use --network lab (or a network "
                "you made) to reach other containers"
            )
        # Loopback only, the default of every notebook cell: no network record
        # is read on that path.
        record = None if mode == NONE else self.records.find(mode)
        endpoints = dict(endpoints or {})
        settings: dict[str, Any] = {}
        keys = (given, NONE) if record is None else (given, record.name, record.id)
        for key in keys:
            settings = endpoints.pop(key, None) or settings
        name = NONE if record is None else record.name
        if endpoints:
            raise InvalidArgument(
                f"endpoint settings for {', '.join(sorted(endpoints))} but the container "
                f"joins {name} only: connect it to other networks after creating it"
            )
        if record is None or record.name == NONE:
            if aliases or settings.get("Aliases"):
                raise InvalidArgument(
                    "--network-alias needs a network: add --network lab (or another)"
                )
            return {}
        return {record.name: _endpoint_config(record, settings, aliases)}

    # -- run time -------------------------------------------------------------------

    async def _up(self, record: NetworkRecord) -> LiveNetwork:
        """The network's live bridge, made on first use."""
        lock = self._bringing_up.setdefault(record.id, asyncio.Lock())
        async with lock:
            live = self.live.get(record.id)
            if live is not None and live.idle is not None:
                live.idle.cancel()
                live.idle = None
            if live is None:
                bridge = await self._on_netlink(links.make_bridge, record.gateway,
                                                record.prefixlen)  # fmt: skip
                live = self.live[record.id] = LiveNetwork(record, bridge)
                log.info("network %s is up (%s)", record.name, record.subnet)
            return live

    async def connect(self, container: ContainerRecord, ns_fd: int, name: str,
                      hosts_path: Path) -> Endpoint:  # fmt: skip
        """Plug a container's namespace into one of its networks; returns the endpoint.

        The container's record is not saved here; ``container.networks[name]``
        holds its settings (aliases, a fixed address).

        Raises:
            NetworkNotFound: the network was removed since the container was made.
            Conflict: no free address, or the fixed one is taken.
            RuntimeFailure: the kernel refused a step (the message names it).
        """
        live = await self._up(self.records.find(name))
        record = live.record
        try:
            plug = await self._plug(live, container, ns_fd, name)
        except BaseException:
            self._idle_later(live)  # a bridge brought up for nothing goes down again
            raise
        aliases = list(container.networks.get(name, {}).get("Aliases") or [])
        endpoint = Endpoint(container.id, container.name, container.hostname, aliases,
                            record, plug, hosts_path)  # fmt: skip
        live.endpoints[container.id] = endpoint
        self._write_hosts_around(container.id)
        return endpoint

    async def _plug(self, live: LiveNetwork, container: ContainerRecord, ns_fd: int,
                    name: str) -> links.Plug:  # fmt: skip
        """A veth pair for the container on ``live``, at its next free (or its fixed) address."""
        record = live.record
        if container.id in live.endpoints:
            raise Conflict(f"container {container.name} is already on network {record.name}")
        settings = container.networks.get(name, {})
        address = live.free_address(settings.get("IPv4Address", ""))
        busy = self._busy_ifnames.setdefault(container.id, set())
        ifname = _next_ifname({e.plug.ifname for e in self._endpoints_of(container.id)} | busy)
        live.reserved.add(address)  # others starting meanwhile get other addresses
        busy.add(ifname)
        # Our own descriptor of the namespace: the caller's may be closed
        # (the container exits) while the netlink thread still works in it.
        own_fd = os.dup(ns_fd)
        try:
            return await self._on_netlink(
                links.plug, live.bridge, own_fd, ifname=ifname,
                host_ifname="veth" + os.urandom(5).hex(),
                address=address, prefixlen=record.prefixlen, gateway=record.gateway,
                default_route=ifname == "eth0",
            )  # fmt: skip
        except OSError as exc:  # NetlinkError too: the kernel's answer, in words
            raise RuntimeFailure(
                f"cannot connect container {container.name} to network {record.name}: "
                f"{os.strerror(exc.errno) if exc.errno else exc}; try again, and if it "
                "persists see the daemon's log",
                step="network", errno=exc.errno or 0,
            ) from exc
        finally:
            os.close(own_fd)
            live.reserved.discard(address)
            busy.discard(ifname)
            if not busy:
                self._busy_ifnames.pop(container.id, None)

    def release(self, cid: str, name: str | None = None) -> list[Endpoint]:
        """Take a container off its networks (or off ``name``) in the books.

        Its addresses are free at once and the others' /etc/hosts rewritten.
        Its veth pairs go with its namespace, which the kernel tears down on
        its own time once the container has exited (deleting a veth makes the
        caller wait for an RCU barrier); `disconnect` removes one from a
        container that goes on running.
        """
        released = []
        for live in list(self.live.values()):
            if name is not None and name not in (live.record.name, live.record.id):
                continue
            endpoint = live.endpoints.pop(cid, None)
            if endpoint is None:
                continue
            released.append(endpoint)
            self._idle_later(live)
            for other in live.endpoints.values():
                self._write_hosts(other)
        if released and name is not None:
            self._write_hosts_for(cid, left=released[0])
        return released

    async def disconnect(self, cid: str, name: str) -> None:
        """Take a running container off one network, its veth pair removed before returning.

        On the netlink thread: the wait for the kernel's RCU barrier costs
        this request, not the event loop.
        """
        busy = self._busy_ifnames.setdefault(cid, set())
        for endpoint in self.release(cid, name):
            live = self.live.get(endpoint.network.id)
            if live is None:
                continue
            live.unplugging += 1
            busy.add(endpoint.plug.ifname)  # not reused until it is gone
            try:
                await self._unplug(live, endpoint)
            finally:
                busy.discard(endpoint.plug.ifname)
        if not busy:
            self._busy_ifnames.pop(cid, None)

    async def _unplug(self, live: LiveNetwork, endpoint: Endpoint) -> None:
        try:
            await self._on_netlink(links.unplug, live.bridge, endpoint.plug.host_ifname)
        except Exception as exc:  # its namespace is going anyway; say it, go on
            log.warning("could not remove %s: %s", endpoint.plug.host_ifname, exc)
        finally:
            live.unplugging -= 1
        self._idle_later(live)

    def _idle_later(self, live: LiveNetwork) -> None:
        """Bring the bridge down after `IDLE_SECONDS` if nobody is on it by then."""
        if live.idle is None and not (live.endpoints or live.unplugging or live.reserved):
            loop = asyncio.get_running_loop()
            live.idle = loop.call_later(IDLE_SECONDS, self._shut_if_idle, live.record.id)

    def _shut_if_idle(self, nid: str) -> None:
        live = self.live.get(nid)
        if live is not None:
            live.idle = None
        if live is not None and not (live.endpoints or live.unplugging or live.reserved):
            self._shut(nid)
            log.info("network %s is down (nobody on it)", live.record.name)

    def _endpoints_of(self, cid: str) -> list[Endpoint]:
        return [live.endpoints[cid] for live in self.live.values() if cid in live.endpoints]

    def _write_hosts_around(self, cid: str) -> None:
        """Rewrite the /etc/hosts of ``cid`` and of everyone sharing a network with it."""
        seen = {cid}
        self._write_hosts_for(cid)
        for endpoint in self._endpoints_of(cid):
            for other in self.live[endpoint.network.id].endpoints.values():
                if other.cid not in seen:
                    seen.add(other.cid)
                    self._write_hosts(other)

    def _write_hosts_for(self, cid: str, left: Endpoint | None = None) -> None:
        """Rewrite ``cid``'s /etc/hosts; ``left``: an endpoint it just lost (for its path)."""
        mine = self._endpoints_of(cid)
        if mine:
            self._write_hosts(mine[0])
        elif left is not None:  # on no network any more: loopback only, no peers
            write_in_place(left.hosts_path, loopback_hosts(left.hostname))

    def _write_hosts(self, endpoint: Endpoint) -> None:
        """One container's /etc/hosts: localhost, itself, then its networks' others."""
        mine = self._endpoints_of(endpoint.cid)
        lines = [LOCALHOST]
        if mine:  # its hostname, then every name it has on any of its networks
            own = [endpoint.hostname, *(n for e in mine for n in e.names())]
            lines.append(f"{mine[0].plug.address}\t{' '.join(dict.fromkeys(own))}\n")
        for mine_on in mine:
            lines.append(f"# network {mine_on.network.name}\n")
            for other in self.live[mine_on.network.id].endpoints.values():
                if other.cid != endpoint.cid:
                    lines.append(f"{other.plug.address}\t{' '.join(other.names())}\n")
        write_in_place(endpoint.hosts_path, "".join(lines))

    def _shut(self, nid: str) -> None:
        live = self.live.pop(nid, None)
        if live is not None:
            if live.idle is not None:
                live.idle.cancel()
            assert self._netlink is not None  # it made the bridge
            self._netlink.submit(live.bridge.close)  # its handle belongs to that thread

    async def close(self) -> None:
        """Bring every bridge down (the engine is ending)."""
        for nid in list(self.live):
            self._shut(nid)
        if self._netlink is not None:
            self._netlink.shutdown(wait=True)
            self._netlink = None


def _endpoint_config(record: NetworkRecord, settings: dict[str, Any],
                     aliases: list[str] | None) -> dict[str, Any]:  # fmt: skip
    """A container's settings on one network: aliases and a fixed address, checked."""
    names = [*(aliases or []), *(settings.get("Aliases") or [])]
    for alias in names:
        if not isinstance(alias, str) or not _hostname_ok(alias):
            raise InvalidArgument(
                f"invalid network alias {alias!r}: use letters, digits, - and ., "
                "up to 63 characters"
            )
    ipam = settings.get("IPAMConfig") or {}
    fixed = ipam.get("IPv4Address", "") if isinstance(ipam, dict) else ""
    if fixed:
        try:
            inside = ipaddress.ip_address(fixed) in ipaddress.ip_network(record.subnet)
        except ValueError:
            raise InvalidArgument(f"invalid IPv4 address {fixed!r}") from None
        if not inside:
            raise InvalidArgument(
                f"address {fixed} is not in network {record.name}'s subnet {record.subnet}"
            )
    return {"Aliases": list(dict.fromkeys(names)), "IPv4Address": fixed}


def _hostname_ok(name: str) -> bool:
    return 0 < len(name) <= 63 and all(c.isalnum() or c in "-._" for c in name)


def _next_ifname(used: set[str]) -> str:
    n = 0
    while f"eth{n}" in used:
        n += 1
    return f"eth{n}"


def write_in_place(path: Path, text: str) -> None:
    """Replace a file's contents keeping its inode (a bind mount shows that inode)."""
    with contextlib.suppress(FileNotFoundError):  # the container was removed meanwhile
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
