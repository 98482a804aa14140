"""The network routes and a container's networking through docker-py (the real ``docker``).

Networks made here get subnets under 10.201.0.0/16 (the automatic ones are
10.200.N.0/24), and every network and container a test makes is registered
with the `made` fixture first, so it is removed after the test even when the
test fails. The ownership test runs its requests as ordinary users made for
it (the fixtures of test_users.py, whose daemon this module shares).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import Daemon
from .test_users import User, daemon, sandbox_group, users  # noqa: F401

docker = pytest.importorskip("docker", reason="docker-py is not installed (pip install docker)")

pytestmark = pytest.mark.root

LAB = ipaddress.ip_network("10.200.0.0/24")
DEADLINE = 60.0  # seconds a step may take before the test gives up (a hang guard only)
# A server that answers each connection with one line, for as long as it runs.
ANSWER = ["sh", "-c", "while :; do echo hello | nc -l -N 8000; done"]


class Made:
    """Networks and containers a test makes, removed at its end (containers first)."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.networks: list[str] = []
        self.containers: list[str] = []

    def name(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def network(self, prefix: str, **kwargs: Any) -> Any:
        """``networks.create`` under a unique name (registered before the request)."""
        name = self.name(prefix)
        self.networks.append(name)
        return self.client.networks.create(name, **kwargs)

    def run(self, cmd: list[str], **kwargs: Any) -> Any:
        """``containers.run(detach=True)`` under a unique name, unless one is given."""
        kwargs.setdefault("name", self.name("c"))
        self.containers.append(kwargs["name"])
        return self.client.containers.run("base", cmd, detach=True, **kwargs)

    def cleanup(self) -> None:
        for name in self.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(name).remove(force=True)
        for name in self.networks:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.networks.get(name).remove()


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[docker.DockerClient]:  # noqa: F811
    c = docker.DockerClient(base_url=daemon.url, timeout=60)
    yield c
    c.close()


@pytest.fixture
def made(client: docker.DockerClient) -> Iterator[Made]:
    things = Made(client)
    try:
        yield things
    finally:
        things.cleanup()


def ipam(subnet: str, gateway: str | None = None) -> Any:
    pool = docker.types.IPAMPool(subnet=subnet, gateway=gateway)
    return docker.types.IPAMConfig(pool_configs=[pool])


def api_error(call: Any, *args: Any, **kwargs: Any) -> Any:
    """The APIError a docker-py call raises (fails the test if it succeeds)."""
    with pytest.raises(docker.errors.APIError) as caught:
        call(*args, **kwargs)
    return caught.value


def network_names(client: docker.DockerClient) -> set[str]:
    return {n.name for n in client.networks.list()}


def interfaces(container: Any) -> dict[str, str]:
    """``{ifname: address/prefix}`` from ``ip -br addr`` in the container."""
    code, out = container.exec_run(["ip", "-br", "-4", "addr"])
    assert code == 0, out
    found = {}
    for line in out.decode().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            found[fields[0].partition("@")[0]] = fields[2]
    return found


def fetch(port: int) -> bytes:
    """What the server behind 127.0.0.1:``port`` says, once it listens (retried until then).

    The proxy accepts at once; until the server inside listens, it closes the
    connection with nothing said.
    """
    end = time.monotonic() + DEADLINE
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as conn:
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
        if data or time.monotonic() > end:
            return data
        time.sleep(0.05)


# -- the routes ------------------------------------------------------------------------


def test_create_list_get_and_remove(client: docker.DockerClient, made: Made) -> None:
    network = made.network("py-net", labels={"course": "net"})
    assert network.attrs["Driver"] == "bridge"
    config = network.attrs["IPAM"]["Config"][0]
    subnet = ipaddress.ip_network(config["Subnet"])
    assert subnet.subnet_of(ipaddress.ip_network("10.200.0.0/16")) and subnet != LAB
    assert config["Gateway"] == str(next(subnet.hosts()))
    assert network.attrs["Labels"] == {"course": "net"}

    for ref in (network.name, network.id, network.id[:12]):
        assert client.networks.get(ref).id == network.id
    assert {"lab", "none", network.name} <= network_names(client)
    assert [n.id for n in client.networks.list(names=[network.name])] == [network.id]
    assert [n.id for n in client.networks.list(filters={"label": "course=net"})] == [network.id]
    assert client.networks.list(filters={"label": "course=other"}) == []
    assert {n.name for n in client.networks.list(filters={"type": "custom"})} == {network.name}
    assert {n.name for n in client.networks.list(filters={"driver": "null"})} == {"none"}
    bad = api_error(client.networks.list, filters={"colour": "red"})
    assert bad.status_code == 400 and "invalid filter 'colour'" in bad.explanation

    network.remove()
    with pytest.raises(docker.errors.NotFound) as caught:
        client.networks.get(network.name)
    assert f"No such network: {network.name}" in caught.value.explanation


def test_create_with_a_subnet_and_its_gateway(made: Made) -> None:
    network = made.network("py-ipam", ipam=ipam("10.201.7.0/24", "10.201.7.1"))
    assert network.attrs["IPAM"]["Config"] == [{"Subnet": "10.201.7.0/24",
                                                 "Gateway": "10.201.7.1"}]  # fmt: skip


def test_a_taken_name_or_subnet_is_a_conflict(client: docker.DockerClient, made: Made) -> None:
    network = made.network("py-dup", ipam=ipam("10.201.8.0/24"))
    taken = api_error(client.networks.create, network.name)
    assert taken.status_code == 409
    assert f"network with name {network.name} already exists" in taken.explanation
    overlapping = made.name("py-overlap")
    clash = api_error(client.networks.create, overlapping, ipam=ipam("10.201.8.128/25"))
    assert clash.status_code == 409
    assert f"overlaps network {network.name}'s (10.201.8.0/24)" in clash.explanation
    assert overlapping not in network_names(client)  # nothing was left of it


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"driver": "overlay"}, 'network driver "overlay" is not supported'),
        ({"ipam": ipam("10.201.9.7/24")}, "invalid subnet '10.201.9.7/24'"),
        ({"ipam": ipam("fd00::/64")}, "only IPv4 networks are supported"),
        ({"ipam": ipam("10.201.9.0/30")}, "use a prefix length from /8 to /29"),
        ({"ipam": ipam("not-a-subnet")}, "invalid subnet 'not-a-subnet'"),
        ({"ipam": ipam("10.201.9.0/24", "10.201.9.9")}, "its subnet's first address (10.201.9.1)"),
        ({"enable_ipv6": True}, "EnableIPv6 is not supported"),
        ({"options": {"mtu": "9000"}}, "Options is not supported"),
    ],
)
def test_bad_create_is_400_and_leaves_nothing(
    client: docker.DockerClient, made: Made, kwargs: dict[str, Any], message: str
) -> None:
    before = network_names(client)
    name = made.name("py-bad")
    made.networks.append(name)
    refused = api_error(client.networks.create, name, **kwargs)
    assert refused.status_code == 400
    assert message in refused.explanation
    assert network_names(client) == before


def test_builtin_networks_cannot_be_removed(client: docker.DockerClient) -> None:
    for name in ("lab", "none"):
        refused = api_error(client.networks.get(name).remove)
        assert refused.status_code == 403
        assert f"{name} is a pre-defined network and cannot be removed" in refused.explanation
    assert {"lab", "none"} <= network_names(client)


def test_a_network_in_use_is_removed_only_once_free(made: Made) -> None:
    network = made.network("py-busy")
    container = made.run(["sleep", "600"], network=network.name)
    refused = api_error(network.remove)
    assert refused.status_code == 403
    assert "has active endpoints" in refused.explanation
    assert container.name in refused.explanation
    container.kill()
    container.wait()
    network.remove()  # Docker's rule: only running containers hold a network


def test_prune_keeps_networks_containers_are_on(client: docker.DockerClient, made: Made) -> None:
    kept = made.network("py-kept")
    pruned = made.network("py-pruned", labels={"prune": "yes"})
    unlabelled = made.network("py-unlabelled")
    stopped = made.run(["true"], network=kept.name)  # configured on it, not running
    stopped.wait()
    reply = client.networks.prune(filters={"label": "prune=yes"})
    assert reply["NetworksDeleted"] == [pruned.name]
    reply = client.networks.prune()
    assert reply["NetworksDeleted"] == [unlabelled.name]
    assert kept.name in network_names(client)
    assert {"lab", "none"} <= network_names(client)


def test_create_and_destroy_are_events(client: docker.DockerClient, made: Made) -> None:
    since = time.time()
    network = made.network("py-events")
    network.remove()
    seen = client.events(since=since, until=time.time(), filters={"type": "network"},
                         decode=True)  # fmt: skip
    actions = [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in seen]
    assert actions == [("create", network.name), ("destroy", network.name)]


# -- containers on networks ---------------------------------------------------------------


def test_run_on_lab_gets_an_address_of_its_subnet(client: docker.DockerClient,
                                                  made: Made) -> None:  # fmt: skip
    container = made.run(["sleep", "600"], network="lab")
    container.reload()
    settings = container.attrs["NetworkSettings"]["Networks"]["lab"]
    address = ipaddress.ip_address(settings["IPAddress"])
    assert address in LAB and address != ipaddress.ip_address("10.200.0.1")
    assert settings["Gateway"] == "10.200.0.1"
    assert settings["IPPrefixLen"] == 24
    assert settings["MacAddress"].startswith("02:42:")
    assert container.attrs["HostConfig"]["NetworkMode"] == "lab"
    assert interfaces(container)["eth0"] == f"{address}/24"

    on_lab = client.networks.get("lab").attrs["Containers"]
    assert on_lab[container.id]["Name"] == container.name
    assert on_lab[container.id]["IPv4Address"] == f"{address}/24"
    assert on_lab[container.id]["MacAddress"] == settings["MacAddress"]
    container.kill()
    container.wait()
    assert container.id not in client.networks.get("lab").attrs["Containers"]


def test_connect_and_disconnect_a_running_container(client: docker.DockerClient,
                                                    made: Made) -> None:  # fmt: skip
    network = made.network("py-conn", ipam=ipam("10.201.11.0/24"))
    container = made.run(["sleep", "600"], network="lab")
    peer = made.run(["sleep", "600"], network=network.name)
    network.connect(container, aliases=["cache"], ipv4_address="10.201.11.50")
    assert interfaces(container)["eth1"] == "10.201.11.50/24"
    code, out = peer.exec_run(["ping", "-c1", "-W5", "cache"])
    assert code == 0 and b"10.201.11.50" in out, out
    container.reload()
    settings = container.attrs["NetworkSettings"]["Networks"]
    assert set(settings) == {"lab", network.name}
    assert settings[network.name]["IPAddress"] == "10.201.11.50"
    assert settings[network.name]["Aliases"] == ["cache"]
    network.reload()
    assert set(network.attrs["Containers"]) == {container.id, peer.id}

    again = api_error(network.connect, container)
    assert again.status_code == 403 and "already connected" in again.explanation

    network.disconnect(container)
    assert set(interfaces(container)) == {"lo", "eth0"}
    code, out = peer.exec_run(["cat", "/etc/hosts"])
    assert b"cache" not in out, out
    gone = api_error(network.disconnect, container)
    assert gone.status_code == 409 and "is not connected" in gone.explanation


def test_connect_refuses_none_and_unknown_containers(client: docker.DockerClient,
                                                     made: Made) -> None:  # fmt: skip
    container = made.run(["sleep", "600"])
    refused = api_error(client.networks.get("none").connect, container)
    assert refused.status_code == 400 and "cannot be connected to `none`" in refused.explanation
    with pytest.raises(docker.errors.NotFound) as caught:
        client.networks.get("lab").connect("no-such-container")
    assert "No such container: no-such-container" in caught.value.explanation
    with pytest.raises(docker.errors.NotFound) as caught:
        client.api.connect_container_to_network(container.id, "no-such-net")
    assert "No such network: no-such-net" in caught.value.explanation


def test_a_published_port_answers_on_the_loopback(client: docker.DockerClient,
                                                  made: Made) -> None:  # fmt: skip
    container = made.run(ANSWER, ports={"8000/tcp": ("127.0.0.1", None)})
    container.reload()
    bound = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"]
    assert len(bound) == 1 and bound[0]["HostIp"] == "127.0.0.1"
    port = int(bound[0]["HostPort"])
    assert port > 0
    # The proxy serves every connection. One that comes while the last nc is
    # exiting is queued on its listening socket and reset: the proxy must
    # close it (fetch then tries again), not leave it open for ever.
    for _ in range(30):  # the race is narrow: this hits it most times
        assert fetch(port) == b"hello\n"
    summary = client.api.containers(filters={"id": container.id})[0]
    assert summary["Ports"] == [{"IP": "127.0.0.1", "PrivatePort": 8000, "PublicPort": port,
                                 "Type": "tcp"}]  # fmt: skip


def test_a_taken_host_port_fails_the_start(client: docker.DockerClient, made: Made) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        name = made.name("py-taken")
        refused = api_error(made.run, ["sleep", "600"], name=name,
                            ports={"8000/tcp": ("127.0.0.1", port)})  # fmt: skip
    assert refused.status_code == 409
    assert f"127.0.0.1:{port} is already in use" in refused.explanation
    assert "choose another host port" in refused.explanation
    assert client.containers.get(name).status != "running"


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"network_mode": "host"}, 400, "network mode 'host' is not supported"),
        ({"network_mode": "container:x"}, 400, "is not supported"),
        ({"network": "no-such-net"}, 404, "No such network: no-such-net"),
        ({"ports": {"8000/tcp": ("0.0.0.0", 8080)}}, 400, "on the host's loopback only"),
        ({"ports": {"8000/udp": ("127.0.0.1", None)}}, 400, "only TCP ports can be published"),
        ({"ports": {"8000/tcp": ("127.0.0.1", 70000)}}, 400, "invalid port '70000'"),
    ],
)
def test_bad_networking_is_refused_at_create(client: docker.DockerClient, kwargs: dict[str, Any],
                                             status: int, message: str) -> None:  # fmt: skip
    before = {c.id for c in client.containers.list(all=True)}
    refused = api_error(client.containers.create, "base", "true", **kwargs)
    assert refused.status_code == status
    assert message in refused.explanation
    assert {c.id for c in client.containers.list(all=True)} == before


# -- users --------------------------------------------------------------------------------


def test_networks_are_shared_but_removed_by_their_maker(
    client: docker.DockerClient,
    made: Made,
    users: dict[str, User],  # noqa: F811
) -> None:
    alice, bob = users["alice"], users["bob"]
    name = made.name("alice-net")
    made.networks.append(name)
    reply = alice.request("POST", "/v1.44/networks/create", {"Name": name})
    assert reply["status"] == 201, reply
    assert name in {n["Name"] for n in bob.request("GET", "/v1.44/networks")["json"]}

    refused = bob.request("DELETE", f"/v1.44/networks/{name}")
    assert refused["status"] == 403
    assert "another user made it" in refused["json"]["message"]
    assert bob.request("POST", "/v1.44/networks/prune")["json"]["NetworksDeleted"] == []

    cid = alice.create(["sleep", "600"], name=made.name("alice-c"))
    made.containers.append(cid)
    reply = alice.request("POST", f"/v1.44/networks/{name}/connect", {"Container": cid})
    assert reply["status"] == 200, reply
    assert alice.request("POST", f"/v1.44/containers/{cid}/start")["status"] == 204
    # bob cannot use alice's container, nor see it on the network; root sees it.
    reply = bob.request("POST", "/v1.44/networks/lab/connect", {"Container": cid})
    assert reply["status"] == 404
    assert bob.request("GET", f"/v1.44/networks/{name}")["json"]["Containers"] == {}
    assert set(alice.request("GET", f"/v1.44/networks/{name}")["json"]["Containers"]) == {cid}
    assert set(client.networks.get(name).attrs["Containers"]) == {cid}

    busy = alice.request("DELETE", f"/v1.44/networks/{name}")
    assert busy["status"] == 403 and "has active endpoints" in busy["json"]["message"]
    assert alice.request("POST", f"/v1.44/containers/{cid}/kill")["status"] == 204
    alice.request("POST", f"/v1.44/containers/{cid}/wait")
    assert alice.request("DELETE", f"/v1.44/containers/{cid}")["status"] == 204
    assert alice.request("DELETE", f"/v1.44/networks/{name}")["status"] == 204


def test_only_root_publishes_on_privileged_host_ports(
    client: docker.DockerClient,
    made: Made,
    users: dict[str, User],  # noqa: F811
) -> None:
    bindings = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "80"}]}
    body = {"Image": "base", "Cmd": ["true"], "HostConfig": {"PortBindings": bindings}}
    before = users["alice"].container_names()
    refused = users["alice"].request("POST", "/v1.44/containers/create", body)
    assert refused["status"] == 403
    assert "ports below 1024 are root's" in refused["json"]["message"]
    assert users["alice"].container_names() == before
    # Root may (the container is only made, never started: nothing listens on 80).
    name = made.name("root-80")
    made.containers.append(name)
    reply = client.api.create_container("base", ["true"], name=name,
                                        host_config=client.api.create_host_config(
                                            port_bindings={80: ("127.0.0.1", 80)}))  # fmt: skip
    assert reply["Id"]


@pytest.mark.parametrize("name", ["bridge", "host", "default"])
def test_reserved_names_are_refused(client: docker.DockerClient, name: str) -> None:
    refused = api_error(lambda: client.networks.create(name))
    assert refused.status_code == 403
    assert "pre-defined network mode" in refused.explanation
