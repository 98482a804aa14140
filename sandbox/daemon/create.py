"""A ``POST /containers/create`` body, checked and turned into the engine's arguments.

Every field the docker clients send is either honoured, harmless to ignore
(an empty ``PortBindings``, ``MemorySwappiness: -1``), or refused with a 400
that names the option: a limit or a mount that is silently dropped would
make a lesson lie.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from sandbox.daemon.params import field as get
from sandbox.daemon.params import string_list
from sandbox.errors import InvalidArgument
from sandbox.runtime.cgroups import Limits
from sandbox.store.references import parse as parse_reference

MIN_MEMORY = 6 * 1024 * 1024  # Docker's floor: below this a shell cannot even start
_DEFAULT_PREFIXES = ("docker.io/library/", "index.docker.io/library/", "docker.io/")

# HostConfig keys the sandbox cannot honour, with the docker option that sets them.
_UNSUPPORTED = {
    "Binds": "-v/--volume",
    "Mounts": "--mount",
    "Privileged": "--privileged",
    "CapAdd": "--cap-add",
    "Devices": "--device",
    "CpuQuota": "--cpu-quota (use --cpus)",
    "CpuPeriod": "--cpu-period (use --cpus)",
    "CpusetCpus": "--cpuset-cpus",
    "MemoryReservation": "--memory-reservation",
    "VolumesFrom": "--volumes-from",
}


@dataclass
class CreateRequest:
    """What ``Engine.create`` needs, plus the terminal size to apply at start."""

    image: str
    cmd: list[str] | None
    env: list[str]
    workdir: str | None
    hostname: str | None
    tty: bool
    open_stdin: bool
    auto_remove: bool
    limits: Limits = field(default_factory=Limits)
    console_size: tuple[int, int] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # HostConfig.NetworkMode ("" is the sandbox's default: loopback only),
    # NetworkingConfig.EndpointsConfig and PortBindings, as sent: the engine
    # knows the networks, and checks them.
    network_mode: str = ""
    endpoints: dict[str, Any] = field(default_factory=dict)
    port_bindings: dict[str, Any] = field(default_factory=dict)


def parse_create(body: dict[str, Any]) -> CreateRequest:
    """Check a create body.

    Raises:
        InvalidArgument: a missing image, a field of the wrong type, a bad or
            unsupported limit or option; the message names it.
    """
    image = get(body, "Image", str, "")
    if not image.strip():
        raise InvalidArgument("no image given: set Image in the request body")
    if not re.fullmatch(r"(sha256:)?[0-9a-f]{4,64}", image.strip()):
        parse_reference(image)  # a malformed name is a 400, not "No such image"
    user = get(body, "User", str, "")
    if user not in ("", "root", "0", "0:0"):
        raise InvalidArgument(
            f"running as user {user!r} is not supported: commands run as root in the sandbox"
        )
    entrypoint = string_list(body, "Entrypoint")
    cmd = string_list(body, "Cmd")
    if entrypoint:
        cmd = entrypoint + (cmd or [])
    labels = get(body, "Labels", dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise InvalidArgument("invalid Labels: every key and value must be a string")
    host = get(body, "HostConfig", dict, {})
    console = get(host, "ConsoleSize", list, [], "HostConfig.")
    size = None
    if console and len(console) == 2 and all(isinstance(n, int) and n > 0 for n in console):
        size = (console[0], console[1])
    networking = get(body, "NetworkingConfig", dict, {})
    return CreateRequest(
        image=familiar(image),
        cmd=cmd,
        env=string_list(body, "Env") or [],
        workdir=get(body, "WorkingDir", str, "") or None,
        hostname=get(body, "Hostname", str, "") or None,
        tty=get(body, "Tty", bool, False),
        open_stdin=get(body, "OpenStdin", bool, False),
        auto_remove=get(host, "AutoRemove", bool, False, "HostConfig."),
        limits=parse_limits(host),
        console_size=size,
        labels=labels,
        network_mode=get(host, "NetworkMode", str, "", "HostConfig."),
        endpoints=get(networking, "EndpointsConfig", dict, {}, "NetworkingConfig.") or {},
        port_bindings=get(host, "PortBindings", dict, {}, "HostConfig.") or {},
    )


def parse_limits(host: dict[str, Any]) -> Limits:
    """HostConfig's limits, with Docker's meanings of 0 and -1.

    Raises:
        InvalidArgument: a value out of range, or an option the sandbox lacks.
    """
    for key, option in _UNSUPPORTED.items():
        if host.get(key) not in (None, 0, False, "", [], {}):
            raise InvalidArgument(
                f"HostConfig.{key} ({option}) is not supported by the sandbox: run without it"
            )
    where = "HostConfig."
    memory = get(host, "Memory", int, 0, where)
    swap = get(host, "MemorySwap", int, 0, where)
    nano = get(host, "NanoCpus", int, 0, where)
    shares = get(host, "CpuShares", int, 0, where)
    pids = get(host, "PidsLimit", int, 0, where)
    if memory < 0:
        raise InvalidArgument(f"invalid memory limit {memory}: use a positive number of bytes")
    if 0 < memory < MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if swap and not memory:
        raise InvalidArgument("MemorySwap (--memory-swap) needs Memory (--memory) as well")
    if swap > 0 and swap < memory:
        raise InvalidArgument(
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        )
    ncpu = os.cpu_count() or 1
    if nano < 0 or nano > ncpu * 10**9:
        raise InvalidArgument(
            f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        )
    if shares and not 2 <= shares <= 262144:
        raise InvalidArgument(f"invalid CpuShares {shares}: use 2 to 262144")
    return Limits(
        memory=memory or None,
        memory_swap=swap or None,
        nano_cpus=nano or None,
        cpu_shares=shares or None,
        pids=pids if pids > 0 else None,
    )


def familiar(image: str) -> str:
    """``docker.io/library/base`` as users write it (``base``); other names unchanged."""
    name = image.strip()
    for prefix in _DEFAULT_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
