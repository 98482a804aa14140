"""Networks on disk: one JSON record per network under ``<root>/networks``.

A record is the network's configuration (name, subnet, gateway, labels); what
runs (the namespace, the bridge, who has which address) lives in the engine
that runs the containers, and goes with it. Two networks always exist: `lab`,
the default one a container joins with ``--network lab``, and `none`
(loopback only), made on first use like the default image.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sandbox.errors import Conflict, InvalidArgument, NetworkNotFound, PermissionDenied
from sandbox.store import atomic
from sandbox.store.containers import check_name
from sandbox.store.locks import locked

LAB, NONE = "lab", "none"
BUILTIN = (LAB, NONE)
# Names --network gives another meaning (``bridge`` is `lab`; ``host`` and
# ``default`` are modes): a network with one of them could never be reached.
RESERVED = ("bridge", "host", "default")
LAB_SUBNET = "10.200.0.0/24"
# Subnets given to networks created without --subnet: 10.200.1.0/24, ...
AUTO_POOL = ipaddress.ip_network("10.200.0.0/16")
MIN_PREFIX, MAX_PREFIX = 8, 29  # at least 6 addresses for containers; at most 16M


@dataclass
class NetworkRecord:
    """One network's configuration.

    Attributes:
        driver: ``bridge`` (a bridge in a namespace of its own) or ``null``
            (the `none` network: loopback only).
        subnet: an IPv4 CIDR (empty for `none`).
        gateway: the bridge's own address in the subnet, the containers'
            default route.
        owner: the uid that created it (0 for the built-in ones): networks are
            shared by every user of the daemon, but only their creator (or
            root) removes them.
    """

    id: str
    name: str
    driver: str = "bridge"
    subnet: str = ""
    gateway: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    owner: int = 0

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen if self.subnet else 0


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """A subnet as the user wrote it (``10.1.2.0/24``), checked.

    Raises:
        InvalidArgument: not an IPv4 CIDR, host bits set, or a size out of range.
    """
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise InvalidArgument(
            f"invalid subnet {text!r}: {exc}; write an IPv4 network such as 10.201.0.0/24"
        ) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidArgument(f"invalid subnet {text!r}: only IPv4 networks are supported")
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise InvalidArgument(
            f"invalid subnet {text!r}: use a prefix length from /{MIN_PREFIX} to /{MAX_PREFIX}"
        )
    return net


class NetworkStore:
    """The network records under ``<root>/networks``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "networks"
        self.lock_path = root / "networks.lock"

    def path(self, nid: str) -> Path:
        return self.dir / f"{nid}.json"

    def _load(self, nid: str) -> NetworkRecord:
        try:
            return NetworkRecord(**atomic.read_json(self.path(nid)))
        except FileNotFoundError:
            raise NetworkNotFound(nid) from None

    def list(self) -> list[NetworkRecord]:
        """Every network, the built-in ones included, oldest first."""
        self.ensure_builtin()
        records = []
        for entry in os.scandir(self.dir):
            if entry.name.endswith(".json"):
                try:
                    records.append(self._load(entry.name[: -len(".json")]))
                except (NetworkNotFound, ValueError, TypeError):
                    continue
        return sorted(records, key=lambda r: (not r.builtin, r.created))

    def find(self, ref: str) -> NetworkRecord:
        """By name, full ID or unique ID prefix.

        Raises:
            NetworkNotFound: nothing matches, or the prefix is ambiguous.
        """
        ref = ref.strip()
        records = self.list()
        for match in (
            [r for r in records if r.name == ref],
            [r for r in records if r.id == ref],
            [r for r in records if ref and r.id.startswith(ref)],
        ):
            if len(match) == 1:
                return match[0]
        raise NetworkNotFound(ref)

    def ensure_builtin(self) -> None:
        """Make `lab` and `none` if they are missing (the first use of a store)."""
        if self.dir.exists() and all(self._named(n) for n in BUILTIN):
            return
        with locked(self.lock_path):
            self.dir.mkdir(parents=True, exist_ok=True)
            if not self._named(NONE):
                self._write(NetworkRecord(os.urandom(32).hex(), NONE, driver="null"))
            if not self._named(LAB):
                gateway = str(next(ipaddress.ip_network(LAB_SUBNET).hosts()))
                self._write(NetworkRecord(os.urandom(32).hex(), LAB, subnet=LAB_SUBNET,
                                          gateway=gateway))  # fmt: skip

    def _named(self, name: str) -> bool:
        return (self.dir / f".name-{name}").exists()

    def _write(self, record: NetworkRecord) -> None:
        atomic.write_json(self.path(record.id), asdict(record))
        (self.dir / f".name-{record.name}").write_text(record.id)

    def create(self, name: str, subnet: str | None = None, labels: dict[str, str] | None = None,
               owner: int = 0) -> NetworkRecord:  # fmt: skip
        """Make a bridge network; without ``subnet``, the next free 10.200.N.0/24.

        Raises:
            InvalidArgument: a bad name or subnet.
            PermissionDenied: a reserved name.
            Conflict: the name is taken, or the subnet overlaps another network's.
        """
        if name in RESERVED:
            raise PermissionDenied(
                f"{name} is a pre-defined network mode and cannot be a network's name: "
                "choose another name"
            )
        try:
            check_name(name)
        except InvalidArgument:
            raise InvalidArgument(
                f"invalid network name {name!r}: use letters, digits, _ . or -, "
                "starting with a letter or digit"
            ) from None
        wanted = parse_subnet(subnet) if subnet else None
        self.ensure_builtin()
        with locked(self.lock_path):
            if self._named(name):
                raise Conflict(
                    f"network with name {name} already exists: choose another name, "
                    f"or remove it first (`sandbox network rm {name}`)"
                )
            taken = [ipaddress.ip_network(r.subnet) for r in self.list() if r.subnet]
            if wanted is None:
                wanted = _free_subnet(taken)
            for other in self.list():
                if other.subnet and wanted.overlaps(ipaddress.ip_network(other.subnet)):
                    raise Conflict(
                        f"subnet {wanted} overlaps network {other.name}'s ({other.subnet}): "
                        "choose a subnet no other network uses"
                    )
            gateway = str(next(wanted.hosts()))
            record = NetworkRecord(os.urandom(32).hex(), name, subnet=str(wanted),
                                   gateway=gateway, labels=dict(labels or {}),
                                   owner=owner)  # fmt: skip
            self._write(record)
        return record

    def delete(self, record: NetworkRecord) -> None:
        """Forget a network (the engine has checked that nothing uses it)."""
        with locked(self.lock_path):
            self.path(record.id).unlink(missing_ok=True)
            marker = self.dir / f".name-{record.name}"
            if marker.exists() and marker.read_text() == record.id:
                marker.unlink()


def _free_subnet(taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first /24 of the automatic pool that no network overlaps."""
    for candidate in AUTO_POOL.subnets(new_prefix=24):
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise Conflict(
        f"every /24 of {AUTO_POOL} is in use: remove a network, or give --subnet"
    )  # [should never happen] with fewer than 256 networks
