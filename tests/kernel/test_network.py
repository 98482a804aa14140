"""``%network`` and ``%%container -p`` of the real kernel: servers reached by name and from here.

Everything goes through the Jupyter protocol on the installed kernel; the
networks and containers are read back from the session's daemon through
docker-py, and a published port is fetched from this process with a real HTTP
request. The module has its own kernel (conftest's ``kernel`` is per module),
so the session's network never leaks into other modules' tests; each test
sets the network it needs.
"""

from __future__ import annotations

import http.client
import re
import socket
import time

import docker
import pytest

from .conftest import Cell, Driver, magic_error, ok, own_kernel, unique

HANG_GUARD = 60.0  # seconds a server may take to answer (a hang guard, not a timing)
SESSION_LABEL = "sandbox.kernel.session"
# A tiny HTTP server with the base image's tools (OpenBSD nc, bash): one
# connection per turn of the loop, in the background, its output nowhere.
# -N ends nc as soon as the client has its answer and closes; with -q1 nc
# would linger a second, still listening, and reset the next connection.
SERVE_HELLO = (
    "while true; do printf 'HTTP/1.0 200 OK\\r\\nContent-Length: 6\\r\\n\\r\\nhello\\n' "
    "| nc -l -p 8000 -N; done >/dev/null 2>&1 &"
)
CURL_WEB = "curl -s --retry 20 --retry-connrefused --retry-delay 0 http://{name}:8000/"


def free_port() -> int:
    """A TCP port nothing listens on now, on the loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(port: int) -> bytes:
    """GET http://127.0.0.1:PORT/ from this process, until the server answers.

    The server takes a moment to listen, and its loop is deaf between two
    connections: the engine's proxy then closes ours, and we ask again.
    """
    deadline = time.monotonic() + HANG_GUARD
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_GUARD)
        try:
            conn.request("GET", "/")
            reply = conn.getresponse()
            assert reply.status == 200, reply.status
            return reply.read()
        except (ConnectionError, http.client.BadStatusLine):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            conn.close()


def addresses(cell: Cell) -> dict[str, str]:
    """``ip -br addr``'s interfaces and their IPv4 addresses."""
    found = {}
    for line in cell.stdout.splitlines():
        words = line.split()
        v4 = [w for w in words[2:] if re.fullmatch(r"\d+\.\d+\.\d+\.\d+/\d+", w)]
        found[words[0].partition("@")[0]] = v4[0] if v4 else ""
    return found


# -- %network ---------------------------------------------------------------------------


def test_help_has_network_and_publish(kernel: Driver) -> None:
    listing = ok(kernel, "%help").stdout
    assert "  %network [none|lab|NAME]" in listing
    assert "  %%container NAME [-p HOSTPORT:PORT]" in listing
    text = ok(kernel, "%help network").stdout
    assert text.startswith("%network [none|lab|NAME]\n")
    assert "who is on it" in text and "%reset keeps the network" in text
    assert "127.0.0.1:8080" in ok(kernel, "%help container").stdout


def test_cells_have_no_network_unless_asked(kernel: Driver) -> None:
    ok(kernel, "%network none")
    assert ok(kernel, "%network").stdout.startswith("network: none: each cell has its own")
    assert addresses(ok(kernel, "ip -br addr")) == {"lo": "127.0.0.1/8"}

    said = ok(kernel, "%network lab").stdout
    assert said.startswith("the next cells join network lab (10.200.0.0/24)"), said
    on_lab = addresses(ok(kernel, "ip -br addr"))
    assert set(on_lab) == {"lo", "eth0"}, on_lab
    assert on_lab["eth0"].startswith("10.200.0.") and on_lab["eth0"].endswith("/24"), on_lab
    ok(kernel, "%network none")
    assert set(addresses(ok(kernel, "ip -br addr"))) == {"lo"}


def test_unknown_network_leaves_the_setting(kernel: Driver) -> None:
    ok(kernel, "%network lab")
    message = magic_error(kernel, "%network nosuch")
    assert message.startswith("No such network: nosuch (see `sandbox network ls`"), message
    assert message.endswith("the cells stay on lab"), message
    assert ok(kernel, "%network").stdout.startswith("network: lab (subnet 10.200.0.0/24")
    assert "never shares the host's network" in magic_error(kernel, "%network host")
    assert "usage: %network" in magic_error(kernel, "%network lab none")
    # A bad magic line stops the cell before its shell code.
    cell = kernel.run("%network nosuch\necho never")
    assert cell.status == "error" and "never" not in cell.stdout
    ok(kernel, "%network none")


def test_reset_keeps_the_network(kernel: Driver) -> None:
    ok(kernel, "%network lab")
    said = ok(kernel, "%reset").stdout
    assert "a fresh shell (still on network lab: %network none leaves it)" in said, said
    assert ok(kernel, "%network").stdout.startswith("network: lab ")
    ok(kernel, "%network none")
    assert ok(kernel, "%reset").stdout.endswith("a fresh shell\n")


def test_a_cell_reaches_a_server_by_name(kernel: Driver, api: docker.DockerClient) -> None:
    web = unique("web")
    ok(kernel, "%network lab")
    try:
        cell = ok(kernel, f"%%container {web}\n{SERVE_HELLO}\necho started")
        assert f"[started the container {web} on network lab: it runs until %rm {web}]" in (
            cell.stderr
        )
        assert cell.stdout == "started\n" and not cell.displays, cell.messages
        settings = api.containers.get(web).attrs["NetworkSettings"]["Networks"]
        assert list(settings) == ["lab"], settings
        address = settings["lab"]["IPAddress"]

        # The background server outlived its cell; a plain cell finds it by name.
        assert ok(kernel, CURL_WEB.format(name=web)).stdout == "hello\n"
        short_id = api.containers.get(web).id[:12]
        assert ok(kernel, f"grep -w {web} /etc/hosts").stdout.split() == [address, web, short_id]

        shown = ok(kernel, "%network").stdout.splitlines()
        assert shown[0] == "network: lab (subnet 10.200.0.0/24, gateway 10.200.0.1)", shown
        members = [line.split() for line in shown[shown.index("On it now:") + 1 :]]
        assert [web, address] in members, shown

        said = ok(kernel, "%network none").stdout
        assert f"%%container {web} stays on lab (it exists already): %rm {web}" in said, said
        cell = kernel.run(f"curl -sS http://{web}:8000/")
        assert cell.status == "error", cell.messages
        assert f"Could not resolve host: {web}" in cell.stderr, cell.stderr

        # The server's container keeps its network, and says so.
        cell = ok(kernel, f"%%container {web}\n{CURL_WEB.format(name='localhost')}")
        assert cell.stdout == "hello\n"
        assert f"[{web} stays on network lab, the one it was made on (the session's is none" in (
            cell.stderr
        )
    finally:
        assert ok(kernel, f"%rm {web}").stdout == f"removed {web}\n"
    with pytest.raises(docker.errors.NotFound):
        api.containers.get(web)


def test_a_named_network(kernel: Driver, api: docker.DockerClient) -> None:
    name = unique("class")
    network = api.networks.create(name)
    try:
        subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
        said = ok(kernel, f"%network {name}").stdout
        assert said.startswith(f"the next cells join network {name} ({subnet})"), said
        eth0 = addresses(ok(kernel, "ip -br addr"))["eth0"]
        assert eth0.rpartition(".")[0] == subnet.rpartition(".")[0], (eth0, subnet)
        assert ok(kernel, "%network").stdout.startswith(f"network: {name} (subnet {subnet}")
    finally:
        network.remove()
    # Removed under the session: the next cell says what to do.
    cell = kernel.run("true")
    assert cell.status == "error", cell.messages
    assert f"the session's network {name} no longer exists" in cell.reply["evalue"]
    assert "%network none" in cell.reply["evalue"]
    assert ok(kernel, "%network").stdout == f"{cell.reply['evalue']}\n"  # the same words
    ok(kernel, "%network none")
    ok(kernel, "true")


# -- %%container NAME -p ----------------------------------------------------------------


def test_published_port_opens_from_this_machine(kernel: Driver, api: docker.DockerClient) -> None:
    web, port = unique("pub"), free_port()
    ok(kernel, "%network none")  # a published port needs no network
    try:
        cell = ok(kernel, f"%%container {web} -p 127.0.0.1:{port}:8000\n{SERVE_HELLO}\necho up")
        assert cell.stdout == "up\n"
        (plain,) = cell.shown("text/plain")
        (link,) = cell.shown("text/html")
        url = f"http://127.0.0.1:{port}/"
        assert plain == f"{web}: port 8000 is published at {url}"
        assert f'<a href="{url}" target="_blank"' in link and f">{url}</a>" in link
        # The link comes after the cell's output.
        kinds = [m["msg_type"] for m in cell.messages]
        assert kinds.index("display_data") > max(
            i for i, m in enumerate(cell.messages) if m["msg_type"] == "stream"
        ), kinds  # fmt: skip

        assert fetch(port) == b"hello\n"
        bindings = api.containers.get(web).attrs["HostConfig"]["PortBindings"]
        assert bindings == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}

        # Later cells in it: no link again; a new -p is not applied, and the cell says so.
        cell = ok(kernel, f"%%container {web}\necho again")
        assert not cell.displays and "[started" not in cell.stderr
        cell = ok(kernel, f"%%container {web} -p 8001\necho again")
        assert f"[{web} exists already, and -p applies only when it is made: %rm {web}" in (
            cell.stderr
        )
    finally:
        ok(kernel, f"%rm {web}")
    with pytest.raises(ConnectionError):
        socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD).close()


def test_publish_on_a_free_port(kernel: Driver) -> None:
    web = unique("pub")
    try:
        cell = ok(kernel, f"%%container -p 8000 {web}\n{SERVE_HELLO}")
        (plain,) = cell.shown("text/plain")
        found = re.fullmatch(rf"{web}: port 8000 is published at http://127\.0\.0\.1:(\d+)/", plain)
        assert found, plain
        assert fetch(int(found.group(1))) == b"hello\n"
    finally:
        ok(kernel, f"%rm {web}")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("%%container", "give one container name (usage: %%container NAME [-p HOSTPORT:PORT]"),
        ("%%container a b", "give one container name, not 2"),
        ("%%container a --volume x", "unknown option --volume: the only one is -p"),
        ("%%container a -p", "-p needs a port"),
        ("%%container a -p 1:2:3:4", "-p 1:2:3:4: write -p [127.0.0.1:]HOSTPORT:PORT"),
        ("%%container a -p 8080:", "-p 8080:: write -p [127.0.0.1:]HOSTPORT:PORT"),
    ],
)
def test_bad_container_lines(kernel: Driver, line: str, words: str) -> None:
    """Lines that say no one container or no PortBindings: refused before the daemon is asked."""
    message = magic_error(kernel, f"{line}\necho never")
    assert message.startswith("%%container: "), message
    assert words in message and "(usage: %%container NAME" in message, message


@pytest.mark.parametrize(
    ("publish", "words"),
    [
        ("web", "invalid port 'web'"),
        ("80:99999", "invalid port '99999'"),
        ("8000-8010:80", "ranges are not supported"),
        ("0.0.0.0:8080:80", "loopback only, so only this machine reaches them; "
                            "write -p 127.0.0.1:8080:80"),
        ("8080:80/udp", "only TCP ports can be published"),
    ],
)  # fmt: skip
def test_bindings_the_daemon_refuses(kernel: Driver, api: docker.DockerClient, publish: str,
                                     words: str) -> None:  # fmt: skip
    """The daemon's words, once, with the magic's name; the container is not made."""
    web = unique("pub")
    message = magic_error(kernel, f"%%container {web} -p {publish}\necho never")
    assert message.startswith(f"%%container {web}: "), message
    assert words in message and "\n" not in message, message
    with pytest.raises(docker.errors.NotFound):
        api.containers.get(web)


def test_taken_host_port_leaves_no_container(kernel: Driver, api: docker.DockerClient) -> None:
    web = unique("pub")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = magic_error(kernel, f"%%container {web} -p {port}:8000\necho never")
    assert message.startswith(f"%%container {web}: cannot publish port 8000: "
                              f"127.0.0.1:{port} is already in use"), message  # fmt: skip
    with pytest.raises(docker.errors.NotFound):
        api.containers.get(web)


# -- the end ------------------------------------------------------------------------------


def test_shutdown_leaves_no_server_behind(api: docker.DockerClient) -> None:
    """A notebook that never %rm's its server: shutdown removes it, and its port closes."""
    web, port = unique("web"), free_port()
    with own_kernel() as driver:
        ok(driver, "%network lab")
        ok(driver, f"%%container {web} -p {port}:8000\n{SERVE_HELLO}")
        assert ok(driver, CURL_WEB.format(name=web)).stdout == "hello\n"
        sid = api.containers.get(web).labels[SESSION_LABEL]
        assert fetch(port) == b"hello\n"
    left = [c.name for c in api.containers.list(all=True)
            if (c.labels or {}).get(SESSION_LABEL) == sid]  # fmt: skip
    assert not left, left
    with pytest.raises(ConnectionError):
        socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD).close()
