"""The kernel's side of networks: ``%network``'s view, ``%%container -p``, and the link.

The daemon does the networking (bridges, addresses, /etc/hosts, the port
proxy); the kernel only chooses, per session, which network the next cells'
containers join (HostConfig.NetworkMode), which ports a ``%%container``
container publishes (HostConfig.PortBindings), and shows what the daemon says
of them. Errors here are `InvalidArgument`s saying what to write instead; the
magics add which magic it was.
"""

from __future__ import annotations

import html
import ipaddress
from typing import Any

from sandbox import publish
from sandbox.client import AsyncClient
from sandbox.errors import InvalidArgument

from .session import NO_NETWORK, LongLived


async def find(client: AsyncClient, ref: str) -> dict[str, Any]:
    """The daemon's view of network ``ref`` (``GET /networks/{id}``), by name, ID or prefix.

    Raises:
        InvalidArgument: ``host`` or ``container:``: modes the sandbox refuses.
        NotFound: no such network (its message names ``sandbox network ls``).
    """
    if ref == "host" or ref.startswith("container:"):  # Docker's modes that share a namespace
        raise InvalidArgument(
            f"{ref}: a cell never shares the host's network or another container's; "
            "use %network lab (or a network made with `sandbox network create`)"
        )
    return dict(await client.inspect_network(ref))


def describe(info: dict[str, Any] | None) -> str:
    """``%network``: the session's network, its subnet, and who is on it now.

    ``info`` is ``GET /networks/{id}``'s reply, None for ``none``.
    """
    if info is None or info.get("Name") == NO_NETWORK:
        return (
            "network: none: each cell has its own loopback (127.0.0.1) only, and reaches "
            "no other container; %network lab puts the next cells on the lab network"
        )
    name = info["Name"]
    config = (info.get("IPAM") or {}).get("Config") or [{}]
    subnet, gateway = config[0].get("Subnet", "?"), config[0].get("Gateway", "")
    lines = [
        f"network: {name} (subnet {subnet}" + (f", gateway {gateway})" if gateway else ")"),
        f"The next cells, and the %%container containers made from now on, join {name}: "
        "they reach each other by container name.",
    ]
    members = sorted(
        ((str(c.get("Name", "")).lstrip("/"), str(c.get("IPv4Address", "")).partition("/")[0])
         for c in (info.get("Containers") or {}).values()),
        key=lambda item: _address_key(item[1]),
    )  # fmt: skip
    if not members:
        lines.append("On it now: nobody (a container joins when it starts).")
        return "\n".join(lines)
    width = max(len(member) for member, _ in members)
    lines.append("On it now:")
    lines += [f"  {member:<{width}}  {address}" for member, address in members]
    return "\n".join(lines)


def _address_key(address: str) -> tuple[int, str]:
    try:
        return int(ipaddress.ip_address(address)), address
    except ValueError:
        return 0, address


# -- %%container NAME [-p ...] ------------------------------------------------------------


def parse_container_args(args: list[str]) -> tuple[str, publish.PortBindings]:
    """``%%container NAME [-p SPEC]...``: the name and Docker's PortBindings.

    The options may come before or after NAME; ``-p SPEC``, ``-pSPEC``,
    ``--publish SPEC`` and ``--publish=SPEC`` are the same. The SPECs are
    only split (`sandbox.publish`): the daemon refuses what cannot be
    published when it is asked to make the container, in its own words.

    Raises:
        InvalidArgument: no NAME, two names, an unknown option, or a SPEC that
            is not ``[IP:][HOSTPORT:]PORT``.
    """
    names: list[str] = []
    specs: list[str] = []
    words = iter(args)
    for word in words:
        if word in ("-p", "--publish"):
            spec = next(words, None)
            if spec is None:
                raise InvalidArgument(f"{word} needs a port: {publish.USAGE}")
        elif word.startswith("--publish="):
            spec = word.removeprefix("--publish=")
        elif word.startswith("-p") and len(word) > 2:
            spec = word[2:]
        elif word.startswith("-"):
            raise InvalidArgument(f"unknown option {word}: the only one is {publish.USAGE}")
        else:
            names.append(word)
            continue
        specs.append(spec)
    if len(names) != 1:
        raise InvalidArgument("give one container name" + (f", not {len(names)}" if names else ""))
    return names[0], publish.split_publish(specs)


def published_bundle(lived: LongLived) -> dict[str, Any]:
    """Where a ``%%container``'s ports are published: links (text/html) and text/plain."""
    urls = lived.urls()
    plain = [f"{lived.name}: port {port} is published at {url}" for port, url in urls]
    rows = [
        f'<div>{html.escape(lived.name)}: port {port} is published at '
        f'<a href="{html.escape(url)}" target="_blank" rel="noopener">{html.escape(url)}</a>'
        "</div>"
        for port, url in urls
    ]  # fmt: skip
    return {"text/plain": "\n".join(plain), "text/html": "\n".join(rows)}


def settings_differ(lived: LongLived, network: str, bindings: dict[str, Any]) -> list[str]:
    """What an existing ``%%container`` keeps although the cell asked otherwise (notes)."""
    notes = []
    if lived.network != network:
        notes.append(
            f"{lived.name} stays on network {lived.network}, the one it was made on (the "
            f"session's is {network} now): %rm {lived.name}, then run this cell again to make "
            f"it on {network}"
        )
    if bindings and _normal(bindings) != _normal(lived.bindings):
        notes.append(
            f"{lived.name} exists already, and -p applies only when it is made: "
            f"%rm {lived.name}, then run this cell again to publish those ports"
        )
    return notes


def _normal(bindings: dict[str, Any]) -> dict[str, list[str]]:
    return {key: sorted(str(b.get("HostPort") or "") for b in (targets or [{}]))
            for key, targets in bindings.items()}  # fmt: skip
