"""``-p`` as typed, as Docker's PortBindings: ``[IP:][HOSTPORT:]PORT[/PROTO]``.

``sandbox run -p`` and the kernel's ``%%container -p`` both split their
values here, and only split: what may be published (TCP, port numbers, the
host's loopback) is the daemon's to decide, and its refusals say what to
write instead (`sandbox.engine.ports.parse_bindings`). So there is one list
of rules and one wording, whichever client sent the binding.
"""

from __future__ import annotations

from collections.abc import Iterable

from sandbox.errors import InvalidArgument

USAGE = "-p [127.0.0.1:]HOSTPORT:PORT"
PortBindings = dict[str, list[dict[str, str]]]


def split_publish(specs: Iterable[str]) -> PortBindings:
    """``-p`` values as PortBindings: ``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``.

    Parts left out stay empty (the daemon reads an empty HostIp as the
    loopback, an empty HostPort as a free port); a port given twice keeps
    both host ports.

    Raises:
        InvalidArgument: a value with more than three parts or no PORT,
            which no PortBindings entry could say.
    """
    bindings: PortBindings = {}
    for spec in specs:
        address, _, proto = spec.partition("/")
        parts = address.split(":")
        if len(parts) > 3 or not parts[-1]:
            raise InvalidArgument(
                f"-p {spec}: write {USAGE} (PORT: the server's port in the container; "
                "HOSTPORT: the one to open on this machine)"
            )
        host_ip, host_port, port = ["", "", *parts][-3:]
        bindings.setdefault(f"{port}/{proto or 'tcp'}", []).append(
            {"HostIp": host_ip, "HostPort": host_port}
        )
    return bindings
