"""Bridges and veth pairs, made over netlink with pyroute2.

A network is a bridge (``br0``) in a namespace of its own, holding the
gateway address; a container joins it through a veth pair: one end on the
bridge, named after the container, the other moved straight into the
container's namespace as ``eth0`` (``eth1`` for a second network), with the
container's address and a default route to the gateway. Nothing here ever
runs in, or adds anything to, the host's own network namespace: every
netlink socket is made inside the namespace it configures (`netns.socket_in`).

These calls block: the kernel does a request's work inside the sending
system call (deleting a veth waits for an RCU barrier, 10-40 ms), so the
engine runs them on a thread of their own (see `sandbox.engine.networks`),
never on its event loop. A `Bridge`'s handle belongs to that thread.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from sandbox.runtime import netns

NETLINK_ROUTE = 0
BRIDGE = "br0"
# In every namespace the engine makes: no IPv6 on new links (the networks are
# IPv4; a lesson's `ip addr` stays readable), ping without CAP_NET_RAW.
SYSCTLS = {
    "ipv6/conf/default/disable_ipv6": "1",
    "ipv4/ping_group_range": "0 2147483647",
}


def rtnl(ns_fd: int) -> IPRoute:
    """An rtnetlink handle on the namespace ``ns_fd`` (close it when done)."""
    sock = netns.socket_in(ns_fd, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    try:
        return IPRoute(fileno=sock.fileno())
    except BaseException:
        sock.close()
        raise
    finally:
        sock.detach()  # the handle owns the descriptor now (or it is closed)


def mac_for(address: str) -> str:
    """Docker's rule: 02:42 then the IPv4 address, so the MAC says which container it is."""
    octets = ipaddress.IPv4Address(address).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in octets)


@dataclass
class Bridge:
    """A network's live namespace and its bridge (see `make_bridge`)."""

    ns_fd: int
    handle: IPRoute
    index: int

    def close(self) -> None:
        """Let the namespace go: the bridge and every veth end on it go with it."""
        self.handle.close()
        os.close(self.ns_fd)


def make_bridge(gateway: str, prefixlen: int) -> Bridge:
    """A new namespace with a bridge holding ``gateway/prefixlen``, up."""
    ns_fd = netns.create(SYSCTLS)
    try:
        handle = rtnl(ns_fd)
        try:
            handle.link("add", ifname=BRIDGE, kind="bridge")
            (index,) = handle.link_lookup(ifname=BRIDGE)
            handle.addr("add", index=index, address=gateway, prefixlen=prefixlen)
            handle.link("set", index=index, state="up")
        except BaseException:
            handle.close()
            raise
    except BaseException:
        os.close(ns_fd)
        raise
    return Bridge(ns_fd, handle, index)


@dataclass
class Plug:
    """One end of a veth pair in a container, as `plug` made it."""

    host_ifname: str
    ifname: str
    address: str
    prefixlen: int
    gateway: str
    mac: str


def plug(bridge: Bridge, ns_fd: int, *, host_ifname: str, ifname: str, address: str,
               prefixlen: int, gateway: str, default_route: bool) -> Plug:  # fmt: skip
    """Connect the namespace ``ns_fd`` to ``bridge`` with a new veth pair.

    Args:
        host_ifname: the bridge end's name (unique in the bridge's namespace).
        ifname: the container end's name (``eth0``).
        default_route: also route everything else through the gateway (the
            container's first network only).

    Raises:
        NetlinkError: the kernel refused (the bridge end is removed again).
    """
    netns.check_foreign(ns_fd)  # the peer end must never land in the host's namespace
    mac = mac_for(address)
    bridge.handle.link(
        "add", ifname=host_ifname, kind="veth", master=bridge.index, state="up",
        peer={"ifname": ifname, "net_ns_fd": ns_fd, "address": mac},
    )  # fmt: skip
    try:
        inside = rtnl(ns_fd)
        try:
            (index,) = inside.link_lookup(ifname=ifname)
            inside.addr("add", index=index, address=address, prefixlen=prefixlen)
            inside.link("set", index=index, state="up")
            if default_route:
                inside.route("add", dst="default", gateway=gateway)
        finally:
            inside.close()
    except BaseException:
        unplug(bridge, host_ifname)
        raise
    return Plug(host_ifname, ifname, address, prefixlen, gateway, mac)


def unplug(bridge: Bridge, host_ifname: str) -> None:
    """Remove a veth pair by its bridge end (both ends go); gone already is fine."""
    try:
        bridge.handle.link("del", ifname=host_ifname)
    except NetlinkError as exc:
        if exc.code not in (19,):  # ENODEV: the container's namespace took it already
            raise
